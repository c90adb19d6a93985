"""The template changes nothing in the science: Lightning reproduces a plain PyTorch loop."""

import pytest
import torch
from sklearn.datasets import make_circles
from torch import nn

from lit_activations.events import read_scalars

from runs import REPO, fit

EPOCHS = 3


def plain_tutorial_loop(seed: int, epochs: int) -> tuple[nn.Sequential, list[float]]:
    """The tutorial's training, written independently: same data, order, model, loss and optimiser.

    Returns the model and each epoch's training loss, averaged over the epoch's points.
    """
    x, y = make_circles(n_samples=1000, factor=0.5, noise=0.1, random_state=0)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32).reshape(-1, 1)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(),
        nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 1), nn.Sigmoid(),
    )  # fmt: skip
    loss_fn = nn.BCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    epoch_losses = []
    for _ in range(epochs):
        total = 0.0
        for start in range(0, len(x), 32):
            loss = loss_fn(model(x[start : start + 32]), y[start : start + 32])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(x[start : start + 32])
        epoch_losses.append(total / len(x))
    return model, epoch_losses


def test_tutorial_config_trains_the_same_weights_as_a_plain_loop():
    cli = fit(
        "--config", str(REPO / "configs" / "tutorial.yaml"),
        "--model.activation=tanh", "--seed_everything=3", f"--trainer.max_epochs={EPOCHS}",
    )  # fmt: skip
    reference, epoch_losses = plain_tutorial_loop(seed=3, epochs=EPOCHS)
    ours = [p[0].detach().cpu() for p in cli.model.net.parameters()]  # member 0, the only one
    theirs = [p.detach() for p in reference.parameters()]
    assert len(ours) == len(theirs) == 10
    assert cli.trainer.global_step == EPOCHS * 32
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    logged = [value for _, value in read_scalars(cli.trainer.logger.log_dir)["train/loss"]]
    assert logged == pytest.approx(epoch_losses, abs=1e-6)
    # and the weights did move: equality is not the trivial one of an untrained network
    torch.manual_seed(3)
    assert not torch.allclose(nn.Linear(2, 5).weight, ours[0], atol=1e-4)
