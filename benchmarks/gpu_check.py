"""On a GPU: thousands of members in one fit, measured side by side in one run (speed, memory, study, equivalence).

Each part runs within a time budget of its own, about 6 minutes in all on an H200.

Parts (``--parts``, default all three):

- ``speed``: member-steps per second of 1, 30, 1,000 and 10,000 members of the tutorial configuration
  (``configs/tutorial.yaml``: 2-5-5-5-5-1, batch 32, fused Adam; 32 steps an epoch) and the peak GPU memory
  (``torch.cuda.max_memory_allocated``) of each fit, in three variants (``--variants``): monitoring off
  (``--monitor=null``), bare (``--monitor=null --guard=null``: the guard's one host sync per step gone too), and
  on (the fit as configured). Each fit runs ``--warmup_epochs`` untimed (CUDA start-up, the sanity check, epoch 0's
  histograms), then ``--timed_epochs`` (3: 96 steps) timed twice: the training steps alone (the monitor's and the
  guard's per-step work included) and the whole epochs (also each epoch's validation, probe pass and the members'
  logging). No pictures (``--summary=null``), no checkpoints and no config files, which the ``study`` part has.
  The fits are built from what the CLI builds for ``fit --config configs/tutorial.yaml`` with one network (its
  callbacks, data and model arguments as the configs say), with K members and a run each (``--build api``), as
  the CLI's own parse of K members grows faster than K (30 s for 800 members on a 2-core machine; ``--build cli``
  goes through it).
  Target: 1,000 members at >= 100x the member-steps per second of one.
- ``study``: the tutorial study (6 activations x 5 seeds, ``--study_epochs`` 300: 9,600 steps) as one ``compare``
  on the device, then the same with ``--big_study_seeds`` (100: 600 members, ``--big_study_epochs``, default the
  same), each one fit holding every cell (``--jobs 1``). A study stopped at the part's budget reports the epochs it
  trained and the pace. Target: the 600-member study in at most 60 s.
- ``equivalence``: a fit of ``--equivalence_members`` (1,000) members, ``--equivalence_epochs`` (60), against the
  single fits (through the CLI) of 3 of them on the same device: the largest |difference| of final weights and of
  final val/acc and val/loss, and the float32 matmul settings the fits ran with (TF32 off unless ``--tf32``).

Each fit runs in a process of its own (a clean peak-memory count; one that fails or runs out of its part's
budget is reported and the rest goes on). Nothing is written outside a temporary directory.

Run:  python benchmarks/gpu_check.py [--json results.json]       # on a CUDA machine, about 6 minutes
      python benchmarks/gpu_check.py --smoke                        # the same logic on CPU, tiny sizes (~1-2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = str(REPO / "configs" / "tutorial.yaml")
GPU_PRESET = str(REPO / "configs" / "gpu.yaml")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "relu6", "leaky_relu", "identity")
QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")
# The speed part's variants: what each adds to the members' training. (monitor, guard), and the CLI's flags.
VARIANTS = {
    "on": ((True, True), ()),  # the tutorial fit as configured: ActivationMonitor and DivergenceGuard
    "off": ((False, True), ("--monitor=null",)),  # monitoring off; the guard still checks every step (a host sync)
    "bare": ((False, False), ("--monitor=null", "--guard=null")),  # neither: the members' steps and the logging
}
VARIANT_NAMES = {"on": "monitor on", "off": "monitor off", "bare": "no monitor, no guard"}
STEPS_PER_EPOCH = 32  # the tutorial's 1000 points in batches of 32 (the last of 8)
# This checkout's package, in this process and every one it starts, wherever the tree was copied to (an editable
# install made elsewhere points at the directory it was made in).
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])


# ----------------------------------------------------------------------------------------------------------------
# What every fit gets


def member_grid(k: int) -> tuple[tuple[str, ...], list[int]]:
    """K members as activations x seeds: the study's 6 activations where they divide K, else 5 of them, else relu."""
    if k <= len(ACTIVATIONS):
        return ACTIVATIONS[:k], [0]
    for n in (6, 5):
        if k % n == 0:
            return ACTIVATIONS[:n], list(range(k // n))
    return ("relu",), list(range(k))


def member_flags(k: int) -> list[str]:
    """A plain fit (relu, seed 0) for one member, as a user runs it; ``--members.*`` for more."""
    if k == 1:
        return []
    activations, seeds = member_grid(k)
    return [f"--members.activations=[{','.join(activations)}]", f"--members.seeds=[{','.join(map(str, seeds))}]"]


def describe(k: int) -> str:
    if k == 1:
        return "1 member (a plain fit: relu, seed 0)"
    activations, seeds = member_grid(k)
    return f"{k:,} members ({len(activations)} activations x {len(seeds)} seed{'s' * (len(seeds) > 1)})"


def device_flags(accelerator: str) -> list[str]:
    """One device, Lightning's single-device strategy (configs/gpu.yaml would start DDP over every GPU)."""
    return [f"--trainer.accelerator={accelerator}", "--trainer.devices=1"]


def fit_args(accelerator: str, k: int, epochs: int, save_dir: str, *extra: str) -> list[str]:
    return ["fit", "--config", TUTORIAL, *device_flags(accelerator), f"--trainer.max_epochs={epochs}", *QUIET,
            "--summary=null", "--trainer.enable_checkpointing=false", *member_flags(k), *extra,
            f"--trainer.logger.init_args.save_dir={save_dir}"]  # fmt: skip


def arithmetic() -> dict[str, Any]:
    """What decides float32 matmuls here: TF32 off unless something turned it on (Lightning only suggests it)."""
    import torch

    return {"allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Worker processes: one per measured fit (or group of fits), results as JSON lines in a file


def worker(spec: dict[str, Any]) -> None:
    import torch

    sys.argv = sys.argv[:1]  # in-process fits get their arguments from cli_main's list
    if spec.get("tf32"):
        torch.set_float32_matmul_precision("high")
    results = Path(spec["results"])

    def emit(record: dict[str, Any]) -> None:
        with results.open("a") as file:
            file.write(json.dumps(record) + "\n")

    if spec["kind"] == "speed":
        for variant in spec["variants"]:
            emit(speed_fit(spec, variant))
    elif spec["kind"] == "equivalence":
        equivalence(spec, emit)


def build_fit(spec: dict[str, Any], k: int, epochs: int, save_dir: str, variant: str, callbacks: list) -> Any:
    """Train ``k`` members of the tutorial configuration; return the object with ``.model`` and ``.trainer``.

    ``spec["build"]``: ``cli`` runs ``fit --config configs/tutorial.yaml ...`` in-process (``fit_args``). ``api``
    lets the CLI build the one-network fit of the same flags without running it (every callback, the data, the
    model's arguments, as the configs say today), then trains ``k`` members of that model with those callbacks and
    a logger with a run per member: the CLI's own parse of K members grows faster than K (30 s for 800 members on
    a 2-core machine), which 10,000 members would not get through within the budget.
    """
    from lit_activations.cli import cli_main

    flags = VARIANTS[variant][1]
    if spec["build"] == "cli":
        return cli_main(fit_args(spec["accelerator"], k, epochs, save_dir, *flags),
                        trainer_defaults={"callbacks": callbacks})  # fmt: skip
    template = cli_main(fit_args(spec["accelerator"], 1, epochs, save_dir, *flags)[1:], run=False,
                        trainer_defaults={"callbacks": callbacks})  # fmt: skip
    from types import SimpleNamespace

    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar
    from lightning.pytorch.cli import SaveConfigCallback

    from lit_activations.logger import TensorBoardRunLogger
    from lit_activations.members import expand_members, member_run_dirs

    model, made, logger = template.model, template.trainer, template.trainer.logger  # one network: the CLI's own
    if k > 1:
        activations, seeds = member_grid(k)
        members = expand_members(model.hparams.activation, model.hparams.activation_args, list(activations), seeds)
        arguments = {key: value for key, value in model.hparams.items() if not key.startswith("_")}  # as member_model
        model = type(model)(**arguments | {"members": [m.as_dict() for m in members]}, optimizer=model.optimizer,
                            scheduler=model.scheduler)  # fmt: skip
        logger = TensorBoardRunLogger(save_dir, name="members", default_hp_metric=False,
                                      members=member_run_dirs(members, None, 0))  # fmt: skip
    # all but the progress bar, model summary, checkpoints and config files (a file per member: setup, not steps)
    unwanted = (ProgressBar, ModelSummary, ModelCheckpoint, SaveConfigCallback)
    own = [c for c in made.callbacks if not isinstance(c, unwanted)]
    trainer = Trainer(
        accelerator=spec["accelerator"], devices=1, max_epochs=epochs, log_every_n_steps=made.log_every_n_steps,
        use_distributed_sampler=False, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=own,
    )  # fmt: skip
    trainer.fit(model, datamodule=template.datamodule)
    return SimpleNamespace(model=model, trainer=trainer, callbacks=[type(c).__name__ for c in own])


def speed_fit(spec: dict[str, Any], variant: str) -> dict[str, Any]:
    import gc
    import resource

    import torch
    from lightning.pytorch import Callback

    cuda = spec["accelerator"] == "gpu"
    warmup, timed = spec["warmup_epochs"], spec["timed_epochs"]

    def now() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    class Timer(Callback):
        """Synchronised clocks at epoch boundaries only: the steps in between run as in any fit."""

        def __init__(self) -> None:
            self.train_seconds = self.train_steps = 0.0
            self.epoch_start: float | None = None
            self.start = self.end = self.fit_start = self.first_epoch_end = None

        def on_fit_start(self, trainer, pl_module):
            self.fit_start = now()

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == warmup:
                self.start, self.start_step = now(), trainer.global_step
                self.first_epoch_end = self.start
            if trainer.current_epoch >= warmup:
                self.epoch_start, self.epoch_step = now(), trainer.global_step

        def on_validation_start(self, trainer, pl_module):
            self._steps_done(trainer)

        def on_train_epoch_end(self, trainer, pl_module):
            self._steps_done(trainer)  # (when no validation ran this epoch)

        def _steps_done(self, trainer):
            if trainer.sanity_checking or self.epoch_start is None:
                return
            self.train_seconds += now() - self.epoch_start
            self.train_steps += trainer.global_step - self.epoch_step
            self.epoch_start = None

        def on_train_end(self, trainer, pl_module):
            self.end, self.steps = now(), trainer.global_step - self.start_step

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    timer = Timer()
    k = spec["members"]
    with tempfile.TemporaryDirectory() as logs:
        started = time.perf_counter()
        fit = build_fit(spec, k, warmup + timed, logs, variant, [timer])
        wall = time.perf_counter() - started
        record = {
            "members": k, "variant": variant, "build": spec["build"], "steps": timer.steps,
            "train_steps": timer.train_steps, "step_s": timer.train_seconds / timer.train_steps,
            "epoch_step_s": (timer.end - timer.start) / timer.steps, "setup_s": timer.fit_start - started,
            "warmup_s": timer.first_epoch_end - timer.fit_start, "wall_s": wall, "arithmetic": arithmetic(),
            "callbacks": [type(c).__name__ for c in fit.trainer.callbacks if c is not timer],
        }  # fmt: skip
        if cuda:
            record |= {"peak_mib": torch.cuda.max_memory_allocated() / 2**20,
                       "reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
                       "device": torch.cuda.get_device_name()}  # fmt: skip
        else:
            record |= {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        del fit
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return record


def equivalence(spec: dict[str, Any], emit) -> None:
    import gc

    import torch
    from lightning.pytorch import Callback

    from lit_activations.cli import cli_main

    k, epochs, accelerator = spec["members"], spec["epochs"], spec["accelerator"]
    picks = sorted({0, k // 2, k - 1})[: spec["check"]]

    class Initial(Callback):
        """The checked members' weights before training: how far training moved them."""

        def on_fit_start(self, trainer, pl_module):
            self.states = [{n: v.detach().cpu().clone() for n, v in pl_module.member_state_dict(i).items()}
                           for i in picks]  # fmt: skip

    initial = Initial()
    with tempfile.TemporaryDirectory() as logs:
        started = time.perf_counter()
        big = build_fit(spec, k, epochs, logs, "off", [initial])
        big_wall = time.perf_counter() - started
        members = [big.model.members[i] for i in picks]
        states = [{n: v.detach().cpu().clone() for n, v in big.model.member_state_dict(i).items()} for i in picks]
        metrics = [dict(big.model.last_epoch_metrics[i]) for i in picks]
        scale = max(v.abs().max().item() for state in states for v in state.values())
        emit(
            {
                "part": "big",
                "members": k,
                "epochs": epochs,
                "build": spec["build"],
                "wall_s": big_wall,
                "arithmetic": arithmetic(),
            }
        )
        del big
        gc.collect()
        if accelerator == "gpu":
            torch.cuda.empty_cache()
        for i, member, state, metric, before in zip(picks, members, states, metrics, initial.states, strict=True):
            single = cli_main(
                fit_args(accelerator, 1, epochs, logs, "--monitor=null", f"--model.activation={member.activation}",
                         f"--seed_everything={member.seed}")
            )  # fmt: skip
            theirs = {n: v.detach().cpu() for n, v in single.model.state_dict().items()}
            same_keys = theirs.keys() == state.keys()
            weight_diff = max((state[n] - theirs[n]).abs().max().item() for n in theirs) if same_keys else float("nan")
            alone = single.model.last_epoch_metrics[0]
            emit({"part": "member", "index": i, "label": member.label, "same_keys": same_keys,
                  "weight_max_abs_diff": weight_diff, "weight_max_abs": scale,
                  "moved_max_abs": max((state[n] - before[n]).abs().max().item() for n in state),
                  "val_acc": [metric["val/acc"], alone["val/acc"]], "val_loss": [metric["val/loss"], alone["val/loss"]],
                  "arithmetic": arithmetic()})  # fmt: skip
            del single
            gc.collect()


# ----------------------------------------------------------------------------------------------------------------
# The parent: runs the workers and studies within each part's budget, prints the lines


class Budget:
    def __init__(self, name: str, seconds: float) -> None:
        self.name, self.seconds, self.start = name, seconds, time.monotonic()

    @property
    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)


def run_bounded(command: list[str], timeout: float, log: Path, cwd: str) -> tuple[int | None, float]:
    """Run ``command`` (output into ``log``) for at most ``timeout`` s; its exit status (None: stopped), wall time."""
    started = time.perf_counter()
    if timeout <= 1:
        return None, 0.0
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            stop_group(process)
    return code, time.perf_counter() - started


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process's own group (a study's fork server and fits too), SIGKILL 10 s later."""
    for signum, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(log: Path, lines: int = 6) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return "\n".join(f"    | {line}" for line in text[-lines:])


def say(text: str) -> None:
    print(text, flush=True)


def ratio_verdict(value: float, target: float, at_least: bool = True, unit: str = "") -> str:
    met = value >= target if at_least else value <= target
    return f"(target {'>=' if at_least else '<='} {target:g}{unit}: {'met' if met else 'NOT met'})"


def speed_part(opts: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    budget = Budget("speed", opts.speed_budget)
    say(
        f"[speed] tutorial network 2-5-5-5-5-1, batch 32, {STEPS_PER_EPOCH} steps an epoch, fused Adam; per fit"
        f" {opts.warmup_epochs} warm-up epoch(s) untimed, then {opts.timed_epochs} timed"
        f" ({opts.timed_epochs * STEPS_PER_EPOCH} steps); no pictures, checkpoints or config files; fits built with the"
        f" {opts.build.upper()};"
        f" budget {opts.speed_budget:.0f} s"
    )
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    order = opts.variants
    for k in opts.members:
        if budget.left < 5:
            say(f"[speed] {describe(k)}: skipped, the part's budget is spent")
            continue
        file = work / f"speed-{k}.jsonl"
        spec = {"kind": "speed", "members": k, "variants": order, "accelerator": opts.accelerator,
                "warmup_epochs": opts.warmup_epochs, "timed_epochs": opts.timed_epochs, "results": str(file),
                "tf32": opts.tf32, "build": opts.build}  # fmt: skip
        log = work / f"speed-{k}.log"
        code, wall = run_bounded([sys.executable, __file__, "--_worker", json.dumps(spec)], budget.left, log, str(work))
        got = [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []
        for record in got:
            if not any(variant == record["variant"] for _, variant in rows):
                say(f"[speed] {VARIANT_NAMES[record['variant']]}: the fits' callbacks {', '.join(record['callbacks'])}")
            rows[(k, record["variant"])] = record
            memory = (f"peak {record['peak_mib']:,.0f} MiB allocated ({record['reserved_mib']:,.0f} MiB reserved)"
                      if "peak_mib" in record else f"peak RSS {record['peak_rss_mib']:,.0f} MiB (CPU)")  # fmt: skip
            say(f"[speed] {describe(k)}, {VARIANT_NAMES[record['variant']] + ':':<21}"
                f" {record['step_s'] * 1e3:8.3f} ms/step training, {record['epoch_step_s'] * 1e3:8.3f} ms/step"
                f" with each epoch's validation+logging = {k / record['step_s']:12,.0f} /"
                f" {k / record['epoch_step_s']:12,.0f} member-steps/s; {memory}; fit {record['wall_s']:.1f} s"
                f" (setup {record['setup_s']:.1f} s, warm-up {record['warmup_s']:.1f} s)")  # fmt: skip
        missing = [m for m in order if (k, m) not in rows]
        if code != 0 and (missing or code is not None):  # (stopped while exiting, every figure in: nothing to say)
            why = "ran out of the part's budget" if code is None else f"FAILED, exit status {code}"
            if code is not None:
                results["failures"].append(f"speed {k}")
            say(f"[speed] {describe(k)}: {why} after {wall:.0f} s; not measured:"
                f" {', '.join(VARIANT_NAMES[m] for m in missing) or '-'}\n{tail(log)}")  # fmt: skip
    results["speed"] = list(rows.values())
    base = min(opts.members)
    for k in opts.members:
        if k == base:
            continue
        for variant in order:
            if (k, variant) not in rows or (base, variant) not in rows:
                continue
            mine, one = rows[(k, variant)], rows[(base, variant)]
            steps = k * one["step_s"] / (base * mine["step_s"])
            epochs = k * one["epoch_step_s"] / (base * mine["epoch_step_s"])
            target = f" {ratio_verdict(epochs, 100)}" if (k, base) == (1000, 1) else ""
            say(f"[speed] {k:,} members against {base}, {VARIANT_NAMES[variant] + ':':<21} {epochs:8.1f}x the"
                f" member-steps/s with validation+logging{target}; {steps:8.1f}x in the training steps alone;"
                f" time per step x{mine['epoch_step_s'] / one['epoch_step_s']:.2f}")  # fmt: skip
    if (1000, "on") not in rows and 1000 in opts.members:
        say("[speed] 1,000 against 1: not measured (target >= 100x)")


def study_part(opts: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    from lit_activations.events import read_scalars

    budget = Budget("study", opts.study_budget)
    flags = ["--config", GPU_PRESET] if opts.study_preset == "ddp" else device_flags(opts.accelerator)
    say(f"[study] one compare per study, --jobs 1 (one fit holds every cell), {' '.join(flags)}; monitor, pictures"
        f" and checkpoints as configs/tutorial.yaml has them; budget {opts.study_budget:.0f} s")  # fmt: skip
    results["study"] = []
    for seeds, epochs, target in ((opts.study_seeds, opts.study_epochs, None),
                                  (opts.big_study_seeds, opts.big_study_epochs, 60.0)):  # fmt: skip
        cells = len(ACTIVATIONS) * seeds
        directory = work / f"study-{cells}"
        directory.mkdir()
        command = [sys.executable, "-m", "lit_activations", "compare", "--activations", ",".join(ACTIVATIONS),
                   "--seeds", ",".join(map(str, range(seeds))), "--config", TUTORIAL, *flags,
                   f"--trainer.max_epochs={epochs}", "--jobs", "1",
                   "--study_dir", str(directory / "study")]  # fmt: skip
        shown = " ".join(command[1:-2]).replace(str(REPO) + "/", "")
        say(f"[study] {cells} members, {epochs} epochs ({epochs * STEPS_PER_EPOCH:,} steps): python {shown}")
        if budget.left < 10:
            say(f"[study] {cells} members: skipped, the part's budget is spent")
            continue
        log = directory / "compare.log"
        code, wall = run_bounded(command, budget.left, log, str(directory))
        text = log.read_text(errors="replace") if log.exists() else ""
        fits = re.search(r"(\d+) runs? in ([\d.]+) s", text)
        record = {"members": cells, "seeds": seeds, "epochs": epochs, "exit": code, "wall_s": wall,
                  "fits_s": float(fits.group(2)) if fits else None}  # fmt: skip
        results["study"].append(record)
        verdict = f" {ratio_verdict(wall, target, at_least=False, unit=' s')}" if target and code == 0 else ""
        if target and code == 0 and epochs != 300:
            verdict += " (the target is for 300 epochs)"
        if code == 0:
            split = f" (plan + fit {record['fits_s']:.1f} s, then reading the runs, table and figure" \
                    f" {wall - record['fits_s']:.1f} s)" if fits else ""  # fmt: skip
            say(f"[study] {cells} members ({len(ACTIVATIONS)} activations x {seeds} seed{'s' * (seeds > 1)}), {epochs}"
                f" epochs: {wall:.1f} s wall{split}{verdict}")  # fmt: skip
            table = directory / "study" / "results.md"
            if table.exists() and opts.show_tables:
                say(table.read_text().strip())
            continue
        done = 0
        runs = sorted((directory / "study").glob("*/seed_*/events.out.tfevents.*"))
        if runs:
            try:
                done = len(read_scalars(runs[0].parent).get("val/acc", []))
            except Exception:
                done = 0
        if code is None:
            record["epochs_done"] = done
            pace = f"; at that pace {epochs} epochs take about {wall * epochs / done:.0f} s, before the report" \
                if done else ""  # fmt: skip
            say(f"[study] {cells} members: stopped at the part's budget after {wall:.0f} s, {done} of"
                f" {epochs} epochs trained{pace}"
                f"{f' (target <= {target:g} s: NOT met)' if target else ''}")  # fmt: skip
        else:
            results["failures"].append(f"study {cells}")
            say(f"[study] {cells} members: compare FAILED (exit status {code}) after {wall:.0f} s\n{tail(log, 12)}")
            for error in sorted((directory / "study").rglob("fits/**/*.log"))[:1]:
                say(f"[study] its fit's log {error.name}:\n{tail(error, 12)}")
    done = {r["members"]: r for r in results["study"] if r["exit"] == 0}
    small, big = len(ACTIVATIONS) * opts.study_seeds, len(ACTIVATIONS) * opts.big_study_seeds
    if small in done and big in done:
        same = "" if done[big]["epochs"] == done[small]["epochs"] else " (not the same epochs)"
        say(f"[study] {big} members against {small}: {done[big]['wall_s'] / done[small]['wall_s']:.2f}x the wall"
            f" time for {big // small}x the runs{same}")  # fmt: skip


def equivalence_part(opts: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    budget = Budget("equivalence", opts.equivalence_budget)
    k, epochs = opts.equivalence_members, opts.equivalence_epochs
    say(
        f"[equivalence] a fit of {describe(k)}, {epochs} epochs ({epochs * STEPS_PER_EPOCH} steps), monitor"
        f" off (built with the {opts.build.upper()}), against the single fits (CLI) of {opts.equivalence_check} of"
        f" them on the"
        f" same device; TF32"
        f" {'on (--tf32)' if opts.tf32 else 'as torch and Lightning leave it'}; budget {opts.equivalence_budget:.0f} s"
    )
    file, log = work / "equivalence.jsonl", work / "equivalence.log"
    spec = {"kind": "equivalence", "members": k, "epochs": epochs, "check": opts.equivalence_check,
            "accelerator": opts.accelerator, "results": str(file), "tf32": opts.tf32, "build": opts.build}  # fmt: skip
    code, wall = run_bounded([sys.executable, __file__, "--_worker", json.dumps(spec)], budget.left, log, str(work))
    got = [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []
    results["equivalence"] = got
    members = [r for r in got if r["part"] == "member"]
    for record in got:
        if record["part"] == "big":
            a = record["arithmetic"]
            say(f"[equivalence] the {record['members']:,}-member fit: {record['wall_s']:.1f} s; float32 matmul:"
                f" torch.backends.cuda.matmul.allow_tf32={a['allow_tf32']},"
                f" torch.get_float32_matmul_precision()={a['float32_matmul_precision']!r},"
                f" cudnn.allow_tf32={a['cudnn_allow_tf32']}")  # fmt: skip
            continue
        acc, loss = record["val_acc"], record["val_loss"]
        say(f"[equivalence] member {record['index']} ({record['label']}): weights max |diff|"
            f" {record['weight_max_abs_diff']:.3g} (weights up to {record['weight_max_abs']:.3g}, moved by training"
            f" up to {record['moved_max_abs']:.3g}); val/acc"
            f" {acc[0]:.4f} in the fit, {acc[1]:.4f} alone (|diff| {abs(acc[0] - acc[1]):.3g}); val/loss |diff|"
            f" {abs(loss[0] - loss[1]):.3g}")  # fmt: skip
    if members:
        worst = max(r["weight_max_abs_diff"] for r in members)
        acc = max(abs(r["val_acc"][0] - r["val_acc"][1]) for r in members)
        loss = max(abs(r["val_loss"][0] - r["val_loss"][1]) for r in members)
        say(f"[equivalence] over {len(members)} members: weights max |diff| {worst:.3g}, val/acc max |diff| {acc:.3g},"
            f" val/loss max |diff| {loss:.3g} (the CPU tests hold members to 1e-5)")  # fmt: skip
    if code != 0 and (len(members) < min(opts.equivalence_check, k) or code is not None):
        why = "ran out of the part's budget" if code is None else f"FAILED, exit status {code}"
        if code is not None:
            results["failures"].append("equivalence")
        say(f"[equivalence] {why} after {wall:.0f} s\n{tail(log)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--parts", default="speed,study,equivalence", help="comma-separated (default: all three)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes on CPU: members 1,3; studies of 6 and 12 members, 2 epochs; 6-member"
                        " equivalence; the same code paths as on a GPU")  # fmt: skip
    parser.add_argument("--accelerator", choices=["gpu", "cpu"], help="default: gpu (cpu with --smoke)")
    parser.add_argument("--members", help="member counts of the speed part (default: 1,30,1000,10000)")
    parser.add_argument(
        "--variants",
        default="off,bare,on",
        help="speed, in this order for each member count: off (--monitor=null), bare (--monitor=null"
        " --guard=null: no host sync per step), on (the tutorial fit as configured; its first probe pass"
        " measures sup|f'| on a CPU grid of K x 40,001 x units, an estimated minute and 25-30 GB for"
        " 10,000 members, so it comes last); default off,bare,on",
    )
    parser.add_argument("--warmup_epochs", type=int, default=1)
    parser.add_argument("--timed_epochs", type=int, default=3, help="default 3 (96 steps)")
    parser.add_argument("--study_epochs", type=int, help="default: the tutorial's 300 (2 with --smoke)")
    parser.add_argument("--study_seeds", type=int, help="default 5: 30 members (1 with --smoke)")
    parser.add_argument("--big_study_seeds", type=int, help="default 100: 600 members (2 with --smoke)")
    parser.add_argument("--big_study_epochs", type=int, help="default: --study_epochs")
    parser.add_argument("--study_preset", choices=["single", "ddp"], default="single",
                        help="single: --trainer.accelerator=gpu --trainer.devices=1 (default); ddp: --config"
                        " configs/gpu.yaml (DDP over every GPU)")  # fmt: skip
    parser.add_argument("--show_tables", action="store_true", help="print each study's results.md")
    parser.add_argument("--equivalence_members", type=int, help="default 1000 (6 with --smoke)")
    parser.add_argument("--equivalence_epochs", type=int, help="default 60 (2 with --smoke)")
    parser.add_argument("--equivalence_check", type=int, default=3, help="members checked against single fits")
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="torch.set_float32_matmul_precision('high') in every fit"
        " of the speed and equivalence parts (default: untouched, i.e. 'highest', TF32 off)",
    )
    parser.add_argument("--speed_budget", type=float, default=150.0, help="seconds (default 150)")
    parser.add_argument("--study_budget", type=float, default=150.0, help="seconds (default 150)")
    parser.add_argument("--equivalence_budget", type=float, default=55.0, help="seconds (default 55)")
    parser.add_argument("--budget", type=float, help="seconds for the parts together: scales the three budgets")
    parser.add_argument(
        "--build",
        choices=["api", "cli"],
        default="api",
        help="how the speed part's fits and the equivalence part's large fit are built: api (default),"
        " the CLI's classes and arguments in Python; cli, `fit` itself, whose parse of K members takes"
        " longer than the budget for 10,000 (the single fits of the equivalence part always use the"
        " CLI)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts._worker:
        worker(json.loads(opts._worker))
        return
    smoke = opts.smoke
    opts.accelerator = opts.accelerator or ("cpu" if smoke else "gpu")
    opts.members = [int(k) for k in (opts.members or ("1,3" if smoke else "1,30,1000,10000")).split(",")]
    opts.study_epochs = opts.study_epochs or (2 if smoke else 300)
    opts.study_seeds = opts.study_seeds or (1 if smoke else 5)
    opts.big_study_seeds = opts.big_study_seeds or (2 if smoke else 100)
    opts.big_study_epochs = opts.big_study_epochs or opts.study_epochs
    opts.equivalence_members = opts.equivalence_members or (6 if smoke else 1000)
    opts.equivalence_epochs = opts.equivalence_epochs or (2 if smoke else 60)
    parts = [p.strip() for p in opts.parts.split(",") if p.strip()]
    if opts.budget:
        names = [f"{part}_budget" for part in ("speed", "study", "equivalence") if part in parts]
        scale = opts.budget / sum(getattr(opts, name) for name in names)
        for name in names:
            setattr(opts, name, getattr(opts, name) * scale)
    opts.variants = [v.strip() for v in opts.variants.split(",") if v.strip()]
    if set(opts.variants) - set(VARIANTS):
        parser.error(f"--variants: expected some of {', '.join(VARIANTS)}")

    import torch

    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if cuda else "no CUDA device"
    say(f"gpu_check: {name}; torch {torch.__version__} (CUDA build {torch.version.cuda}), python"
        f" {platform.python_version()}, {os.cpu_count()} cores; accelerator {opts.accelerator}"
        f"{' (--smoke)' if smoke else ''}; parts {','.join(parts)}")  # fmt: skip
    if opts.accelerator == "gpu" and not cuda:
        say("gpu_check: torch.cuda.is_available() is False (a CPU-only torch build, or no driver): nothing measured;"
            " --smoke runs the same code on CPU")  # fmt: skip
        sys.exit(3)
    results: dict[str, Any] = {"device": name, "torch": torch.__version__, "accelerator": opts.accelerator,
                               "options": {k: v for k, v in vars(opts).items() if k != "json"},
                               "failures": []}  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as scratch:
        work = Path(scratch)
        for part, run in (("speed", speed_part), ("study", study_part), ("equivalence", equivalence_part)):
            if part in parts:
                part_started = time.monotonic()
                run(opts, work, results)
                say(f"[{part}] took {time.monotonic() - part_started:.0f} s")
                if opts.json:
                    opts.json.write_text(json.dumps(results, indent=1, default=str))
    failures = results["failures"]
    say(
        f"gpu_check: done in {time.monotonic() - started:.0f} s{'; FAILED: ' + ', '.join(failures) if failures else ''}"
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
