"""The template's fit against Lightning's floor, and where the difference goes, measured side by side in one run.

For one network (``--model.activation=relu``) and for the 15 members of one fit of the tutorial study
(``--members.activations=[sigmoid, tanh, relu, relu6, leaky_relu] --members.seeds=[0, 1, 2]``), all with
``configs/tutorial.yaml`` (2-5-5-5-5-1, batch 32, fused Adam, validation on all 1,000 points each epoch):

- floor: Lightning's bare Trainer on the same stacked network, loss and fused optimizer, in a minimal
  LightningModule (``training_speed.py``'s variant (d) for K networks): no logger, checkpoint, progress bar or
  callback. The targets are against it. Beside it, the same Trainer with the template's ``HookProfiler``
  (``lit_activations/profiler.py``), which the fit has too: what of the fit's lead comes from that alone; and
  that Trainer given as many callbacks as the fit has (7), each doing nothing: what Lightning itself spends
  calling every hook of every callback, whatever the callback does;
- fit: ``fit --config configs/tutorial.yaml`` as configured there: the monitor, the theory, the divergence guard,
  the run summary, checkpoints every 10 epochs, a TensorBoard run per member;
- with ``--split``, the fit with its parts turned off one after the other (theory, monitor, run summary,
  guard, checkpoints, TensorBoard runs): what each costs, and what is left (the model's metrics and
  bookkeeping, Lightning's hooks) against the floor.

Time per step is the wall time from the start of epoch 1 to the end of training over its steps (epoch 0, with
CUDA/CPU warm-up, the activation figures and the first checkpoint, is left out), so it holds every epoch's
validation, probe pass, logging and checkpoints; "in steps" is the part spent inside the training batches
(forward, backward, optimizer, per-step hooks), the rest is per epoch. Variants alternate within each repeat;
a ratio is the median over repeats of the ratio within one. Targets: members fit/floor <= 1.3, one network <= 1.15.

With ``--monitor``, only the monitor's share of the fit (target: at most 10%), the fit against itself with
``--monitor=null``, alternated over the repeats (10 repeats: one pair's noise is about the size of the effect).

Run:  python benchmarks/framework_floor.py [--epochs 100] [--repeats 3] [--split | --monitor] [--only one|members]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import TensorDataset
from training_speed import _whole_batches, tutorial_data  # this folder's other benchmark

from lit_activations.cli import cli_main
from lit_activations.heads import HEADS
from lit_activations.members import Member, expand_members
from lit_activations.networks import member_networks
from lit_activations.profiler import HookProfiler
from lit_activations.stacked import stack_networks

TUTORIAL = str(Path(__file__).resolve().parent.parent / "configs" / "tutorial.yaml")
ACTIVATIONS, SEEDS = ["sigmoid", "tanh", "relu", "relu6", "leaky_relu"], [0, 1, 2]
MEMBER_FLAGS = [f"--members.activations=[{', '.join(ACTIVATIONS)}]", f"--members.seeds={SEEDS}"]
# The parts of a fit that --split peels off one after the other (each variant has the flags of those before it
# too), so that the parts' costs add up to the whole fit's over the floor.
PARTS = [
    ("theory", ["--theory=null"]),
    ("monitor", ["--monitor=null"]),
    ("run summary", ["--summary=null"]),
    ("guard", ["--guard=null"]),
    ("checkpoints", ["--trainer.enable_checkpointing=false"]),
    ("TensorBoard runs", ["--trainer.logger=false", "--trainer.callbacks=[]"]),  # the runs, and the lr in them
]


class Timer(Callback):
    """From the start of epoch 1 to the end of training: wall time, time inside the training batches, steps."""

    def __init__(self) -> None:
        self.in_steps, self.batch_started = 0.0, 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch == 1:
            self.started, self.first_step, self.in_steps = time.perf_counter(), trainer.global_step, 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        self.batch_started = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        if trainer.current_epoch >= 1:
            self.in_steps += time.perf_counter() - self.batch_started

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.callbacks = len(trainer.callbacks) - 1  # besides this one
        steps = trainer.global_step - self.first_step
        self.per_step, self.in_steps_per_step = (time.perf_counter() - self.started) / steps, self.in_steps / steps


# The fit's callbacks besides the timer (learning rate, checkpoint, monitor, theory, guard, run summary, config saver):
# the floor's "no-op callbacks" variant gets as many, each a class of its own as the fit's are.
FIT_CALLBACKS = 7


class FloorModule(LightningModule):
    """The template's stacked network, output head and fused Adam, and nothing else: Lightning's own cost."""

    def __init__(self, members: list[Member]) -> None:
        super().__init__()
        self.head = HEADS["sigmoid"]
        networks = member_networks(members, 2, [5, 5, 5, 5], 1, "default")
        self.net = stack_networks(networks, groups=[(m.activation, m.activation_args) for m in members])

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.head.losses(self.head.output(self.net(x)), y).sum()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self.head.output(self.net(x))
        accuracy = (self.head.classes(out) == y.long()).double().mean()
        self.log_dict({"loss": self.head.losses(out, y).mean(), "acc": accuracy})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-4, fused=True)


def floor(epochs: int, members: bool, profiler: bool = False, no_op_callbacks: int = 0) -> Timer:
    x, y = tutorial_data()
    data = TensorDataset(x, y.reshape(-1))
    grid = expand_members("relu", None, ACTIVATIONS if members else None, SEEDS if members else [0])
    timer = Timer()
    no_ops = [type(f"NoOp{i}", (Callback,), {})() for i in range(no_op_callbacks)]
    trainer = Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer, *no_ops],
        profiler=HookProfiler() if profiler or no_ops else None,
    )  # fmt: skip
    trainer.fit(FloorModule(grid), _whole_batches(data, 32), _whole_batches(data, len(data)))
    return timer


def fit(epochs: int, members: bool, off: list[str]) -> Timer:
    timer = Timer()
    with tempfile.TemporaryDirectory() as logs:
        args = ["fit", "--config", TUTORIAL, f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false", f"--trainer.logger.init_args.save_dir={logs}",
                *(MEMBER_FLAGS if members else ["--model.activation=relu"]), *off]  # fmt: skip
        cli_main(args, trainer_defaults={"callbacks": [timer]})
    return timer


def ratio(runs: dict[str, list[Timer]], name: str, attribute: str = "per_step") -> float:
    """Median over repeats of ``name``'s time per step (or ``attribute``) over the floor's in the same repeat."""
    return statistics.median(getattr(a, attribute) / b.per_step for a, b in zip(runs[name], runs["floor"], strict=True))


def ms(runs: dict[str, list[Timer]], name: str, attribute: str = "per_step") -> float:
    """Median over repeats of ``name``'s time per step (or ``attribute``), in ms."""
    return statistics.median(getattr(t, attribute) for t in runs[name]) * 1e3


