import pytest

from lit_activations.events import read_scalars

from runs import fit


def test_each_epochs_learning_rate_is_logged_at_the_step_of_its_metrics(tmp_path):
    halving = ("--model.scheduler=StepLR", "--model.scheduler.step_size=1", "--model.scheduler.gamma=0.5")
    cli = fit("--data.n_samples=200", "--trainer.max_epochs=3", "--summary=null", *halving)
    scalars = read_scalars(cli.trainer.logger.log_dir)
    rates = scalars["lr-Adam"]
    assert [step for step, _ in rates] == [step for step, _ in scalars["val/acc"]] == [5, 10, 15]
    assert [value for _, value in rates] == pytest.approx([1e-3, 5e-4, 2.5e-4])  # the rate each epoch trained with
