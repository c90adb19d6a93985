"""``python -m lit_activations theory``: what mean-field theory predicts for a configuration, before training.

It takes the fit's own options (``--config``, ``--model.*``, ``--data.*``, ``--members.*``), builds the
model and the data as ``fit`` would, without training or writing a run, and prints per member a
table of each hidden layer's predictions (``lit_activations.theory.predict``) with each
activation's fixed point, depth scales and phase at the layer's variances; then draws a phase
diagram of each activation (``--figure``, default ``logs/theory.png``).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch

from lit_activations import theory
from lit_activations.errors import ConfigError
from lit_activations.signal_theory import Chain, find_chain, input_moments


def theory_main(argv: list[str]) -> int:
    """The command: exit 0, or 2 with one line for a configuration it cannot predict (a user's mistake)."""
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--figure", type=Path, default=Path("logs/theory.png"))
    args, fit_args = own.parse_known_args(argv)
    if any(arg in ("-h", "--help") for arg in fit_args):
        print(__doc__.strip().splitlines()[0].strip("`") + "\n\n--figure PATH (default logs/theory.png), and any"
              " option of `python -m lit_activations fit --help`.")  # fmt: skip
        return 0
    from lit_activations.cli import run_cli  # (Lightning, 5 s: after the command's own flags)

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)  # "Seed set to 0", "GPU available": not this command's
    sys.argv = [sys.argv[0], *fit_args]  # what the fit's parser reads (given as `args` too, Lightning would warn)
    cli = run_cli(None, run=False)  # a mistake in the options: the parser's one line, exit 2
    chain = find_chain(cli.model)
    try:
        if chain is None:
            raise ConfigError(f"theory cannot follow {type(cli.model).__name__}'s signal: it is not one"
                              " nn.Sequential of linear layers and element-wise activations")  # fmt: skip
        x = _first_batch(cli.datamodule)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    moment, correlation = input_moments(x)
    labels = [m.label for m in cli.model.members] if hasattr(cli.model, "members") else [type(cli.model).__name__]
    with torch.no_grad():
        for k, label in enumerate(labels):
            prediction = theory.predict(chain.layers(k), moment, correlation, len(x), rule=theory.FIT_RULE)
            print(table(chain, k, prediction, label if len(labels) > 1 else ""))
    try:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure(chain).savefig(args.figure)
    except OSError as err:
        print(f"error: cannot write --figure {args.figure}: {err.strerror}", file=sys.stderr)
        return 2
    print(f"input second moment {moment:.3g}, correlation between samples {correlation:.3g}, batch {len(x)};"
          f" phase diagram {args.figure}")  # fmt: skip
    return 0


def table(chain: Chain, member: int, prediction: theory.Prediction, label: str) -> str:
    """One member's predictions, a row per hidden layer, then its vanishing ratio."""
    lines = [f"member {label}"] if label else []
    header = (f"{'layer':<10} {'activation':<12} {'width':>5} {'σ_w²':>7} {'σ_b²':>7} {'q':>8} {'mean':>7} {'std':>7}"
              f" {'saturated':>9} {'dead':>6} {'χ':>7}  fixed point q*, χ₁*, ξ_q, ξ_c, phase")  # fmt: skip
    lines += [header, "-" * len(header)]
    layers = chain.layers(member)
    for i, (name, _) in enumerate(chain.activations):
        spec = layers[i]
        point = fixed_point_summary(spec.phi, spec.sw2, spec.sb2)
        lines.append(
            f"{name:<10} {type(spec.phi).__name__:<12} {spec.fan_out:>5} {spec.sw2:>7.3f} {spec.sb2:>7.3f}"
            f" {prediction.q[i]:>8.3g} {prediction.activation_mean[i]:>7.3f} {prediction.activation_std[i]:>7.3f}"
            f" {prediction.saturation[i]:>9.3f} {prediction.dead_units[i]:>6.3f} {prediction.chi[i]:>7.3f}  {point}"
        )
    lines.append(f"vanishing_ratio (log10 mean|∇W| first / last): {prediction.vanishing_ratio:.2f}")
    return "\n".join(lines) + "\n"


