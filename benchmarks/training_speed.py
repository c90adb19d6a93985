"""Training speed of the tutorial experiment, side by side in one run (machines here are noisy).

(a) an independent plain PyTorch loop, the tutorial's own: its batch slicing, default Adam,
    per-layer mean |grad| gathered every step and an evaluation on all points every epoch;
(b) ``fit --config configs/tutorial.yaml`` with the ActivationMonitor on (the default);
(c) the same fit with ``--monitor=null``;
(d) Lightning's floor: the same network, loss and (fused) Adam in a minimal LightningModule, with a
    Trainer that has no logger, checkpoint, progress bar or callback, validating on all points
    each epoch. No template built on Lightning's Trainer runs faster than this;
and the start-up time of ``python -m lit_activations --help`` against ``import lightning``.

Variants alternate within each repeat; a ratio is the median over repeats of the ratio within a repeat; the first epoch
of every run is a warm-up and not timed. Run:  python benchmarks/training_speed.py
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from sklearn.datasets import make_circles
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from lit_activations.cli import cli_main

TUTORIAL = Path(__file__).resolve().parent.parent / "configs" / "tutorial.yaml"


class StepTimer(Callback):
    """Wall time per optimizer step from the start of the second epoch to the end of training."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.start, self.start_step = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer, pl_module):
        self.per_step = (time.perf_counter() - self.start) / (trainer.global_step - self.start_step)


def template_step_time(epochs: int, monitor: bool) -> float:
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as logs:
        args = ["fit", "--config", str(TUTORIAL), "--model.activation=relu", f"--trainer.max_epochs={epochs}"]
        args += [f"--trainer.logger.init_args.save_dir={logs}", "--trainer.enable_progress_bar=false"]
        args += ["--trainer.enable_model_summary=false", *([] if monitor else ["--monitor=null"])]
        cli_main(
            args,
            trainer_defaults={"callbacks": [timer]},
        )
    return timer.per_step


def tutorial_data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_circles(n_samples=1000, factor=0.5, noise=0.1, random_state=0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).reshape(-1, 1)


def tutorial_network() -> tuple[list[nn.Linear], nn.Sequential]:
    layers = [nn.Linear(2, 5), nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 1)]
    return layers, nn.Sequential(*[m for layer in layers[:-1] for m in (layer, nn.ReLU())], layers[-1], nn.Sigmoid())


def plain_loop_step_time(epochs: int) -> float:
    x, y = tutorial_data()
    layers, model = tutorial_network()
    loss_fn = nn.BCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    grad_history: list[list[float]] = [[] for _ in layers]
    steps = 0
    for epoch in range(epochs):
        if epoch == 1:
            start, start_steps = time.perf_counter(), steps
        model.train()
        for first in torch.arange(0, len(x), 32):  # the tutorial's batch starts, as tensors
            loss = loss_fn(model(x[first : first + 32]), y[first : first + 32])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            for layer, history in zip(layers, grad_history, strict=True):
                history.append(float(layer.weight.grad.abs().mean()))
        model.eval()
        with torch.no_grad():
            prediction = model(x)
            float(loss_fn(prediction, y)), float((prediction.round() == y).float().mean())
    return (time.perf_counter() - start) / (steps - start_steps)


class MinimalModule(LightningModule):
    """The tutorial's network, loss and (fused) Adam, and nothing else: what Lightning's loop itself costs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tutorial_network()[1]
        self.loss_fn = nn.BCELoss()

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.loss_fn(self.net(x), y)

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        prediction = self.net(x)
        self.log_dict({"loss": self.loss_fn(prediction, y), "acc": (prediction.round() == y).float().mean()})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-4, fused=True)


def lightning_floor_step_time(epochs: int) -> float:
    data = TensorDataset(*tutorial_data())
    timer = StepTimer()
    trainer = Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(MinimalModule(), _whole_batches(data, 32), _whole_batches(data, len(data)))
    return timer.per_step


def _whole_batches(data: TensorDataset, batch_size: int) -> DataLoader:
    """Batches fetched by one indexing each, no per-sample collate: the cheapest DataLoader."""
    return DataLoader(data, sampler=BatchSampler(SequentialSampler(data), batch_size, drop_last=False), batch_size=None)


def startup_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs per run (the first is a warm-up)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each variant, alternated")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the fits get their arguments from cli_main's list, not from this script's

    variants = {
        "a_plain_loop": lambda: plain_loop_step_time(args.epochs),
        "b_fit_monitor_on": lambda: template_step_time(args.epochs, monitor=True),
        "c_fit_monitor_off": lambda: template_step_time(args.epochs, monitor=False),
        "d_lightning_floor": lambda: lightning_floor_step_time(args.epochs),
    }
    startups = {
        "import_lightning": [sys.executable, "-c", "import lightning.pytorch"],
        "cli_help": [sys.executable, "-m", "lit_activations", "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in [*variants, *startups]}
    for repeat in range(args.repeats):
        order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
        for name in order:
            gc.collect()  # no run pays for the garbage of the one before
            times[name].append(variants[name]())
        for name, command in startups.items():
            times[name].append(startup_time(command))

    median = {name: statistics.median(values) for name, values in times.items()}

    def ratio(top: str, bottom: str) -> float:
        """Median over repeats of the ratio within a repeat: runs side by side share the machine's state."""
        return statistics.median(t / b for t, b in zip(times[top], times[bottom], strict=True))

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.epochs} epochs x {args.repeats} repeats"
    )
    for name in variants:
        print(f"{name:20s} {median[name] * 1e3:7.3f} ms/step (median), {min(times[name]) * 1e3:7.3f} (fastest)")
    for name in startups:
        print(f"{name:20s} {median[name]:7.2f} s (median)")
    print(f"b/a = {ratio('b_fit_monitor_on', 'a_plain_loop'):.2f}  (target <= 1.00)")
    print(f"c/a = {ratio('c_fit_monitor_off', 'a_plain_loop'):.2f}")
    print(f"b/c = {ratio('b_fit_monitor_on', 'c_fit_monitor_off'):.2f}  (target <= 1.10)")
    print(f"b/c of the fastest runs = {min(times['b_fit_monitor_on']) / min(times['c_fit_monitor_off']):.2f}")
    print(f"d/a = {ratio('d_lightning_floor', 'a_plain_loop'):.2f}  (Lightning's own loop against the plain one)")
    print(f"c/d = {ratio('c_fit_monitor_off', 'd_lightning_floor'):.2f}  (what the template adds, monitor off)")
    print(f"cli --help / import lightning = {ratio('cli_help', 'import_lightning'):.2f}  (target <= 1.20)")


if __name__ == "__main__":
    main()
