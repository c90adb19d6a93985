"""Running the CLI in-process, as the tests do."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_activations.cli import ActivationCLI, cli_main

REPO = Path(__file__).resolve().parent.parent
# The configs a fit takes; evaluate.yaml holds the defaults of validate, test and predict.
CONFIGS = sorted(path for path in (REPO / "configs").rglob("*.yaml") if path.name != "evaluate.yaml")

# No progress bar or model summary: faster, and the test output stays readable.
QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")


def fit(*args: str) -> ActivationCLI:
    """``python -m lit_activations fit ARGS`` in-process, quietly; returns the CLI (trainer, model, data)."""
    return cli_main(["fit", *QUIET, *args])


def assert_same_curves(ours: dict[str, list[tuple[int, float]]], theirs: dict[str, list[tuple[int, float]]]) -> None:
    """The same tags at the same steps with the same values, but ``final/*`` (a resumed run adds a point at each
    fit's end). The theory's tags are float64 sums of hundreds of terms, some of which cancel to zero (the mean of
    tanh): their last bits depend on how torch's reductions run in each process, so they match to 1e-12."""
    ours = {tag: points for tag, points in ours.items() if not tag.startswith("final/")}
    theirs = {tag: points for tag, points in theirs.items() if not tag.startswith("final/")}
    assert sorted(ours) == sorted(theirs)
    for tag, points in ours.items():
        assert [step for step, _ in points] == [step for step, _ in theirs[tag]], tag
        values, expected = [value for _, value in points], [value for _, value in theirs[tag]]
        if tag.startswith("theory/"):
            assert values == pytest.approx(expected, rel=1e-9, abs=1e-12), tag
        else:
            assert values == expected, tag