def fixed_point_summary(phi: torch.nn.Module, sw2: float, sb2: float) -> str:
    """q*, χ₁ at q*, the depth scales and the phase of ``phi`` at (σ_w², σ_b²), in a few characters."""
    q_star = theory.fixed_point(phi, sw2, sb2)
    if not math.isfinite(q_star):
        return "q* = ∞ (the variance grows without bound)"
    chi1 = float(theory.chi1(phi, sw2, torch.tensor(q_star, dtype=torch.float64)))
    xi_q, xi_c = theory.depth_scales(phi, sw2, sb2)
    return f"{q_star:.3g}, {chi1:.3f}, {_scale(xi_q)}, {_scale(xi_c)}, {theory.phase(phi, sw2, sb2)}"


def figure(chain: Chain):  # -> matplotlib Figure
    """The phase diagram of each distinct hidden activation of every member, with the layers' points marked."""
    from lit_activations.plots import PhasePanel, phase_diagram

    points: dict[str, dict[str, tuple[float, float]]] = {}
    modules: dict[str, torch.nn.Module] = {}
    for k in range(chain.num_members):
        for i, spec in enumerate(chain.layers(k)[:-1]):
            key = _describe(spec.phi)
            modules.setdefault(key, spec.phi)
            label = chain.activations[i][0] + (f" m{k}" if chain.num_members > 1 else "")
            points.setdefault(key, {})[label] = (spec.sw2, spec.sb2)
    panels = []
    for key, phi in modules.items():
        critical = theory.critical_point(phi)
        largest_w = max([4.0, *(1.5 * w for w, _ in points[key].values())] + ([1.5 * critical[0]] if critical else []))
        largest_b = max([0.5, *(1.5 * b for _, b in points[key].values())] + ([1.5 * critical[1]] if critical else []))
        sw2 = np.linspace(largest_w / 40, largest_w, 40)
        sb2 = np.linspace(0.0, largest_b, 25)
        panels.append(PhasePanel(key, sw2, sb2, chi1_grid(phi, sw2, sb2), points[key]))
    return phase_diagram(panels)


def chi1_grid(phi: torch.nn.Module, sw2: np.ndarray, sb2: np.ndarray, iterations: int = 60) -> np.ndarray:
    """χ₁ at the fixed point q* for every (σ_b², σ_w²) of the grid, shape (len(sb2), len(sw2)): the variance map
    iterated on all of them at once (at most ``iterations`` times: near the critical line it converges slowly,
    and χ₁ hardly moves with q there)."""
    w = torch.tensor(sw2, dtype=torch.float64).expand(len(sb2), len(sw2))
    b = torch.tensor(sb2, dtype=torch.float64).unsqueeze(1).expand(len(sb2), len(sw2))
    q = torch.ones_like(w)
    act = theory.as_elementwise(phi)  # (once: the map is iterated on the whole grid)
    with torch.no_grad():
        for _ in range(iterations):
            before, q = q, (w * theory.moments(act, q, theory.FIT_RULE).second + b).clamp(max=1e8)
            if torch.allclose(q, before, rtol=1e-6):
                break
    return (w * theory.moments(act, q, theory.FIT_RULE).slope2).numpy()


def _describe(phi: torch.nn.Module) -> str:
    text = repr(phi)
    return text if len(text) <= 40 else type(phi).__name__


def _scale(xi: float) -> str:
    return "∞" if not math.isfinite(xi) else f"{xi:.3g}"


def _first_batch(data) -> torch.Tensor:
    """The inputs of the first training batch, as the fit's first step sees them."""
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    x = batch[0] if isinstance(batch, list | tuple) else batch
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{type(data).__name__}'s training batches are not (inputs, ...): nothing to predict from")
    return x