def report(label: str, runs: dict[str, list[Timer]], target: float) -> None:
    whole = ratio(runs, "fit")
    print(f"{label}: floor {ms(runs, 'floor'):.3f} ms a step ({ms(runs, 'floor', 'in_steps_per_step'):.3f} in steps);"
          f" fit {ms(runs, 'fit'):.3f} ms ({ms(runs, 'fit', 'in_steps_per_step'):.3f} in steps); fit/floor ="
          f" {whole:.2f} (target <= {target}: {'met' if whole <= target else 'NOT met'})", flush=True)  # fmt: skip
    if "floor, profiled" in runs:
        print(f"  the bare Trainer with the template's HookProfiler: {ms(runs, 'floor, profiled'):.3f} ms a step;"
              f" the fit against it: {ratio(runs, 'fit') / ratio(runs, 'floor, profiled'):.2f}",
              flush=True)  # fmt: skip
    if "floor, no-op callbacks" in runs:
        assert runs["fit"][0].callbacks == FIT_CALLBACKS, f"the fit has {runs['fit'][0].callbacks} callbacks now"
        no_ops = "floor, no-op callbacks"
        print(f"  ... and {FIT_CALLBACKS} no-op callbacks, as many as the fit has: {ms(runs, no_ops):.3f} ms a"
              f" step, {ratio(runs, no_ops) / ratio(runs, 'floor, profiled'):.2f} of the bare Trainer with the profiler"
              f" (Lightning calling their hooks); the fit against it: {ratio(runs, 'fit') / ratio(runs, no_ops):.2f}",
              flush=True)  # fmt: skip
    names = [name for name in runs if not name.startswith("floor")]
    for before, name in itertools.pairwise(names):
        print(f"  {name[2:]:18s} {ratio(runs, before) - ratio(runs, name):+.2f} of the floor's time"
              f" ({ms(runs, before) - ms(runs, name):+.3f} ms a step)", flush=True)  # fmt: skip
    if len(names) > 1:
        print(f"  {'what is left':18s} {ratio(runs, names[-1]) - 1:+.2f} (the template without all of them:"
              f" {ms(runs, names[-1]):.3f} ms a step)", flush=True)  # fmt: skip


