"""Every test runs in its own temporary directory, so the default ``logs/`` lands there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process CLI runs pass their own ``args``; pytest's own argv must not look like CLI input."""
    monkeypatch.setattr(sys, "argv", ["lit_activations"])
