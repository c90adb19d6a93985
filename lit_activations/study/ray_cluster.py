"""``compare --launcher ray``: the study's fits as Ray tasks, on a Ray cluster or a local Ray instance.

Only where a fit runs changes: the study still decides the cells, the fits, their run directories,
what is skipped as finished and the table. Each fit is the same ``python -m lit_activations fit ...``
as with the local launcher, run by ``lit_activations.study.launcher.fit_process`` in a Ray worker
of its own (``max_calls=1``: a fresh process per fit, as locally), holding the CPUs and GPUs it
needs. The workers run in this process's working directory and write to the study directory, so
on a cluster both must be on storage every node shares at the same path (NFS, say), and
``lit_activations`` installed on every node: each node is checked before the first fit.

Ray's own task retries are off: a fit whose worker dies (killed, out of memory, node lost) comes
back as a failed fit, which the study retries one cell per fit like any failed fit of several
cells, and reports in the table if it fails alone.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import traceback
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from lit_activations.errors import ConfigError
from lit_activations.study.launcher import fit_process


class RayLauncher:
    """Connects to Ray (``address``: a cluster, e.g. ``auto``; ``None``: a new local instance) and runs fits on it.

    Check a ``HOST:PORT`` address with ``unreachable`` first: ``ray.init`` waits for ever where nothing answers.

    Args:
        address: ``ray.init``'s address.
        study_dir: where the fits write; checked to be shared by every node.
        configs: the configurations of the study's fits (``fit --print_config``): their trainers'
            accelerator and devices say what a fit holds.
    """

    def __init__(self, address: str | None, study_dir: Path, configs: list[dict[str, Any]]) -> None:
        try:
            # "local": a new instance, never the cluster a RAY_ADDRESS or an earlier `ray start` points at
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as err:
            reason = str(err).splitlines()[0].split(". ")[0].rstrip(".")  # the rest names Ray's own flags
            if address:
                raise ConfigError(
                    f"cannot join the Ray cluster at --ray_address {address}: {reason} (`ray start --head` starts one;"
                    " without --ray_address the study starts a local Ray)"
                ) from None
            raise ConfigError(f"cannot start a local Ray instance: {reason}") from None
        try:
            resources = ray.cluster_resources()
            self.cpus = max(1, int(resources.get("CPU", 1)))
            self.gpus = int(resources.get("GPU", 0))
            # (CPUs, GPUs) of each node: a fit runs on one node, so it can hold at most what one node has
            self.nodes = [(int(n["Resources"].get("CPU", 0)), int(n["Resources"].get("GPU", 0)))
                          for n in ray.nodes() if n["Alive"]]  # fmt: skip
            self.configs = configs
            self.cwd = os.getcwd()
            self._fit = ray.remote(max_calls=1, max_retries=0)(_fit_task)
            self._running: set[ray.ObjectRef] = set()
            self._stopping = False
            if error := self._infeasible() or self._shared(study_dir):
                raise ConfigError(error)
        except BaseException:
            ray.shutdown()
            raise

    @property
    def default_jobs(self) -> int:
        """Fits at a time: as many as the cluster's GPUs hold where fits hold GPUs, else as its CPUs hold."""
        shapes = [fit_shape(c["trainer"], self.gpus > 0) for c in self.configs]
        processes, gpus = max(p for p, _ in shapes), max(g for _, g in shapes)
        return max(1, self.gpus // gpus if gpus else self.cpus // processes)

    def run(
        self, arguments: list[str], threads: int, config: dict[str, Any], log: Path
    ) -> tuple[int | None, list[str]]:
        processes, gpus = fit_shape(config["trainer"], self.gpus > 0)
        threads = max(1, min(threads, self._node_cpus(processes, gpus) // processes))  # no more than one node's cores
        if self._stopping:
            return None, ["error: interrupted before it started"]
        log.parent.mkdir(parents=True, exist_ok=True)
        task = self._fit.options(num_cpus=threads * processes, num_gpus=gpus).remote(
            arguments, threads, self.cwd, str(log.resolve())
        )
        self._running.add(task)
        if self._stopping:  # interrupt() came between the two lines above
            ray.cancel(task)
        try:
            return ray.get(task)
        except RayTaskError as err:  # the task's own code failed outside the fit (e.g. the working directory is gone)
            return None, [f"error: {str(err.cause).strip().splitlines()[-1]}"]
        except RayError as err:  # the worker died, or its node: the fit's cells fail, the others go on
            return None, [f"error: the Ray worker of this fit died ({type(err).__name__})"]
        finally:
            self._running.discard(task)

    def interrupt(self) -> None:
        self._stopping = True
        for task in list(self._running):  # Ray's workers are not in the terminal's process group: Ctrl-C misses them
            ray.cancel(task)  # a KeyboardInterrupt in the task: Lightning stops gracefully, DDP children included

    def close(self) -> None:
        ray.shutdown()  # a local instance stops; a cluster stays up

    def _node_cpus(self, processes: int, gpus: int) -> int:
        """The most CPUs of a node that can hold a fit of ``processes`` processes and ``gpus`` GPUs (0: none can)."""
        return max((c for c, g in self.nodes if c >= processes and g >= gpus), default=0)

    def _infeasible(self) -> str:
        """A fit that no node can hold would wait for ever: a one-line error instead, or ``""``."""
        for config in self.configs:
            processes, gpus = fit_shape(config["trainer"], self.gpus > 0)
            if not self._node_cpus(processes, gpus):
                need = f"{processes} CPUs" + (f" and {gpus} GPUs" if gpus else "")
                return (
                    f"invalid trainer.devices {config['trainer'].get('devices')!r} for --launcher ray: a fit runs on"
                    f" one node, and no node of this cluster has {need}"
                )
        return ""

    def _shared(self, study_dir: Path) -> str:
        """A one-line error if a node cannot see the working directory or write to the study directory, else ``""``.

        A file this process writes must be visible to each node at the same path: a node that can write to a
        directory of the same name on its own disk would otherwise lose its runs to the table.
        """
        study = Path(study_dir).resolve()
        try:
            study.mkdir(parents=True, exist_ok=True)
            marker = study / f".ray_check_{uuid.uuid4().hex}"
            marker.touch()
        except OSError as err:
            return f"cannot write to --study_dir {study}: {err.strerror}"
        try:
            nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
            check = ray.remote(num_cpus=0, max_retries=0)(check_shared)
            tasks = {
                node["NodeManagerAddress"]: check.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                ).remote(str(marker), self.cwd, node["NodeManagerAddress"])
                for node in nodes
            }
            for node, task in tasks.items():
                try:
                    if error := ray.get(task):
                        return error
                except RayError as err:  # e.g. lit_activations is not installed there
                    cause = str(getattr(err, "cause", err)).strip().splitlines()[-1]
                    return f"Ray node {node} cannot run the study's tasks: {cause}"
            return ""
        finally:
            marker.unlink(missing_ok=True)


def unreachable(address: str | None) -> str:
    """A one-line error if nothing answers at a ``HOST:PORT`` address, else ``""``: ``ray.init`` would retry for ever.

    >>> unreachable("auto")
    ''
    """
    host, colon, port = (address or "").rpartition(":")
    if not colon or not port.isdigit() or "://" in address:  # auto, local, a ray:// client address: Ray's to judge
        return ""
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        return (
            f"cannot join the Ray cluster at --ray_address {address}: nothing answers there"
            f" ({err.strerror or err}); `ray start --head` prints the address to give"
        )
    return ""


def check_shared(marker: str, cwd: str, node: str) -> str:
    """On one node: ``""`` if ``cwd`` and ``marker`` are there and the marker's directory is writable."""
    study = Path(marker).parent
    if not Path(cwd).is_dir() or not Path(marker).exists():
        missing = cwd if not Path(cwd).is_dir() else str(study)
        return (
            f"Ray node {node} does not see {missing}: with --launcher ray every node needs the working"
            " directory and --study_dir on shared storage, at the same path"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=study):
            pass
    except OSError as err:
        return f"Ray node {node} cannot write to --study_dir {study}: {err.strerror}"
    return ""


def fit_shape(trainer: dict[str, Any], cluster_has_gpus: bool) -> tuple[int, int]:
    """The processes of a fit with this trainer configuration, and the GPUs it holds (one per device on GPUs).

    A fit holds a CPU per thread of each process.

    >>> fit_shape({"accelerator": "gpu", "devices": 2}, cluster_has_gpus=True)
    (2, 2)
    >>> fit_shape({"accelerator": "cpu", "devices": "auto"}, cluster_has_gpus=True)
    (1, 0)
    """
    devices = trainer.get("devices", "auto")
    if isinstance(devices, list):
        processes = len(devices)
    elif isinstance(devices, int) or str(devices).isdigit():
        processes = max(1, int(devices))
    elif isinstance(devices, str) and "," in devices:
        processes = len([d for d in devices.split(",") if d.strip()])
    else:  # "auto" or -1: Ray schedules one
        processes = 1
    accelerator = str(trainer.get("accelerator", "auto"))
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and cluster_has_gpus)
    return processes, processes if on_gpu else 0


def _fit_task(arguments: list[str], threads: int, cwd: str, log: str) -> tuple[int | None, list[str]]:
    """The Ray task: the fit, run as the local launcher's process runs it, its output into ``log`` (in the study
    directory, which every node shares); its exit status and output lines."""
    os.chdir(cwd)  # relative paths in the arguments (--config, --study_dir) mean what they meant to the user
    sys.path.insert(0, cwd)  # as `python -m` does: a user's own modules given by import path
    output = Path(log)
    saved = os.dup(1), os.dup(2)
    try:
        fit_process(arguments, threads, output)
        exitcode: int | None = 0
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
        exitcode = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except BaseException:  # a bug in the user's code: its traceback is the fit's output, as locally
        traceback.print_exc()
        exitcode = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in enumerate(saved, start=1):
            os.dup2(copy, fd)
            os.close(copy)
    return exitcode, output.read_text(errors="replace").strip().splitlines() if output.exists() else []
