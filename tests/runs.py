"""Running the CLI in-process, as the tests do."""

from __future__ import annotations

from pathlib import Path

from lit_activations.cli import ActivationCLI, cli_main

REPO = Path(__file__).resolve().parent.parent
# The configs a fit takes; evaluate.yaml holds the defaults of validate, test and predict.
CONFIGS = sorted(path for path in (REPO / "configs").rglob("*.yaml") if path.name != "evaluate.yaml")

# No progress bar or model summary: faster, and the test output stays readable.
QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")


def fit(*args: str) -> ActivationCLI:
    """``python -m lit_activations fit ARGS`` in-process, quietly; returns the CLI (trainer, model, data)."""
    return cli_main(["fit", *QUIET, *args])
