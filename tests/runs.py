"""Running the CLI in-process and reading back what a run logged."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_activations.cli import ActivationCLI, cli_main

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

# No progress bar or model summary: faster, and the test output stays readable.
QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")


def fit(*args: str) -> ActivationCLI:
    """``python -m lit_activations fit ARGS`` in-process, quietly; returns the CLI (trainer, model, data)."""
    return cli_main(["fit", *QUIET, *args])


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run, read back with TensorBoard's own reader: tag -> [(step, value), ...]."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
