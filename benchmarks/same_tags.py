"""Whether a change altered what a fit logs: every tag, step and value of a short tutorial fit at two commits.

Speed work must not change a measurement. This runs ``fit --config configs/tutorial.yaml`` for 41 epochs (every
histogram, image and theory epoch of the first 40, with the theory every 20th) as one network and as the tutorial
study's 15 members, once with the code of ``--base`` (checked out into a temporary git worktree) and once with this
checkout's, and compares the event files' scalars: the same runs, tags and steps, and the largest relative
difference of the values (0 when the change is exact; the issue's bound is 1e-6).

Run:  python benchmarks/same_tags.py --base COMMIT
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lit_activations.events import read_scalars

REPO = Path(__file__).resolve().parent.parent
MEMBERS = ["--members.activations=[sigmoid, tanh, relu, relu6, leaky_relu]", "--members.seeds=[0, 1, 2]"]


def fit(tree: Path, logs: str, members: bool) -> None:
    """The tutorial fit with the code of ``tree``, its runs under ``logs``."""
    args = ["fit", "--config", str(tree / "configs" / "tutorial.yaml"), "--trainer.max_epochs=41",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={logs}", "--theory.every_n_epochs=20",
            *(MEMBERS if members else ["--model.activation=relu"])]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-m", "lit_activations", *args], cwd=tree, env=env, check=True, capture_output=True)


def largest_difference(before: Path, after: Path) -> float:
    """The largest relative difference between the two directories' runs; raises if runs, tags or steps differ."""
    runs = sorted(p.parent.relative_to(before) for p in before.rglob("events.out.tfevents.*"))
    assert runs == sorted(p.parent.relative_to(after) for p in after.rglob("events.out.tfevents.*")), "other runs"
    largest = 0.0
    for run in runs:
        old, new = read_scalars(before / run), read_scalars(after / run)
        assert sorted(old) == sorted(new), f"{run}: tags {sorted(set(old) ^ set(new))}"
        for tag, points in old.items():
            assert [s for s, _ in points] == [s for s, _ in new[tag]], f"{run}: steps of {tag}"
            for (_, a), (_, b) in zip(points, new[tag], strict=True):
                if a != b and not (a != a and b != b):  # (NaN equals NaN here)
                    largest = max(largest, abs(a - b) / max(abs(a), abs(b)))
    return largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare this checkout with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch, "base")
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=REPO, check=True,
                       capture_output=True)  # fmt: skip
        try:
            for members in (False, True):
                before, after = Path(scratch, "before"), Path(scratch, "after")
                fit(base, str(before), members)
                fit(REPO, str(after), members)
                print(f"{'15 members' if members else 'one network'}: the same runs, tags and steps; largest relative"
                      f" difference {largest_difference(before, after):.1e}", flush=True)  # fmt: skip
                subprocess.run(["rm", "-rf", str(before), str(after)], check=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=True)


if __name__ == "__main__":
    main()
