"""Every test runs in its own temporary directory, so the default ``logs/`` lands there."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import torch

# Each pytest worker shares the cores with the others: torch's default of a thread per core in every worker made
# small tensor ops wait on each other (tests/test_theory.py took 90-235 s instead of 11 s on 2 cores).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process CLI runs pass their own ``args``; pytest's own argv must not look like CLI input."""
    monkeypatch.setattr(sys, "argv", ["lit_activations"])


# A suite started in the background of a non-interactive shell (`cmd &` in a script, nohup) inherits SIGINT ignored,
# as POSIX has it, and so would every process it starts: the tests of Ctrl-C need it delivered, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
