"""Many members in one fit: the speed targets, each measured side by side in one run (machines here are noisy).

Parts (``--part``, default all but ``gpu``):

- ``step``: time per training step of a tutorial fit of 30 members (6 activations x 5 seeds) against a
  one-member fit, monitoring on, alternated over ``--repeats``. Target: at most 3x.
- ``study``: the tutorial study (6 activations x 5 seeds, ``configs/tutorial.yaml``) as ``compare`` (vectorised,
  the default) against thirty hand-written tutorial loops run two at a time (plain PyTorch, one process per core,
  the tutorial's own loop: per-layer mean |grad| every step, evaluation every epoch). Targets: the study at most
  30 s and at most 0.25x the loops. ``--per-cell`` also runs ``compare --vectorize=false`` and compares the tables.
- ``side_by_side``: one tutorial fit alone against two started together (two terminals), with the template's
  default of one thread and with torch's default of a thread per core. Target: at most 1.3x.
- ``gpu`` (needs CUDA): ``benchmarks/gpu_check.py``, its options after ``--part gpu``: member-steps per second and
  peak memory of 1, 30, 1,000 and 10,000 members, the study of 30 and 600 members on the GPU, and members against
  their single fits there (``--part gpu --smoke`` runs the same code on CPU with tiny sizes).

Run:  python benchmarks/members_speed.py [--epochs 300] [--part step|study|side_by_side|gpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = str(REPO / "configs" / "tutorial.yaml")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "relu6", "leaky_relu", "identity")
SEEDS = (0, 1, 2, 3, 4)
QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")
MEMBERS_30 = (f"--members.activations=[{','.join(ACTIVATIONS)}]", f"--members.seeds=[{','.join(map(str, SEEDS))}]")


def step_times(epochs: int, repeats: int) -> None:
    from training_speed import StepTimer  # this folder's other benchmark (imports Lightning)

    from lit_activations.cli import cli_main

    def per_step(members: tuple[str, ...]) -> float:
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as logs:
            args = ["fit", "--config", TUTORIAL, f"--trainer.max_epochs={epochs}", *QUIET, *members]
            cli_main([*args, f"--trainer.logger.init_args.save_dir={logs}"], trainer_defaults={"callbacks": [timer]})
        return timer.per_step

    one, thirty = [], []
    for repeat in range(repeats):
        for name in ("one", "thirty") if repeat % 2 == 0 else ("thirty", "one"):
            (one if name == "one" else thirty).append(per_step(() if name == "one" else MEMBERS_30))
    ratio = statistics.median(t / o for t, o in zip(thirty, one, strict=True))
    print(f"step: 1 member {statistics.median(one) * 1e3:.2f} ms, 30 members {statistics.median(thirty) * 1e3:.2f} ms"
          f" per step (medians of {repeats}); 30/1 = {ratio:.2f} (target <= 3.0);"
          f" {30 / ratio:.1f}x the member-steps per second", flush=True)  # fmt: skip


def hand_written_loops(activations: list[str], seeds: list[int], epochs: int) -> None:
    """The tutorial's own training, one loop per (activation, seed): what a user writes without the template."""
    import torch
    from sklearn.datasets import make_circles
    from torch import nn

    torch.set_num_threads(1)
    x, y = make_circles(n_samples=1000, factor=0.5, noise=0.1, random_state=0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).reshape(-1, 1)
    classes = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "relu6": nn.ReLU6,
               "leaky_relu": nn.LeakyReLU, "identity": nn.Identity}  # fmt: skip
    for activation in activations:
        for seed in seeds:
            torch.manual_seed(seed)
            layers = [nn.Linear(2, 5), nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 1)]
            model = nn.Sequential(*[m for layer in layers[:-1] for m in (layer, classes[activation]())],
                                  layers[-1], nn.Sigmoid())  # fmt: skip
            loss_fn, optimizer = nn.BCELoss(), torch.optim.Adam(model.parameters(), lr=1e-4)
            history: list[list[float]] = [[] for _ in layers]
            for _ in range(epochs):
                model.train()
                for start in range(0, len(x), 32):
                    loss = loss_fn(model(x[start : start + 32]), y[start : start + 32])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    for layer, grads in zip(layers, history, strict=True):
                        grads.append(layer.weight.grad.abs().mean().item())
                model.eval()
                with torch.no_grad():
                    prediction = model(x)
                    loss_fn(prediction, y).item(), (prediction.round() == y).float().mean().item()