def monitor_share(epochs: int, repeats: int, members: bool) -> None:
    """The monitor's share of a fit, (with − without)/with, alternated; the median over repeats and their range."""
    shares = []
    for repeat in range(repeats):
        pair = {}
        for name in ("with", "without") if repeat % 2 == 0 else ("without", "with"):
            gc.collect()
            pair[name] = fit(epochs, members, ["--monitor=null"] if name == "without" else []).per_step
        shares.append(1 - pair["without"] / pair["with"])
    share = statistics.median(shares)
    print(f"{'15 members' if members else 'one network'}, {epochs} epochs x {repeats} repeats: the monitor's share of"
          f" the fit {share:.1%} (range {min(shares):.1%} to {max(shares):.1%}; target <= 10%:"
          f" {'met' if share <= 0.10 else 'NOT met'})", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="epochs per fit (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--split", action="store_true", help="also the fit with its parts turned off one by one")
    parser.add_argument("--only", choices=["one", "members"], help="one network or the 15 members (default: both)")
    parser.add_argument("--monitor", action="store_true", help="only the monitor's share: the fit against the same"
                        " fit with --monitor=null (take 10 repeats: one pair's noise is about the effect)")  # fmt: skip
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the fits get their arguments from cli_main's list, not from this script's
    torch.set_num_threads(1)  # as the CLI sets it
    if args.monitor:
        for members in [m for m in (False, True) if args.only in (None, "members" if m else "one")]:
            monitor_share(args.epochs, args.repeats, members)
        return
    variants, off = {"fit": []}, []
    for part, flags in PARTS if args.split else []:
        off = [*off, *flags]
        variants[f"- {part}"] = off
    for members in [m for m in (False, True) if args.only in (None, "members" if m else "one")]:
        floors = ["floor", "floor, profiled", "floor, no-op callbacks"]
        runs: dict[str, list[Timer]] = {name: [] for name in [*floors, *variants]}
        for repeat in range(args.repeats):
            for name in list(runs) if repeat % 2 == 0 else list(reversed(runs)):
                gc.collect()  # no run pays for the garbage of the one before
                if name.startswith("floor"):
                    no_ops = FIT_CALLBACKS if name == "floor, no-op callbacks" else 0
                    timer = floor(args.epochs, members, profiler=name == "floor, profiled", no_op_callbacks=no_ops)
                else:
                    timer = fit(args.epochs, members, variants[name])
                runs[name].append(timer)
        label = f"{'15 members' if members else 'one network'}, {args.epochs} epochs x {args.repeats} repeats"
        report(label, runs, 1.3 if members else 1.15)


if __name__ == "__main__":
    main()
