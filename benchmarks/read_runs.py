"""Reading a study's runs back for its table and figure: ``lit_activations.events.read_scalars`` (framing in Python,
CRCs in C, TensorBoard's protobuf) in the study's own process, against the way ``compare`` read them before:
TensorBoard's ``EventAccumulator`` in a pool of processes forked from a server that had imported it, as
``report.read_runs`` did; its CRCs in TensorBoard's pure Python ("old"), and in C as ``lit_activations.event_files``
makes them in any process that has imported ``lit_activations.logger`` ("old, C CRC"). All on the same 30 runs,
alternated over ``--repeats`` (machines here are noisy); all must give equal scalars.

The runs: those under ``--runs DIR`` (every directory holding an event file); where it holds none, they are fitted
there first: the tutorial study as one fit of 30 members (6 activations x 5 seeds, ``configs/tutorial.yaml``,
``--epochs`` epochs; about a minute). Without ``--runs``, in a temporary directory removed afterwards.

Target: the 30 tutorial runs read in at most 1 s, wall.

Run:  python benchmarks/read_runs.py [--runs DIR] [--epochs 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ACTIVATIONS = ("sigmoid", "tanh", "relu", "relu6", "leaky_relu", "identity")
SEEDS = (0, 1, 2, 3, 4)
TARGET_S = 1.0


def fit_runs(directory: Path, epochs: int) -> None:
    """The tutorial study's 30 runs, as one fit of 30 members, under ``directory``."""
    command = [sys.executable, "-m", "lit_activations", "fit", "--config", str(REPO / "configs" / "tutorial.yaml"),
               f"--members.activations=[{','.join(ACTIVATIONS)}]", f"--members.seeds=[{','.join(map(str, SEEDS))}]",
               f"--trainer.max_epochs={epochs}", f"--trainer.logger.init_args.save_dir={directory}",
               "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip
    print(f"fitting the 30 runs ({epochs} epochs) under {directory} ...", flush=True)
    subprocess.run(command, cwd=directory, check=True, stdout=subprocess.DEVNULL)


def run_dirs(directory: Path) -> list[Path]:
    return sorted({path.parent for path in directory.rglob("events.out.tfevents.*")})


def accumulated(run: Path) -> dict[str, list[tuple[int, float]]]:
    """The old ``read_scalars``: TensorBoard's ``EventAccumulator``, keeping every scalar and one of the rest."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    guidance = {"scalars": 0, "images": 1, "histograms": 1, "compressedHistograms": 1, "tensors": 1, "audio": 1}
    events = EventAccumulator(str(run), size_guidance=guidance)
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def accumulated_c_crc(run: Path) -> dict[str, list[tuple[int, float]]]:
    """``accumulated``, with TensorBoard's reader checking its CRCs in C (``use_fast_writing``)."""
    from lit_activations.event_files import use_fast_writing

    use_fast_writing()
    return accumulated(run)


def old_way(runs: list[Path], context: multiprocessing.context.BaseContext, c_crc: bool) -> tuple[float, list]:
    """``report.read_runs`` before: a pool over every core, forked from a server that has TensorBoard imported."""
    start = time.perf_counter()
    with context.Pool(min(os.cpu_count() or 1, len(runs))) as pool:
        scalars = pool.map(accumulated_c_crc if c_crc else accumulated, runs)
    return time.perf_counter() - start, scalars


def new_way(runs: list[Path]) -> tuple[float, list]:
    """``report.read_runs`` now: ``read_scalars`` run after run, in this process."""
    from lit_activations.events import read_scalars

    start = time.perf_counter()
    scalars = [read_scalars(run) for run in runs]
    return time.perf_counter() - start, scalars


def comparable(scalars: dict[str, list[tuple[int, float]]]) -> list:
    """Tags in order, points with a NaN equal to a NaN."""
    return [(tag, [(s, "nan" if math.isnan(v) else v) for s, v in points]) for tag, points in scalars.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, help="the runs to read (fitted there first if it holds none)")
    parser.add_argument("--epochs", type=int, default=300, help="epochs of the runs fitted here (default 300)")
    parser.add_argument("--repeats", type=int, default=3, help="times each way reads them all (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="read_runs_") as scratch:
        directory = args.runs or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        if not run_dirs(directory):
            fit_runs(directory.resolve(), args.epochs)
        runs = run_dirs(directory)
        size = sum(p.stat().st_size for run in runs for p in run.glob("events.out.tfevents.*"))
        print(f"{len(runs)} runs under {directory}, {size / 1e6:.1f} MB of event files", flush=True)

        import numpy  # noqa: F401  (the study's process has it already: the report's tables need it)

        start = time.perf_counter()
        import lit_activations.events  # noqa: F401

        imported = time.perf_counter() - start
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            preload = ["tensorboard.backend.event_processing.event_accumulator", "lit_activations.event_files"]
            context.set_forkserver_preload(preload)
            multiprocessing.forkserver.ensure_running()  # the study had started it long before it read the runs
        else:
            context = multiprocessing.get_context("spawn")
        ways = ("old", "old, C CRC", "new")
        times: dict[str, list[float]] = {way: [] for way in ways}
        results: dict[str, list] = {}
        for repeat in range(args.repeats):
            for way in ways if repeat % 2 == 0 else ways[::-1]:
                if way == "new":
                    seconds, results[way] = new_way(runs)
                else:
                    seconds, results[way] = old_way(runs, context, c_crc=way == "old, C CRC")
                times[way].append(seconds)
                print(f"  {way}: {seconds:.3f} s", flush=True)

    new = results["new"]
    equal = all(comparable(a) == comparable(b) for way in ways[:-1] for a, b in zip(results[way], new, strict=True))
    points = sum(len(p) for scalars in new for p in scalars.values())
    old_s, old_c_s, new_s = (statistics.median(times[way]) for way in ways)
    pool = min(os.cpu_count() or 1, len(runs))
    print(f"old (EventAccumulator, pool of {pool}): {old_s:.3f} s; old with C CRC: {old_c_s:.3f} s;"
          f" new (read_scalars, this process): {new_s:.3f} s (+ {imported * 1e3:.0f} ms to import it);"
          f" medians of {args.repeats}; old/new = {old_s / new_s:.1f}x, old C CRC/new = {old_c_s / new_s:.1f}x",
          flush=True)  # fmt: skip
    print(f"scalars equal: {equal} ({len(runs)} runs, {points} points)", flush=True)
    verdict = "met" if new_s + imported <= TARGET_S else "NOT met"
    print(f"target <= {TARGET_S:.1f} s for the {len(runs)} runs: {verdict} ({new_s + imported:.3f} s)", flush=True)
    if not equal:
        sys.exit(1)


if __name__ == "__main__":
    main()