def wall(command: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, **kwargs)
    return time.perf_counter() - started


def study(epochs: int, per_cell: bool) -> None:
    half = len(ACTIVATIONS) // 2
    loops = [[sys.executable, __file__, "--part", "_loops", "--epochs", str(epochs), "--activations", ",".join(part)]
             for part in (ACTIVATIONS[:half], ACTIVATIONS[half:])]  # fmt: skip
    started = time.perf_counter()
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for command in loops]
    assert all(p.wait() == 0 for p in processes)
    loops_wall = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as study_dir:
        cells = ["--activations", ",".join(ACTIVATIONS), "--seeds", ",".join(map(str, SEEDS))]
        command = [sys.executable, "-m", "lit_activations", "compare", *cells, "--config", TUTORIAL,
                   f"--trainer.max_epochs={epochs}"]  # fmt: skip
        vectorised = wall([*command, "--study_dir", study_dir])
        table = (Path(study_dir) / "results.md").read_text()
        print(f"study ({epochs} epochs): compare {vectorised:.1f} s (target <= 30 s); 30 hand-written loops, two at a"
              f" time: {loops_wall:.1f} s; compare / loops = {vectorised / loops_wall:.2f} (target <= 0.25)",
              flush=True)  # fmt: skip
        if per_cell:
            with tempfile.TemporaryDirectory() as other:
                separate = wall([*command, "--study_dir", other, "--vectorize=false"])
                same = (Path(other) / "results.md").read_text() == table
            print(f"study: compare --vectorize=false {separate:.1f} s; vectorised / per cell ="
                  f" {vectorised / separate:.2f}; the same table: {same}", flush=True)  # fmt: skip
        print(table, flush=True)


def side_by_side(epochs: int, repeats: int) -> None:
    command = [sys.executable, "-m", "lit_activations", "fit", "--config", TUTORIAL, "--model.activation=relu",
               f"--trainer.max_epochs={epochs}", *QUIET]  # fmt: skip

    def run(n: int, threads: str) -> float:
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        with tempfile.TemporaryDirectory() as logs:
            started = time.perf_counter()
            extra = [] if threads == "default" else [f"--threads={os.cpu_count()}"]
            processes = [subprocess.Popen([*command, *extra], cwd=logs, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL) for _ in range(n)]  # fmt: skip
            assert all(p.wait() == 0 for p in processes)
            return time.perf_counter() - started

    for threads in ("default", "one per core"):
        alone = [run(1, threads) for _ in range(repeats)]
        pair = [run(2, threads) for _ in range(repeats)]
        ratio = statistics.median(pair) / statistics.median(alone)
        target = " (target <= 1.3)" if threads == "default" else ""
        print(f"side by side, threads {threads}: one fit {statistics.median(alone):.1f} s, two at once"
              f" {statistics.median(pair):.1f} s; ratio {ratio:.2f}{target}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part", choices=["step", "study", "side_by_side", "gpu", "_loops"])
    parser.add_argument("--per-cell", action="store_true", help="also run compare --vectorize=false (5 minutes)")
    parser.add_argument("--activations", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.part == "gpu":  # all of it in gpu_check.py, which takes the other options
        os.execv(sys.executable, [sys.executable, str(Path(__file__).with_name("gpu_check.py")), *rest])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    sys.argv = sys.argv[:1]  # in-process fits get their arguments from cli_main's list
    print(f"{os.cpu_count()} cores, {args.epochs} epochs", flush=True)
    if args.part == "_loops":
        hand_written_loops(args.activations.split(","), list(SEEDS), args.epochs)
        return
    if args.part in (None, "step"):
        step_times(min(args.epochs, 30), args.repeats)
    if args.part in (None, "side_by_side"):
        side_by_side(min(args.epochs, 60), args.repeats)
    if args.part in (None, "study"):
        study(args.epochs, args.per_cell)


if __name__ == "__main__":
    main()
