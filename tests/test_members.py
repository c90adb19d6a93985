"""A fit of several members: each member is exactly the single fit of its activation and seed."""

from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from lit_activations.cli import cli_main
from lit_activations.events import read_scalars
from lit_activations.logger import TensorBoardRunLogger
from lit_activations.members import Member, expand_members, member_run_dirs
from lit_activations.model import ActivationMLP

from runs import QUIET, REPO, assert_same_curves, fit

TUTORIAL = str(REPO / "configs" / "tutorial.yaml")
# relu and sigmoid, an activation by import path, and one with arguments; seeds 3 and 4 for relu
MEMBERS = (
    "--members.activations=[sigmoid, torch.nn.Hardtanh, {name: leaky_relu, args: {negative_slope: 0.2}},"
    " {name: relu, seeds: [3, 4]}]"
)
LABELS = ["sigmoid/seed_3", "hardtanh/seed_3", "leaky_relu-negative_slope=0.2/seed_3", "relu/seed_3", "relu/seed_4"]


@pytest.fixture(scope="module")
def member_fit(tmp_path_factory):
    """One fit of five members: the tutorial configuration, shuffled, 3 epochs, a boundary image every 2."""
    logs = tmp_path_factory.mktemp("members")
    return fit("--config", TUTORIAL, "--data.shuffle=true", "--trainer.max_epochs=3", "--members.seeds=[3]", MEMBERS,
               "--summary.boundary_every_n_epochs=2", f"--trainer.logger.init_args.save_dir={logs}")  # fmt: skip


def test_each_member_equals_the_single_fit_of_its_own_config_file(member_fit, tmp_path):
    logger = member_fit.trainer.logger
    assert [m.label for m in member_fit.model.members] == LABELS
    assert [d.relative_to(logger.log_dir).as_posix() for d in logger.member_dirs] == LABELS
    fit_checkpoint = torch.load(Path(logger.log_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    for k, run in enumerate(logger.member_dirs):
        # the member's config.yaml, run as an ordinary fit, is the single fit the member must equal
        single = fit("--config", str(run / "config.yaml"), f"--trainer.logger.init_args.save_dir={tmp_path}")
        member = member_fit.model.members[k]
        assert single.model.hparams.activation == member.activation and single.trainer.logger.log_dir != str(run)
        theirs = single.model.state_dict()
        for state in (
            member_fit.model.member_state_dict(k),
            member_fit.model.member_state_dict(k, fit_checkpoint["state_dict"]),
        ):
            assert state.keys() == theirs.keys()
            for name, weight in state.items():
                torch.testing.assert_close(weight.cpu(), theirs[name], rtol=0, atol=1e-5)
        ours, alone = read_scalars(run), read_scalars(single.trainer.logger.log_dir)
        assert ours.keys() == alone.keys() and len(ours) > 40
        assert "saturation/net.7" in ours and not any(tag.endswith("net.9") for tag in ours)  # no output sigmoid
        for tag, values in alone.items():
            assert [step for step, _ in ours[tag]] == [step for step, _ in values], tag
            assert [v for _, v in ours[tag]] == pytest.approx([v for _, v in values], rel=1e-5, abs=1e-9), tag
    torch.manual_seed(3)  # and the weights did move: the equality is not that of untrained networks
    assert not torch.allclose(ActivationMLP(activation="relu").net[0].weight, member_fit.model.net[0].weight[3])


def test_each_member_run_has_the_images_histograms_and_hparams_of_a_single_run(member_fit):
    for run in member_fit.trainer.logger.member_dirs:
        events = EventAccumulator(str(run), size_guidance={"images": 0, "histograms": 0})
        events.Reload()
        tags = events.Tags()
        assert {"activation/curve", "decision_boundary"} <= set(tags["images"])
        assert [image.step for image in events.Images("decision_boundary")] == [32, 96]  # epochs 0 and 2 (the last)
        assert {"preactivation/net.1", "grad/net.0.weight"} <= set(tags["histograms"])
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
        assert len(list(run.glob("events.out.tfevents.*"))) == 1
    fit_dir = Path(member_fit.trainer.logger.log_dir)
    assert not list(fit_dir.glob("events.out.tfevents.*"))  # the fit's own directory is no run of its own
    config = yaml.safe_load((fit_dir / "config.yaml").read_text())
    assert config["members"]["seeds"] == [3] and len(config["members"]["activations"]) == 4


def test_an_exported_member_validates_and_predicts_as_its_run_says(member_fit, tmp_path):
    run = member_fit.trainer.logger.member_dirs[1]  # hardtanh, by import path
    (checkpoint,) = (run / "checkpoints").glob("epoch=*.ckpt")
    model = ActivationMLP.load_from_checkpoint(checkpoint, map_location="cpu")
    assert model.num_members == 1 and model.hparams.activation == "torch.nn.Hardtanh"
    common = ["--config", TUTORIAL, f"--ckpt_path={checkpoint}", *QUIET]  # the config as trained: accepted
    validated = cli_main(["validate", *common])
    assert validated.model.last_epoch_metrics[0]["val/acc"] == pytest.approx(read_scalars(run)["val/acc"][-1][1])
    predicting = cli_main(["predict", *common, "--data.grid_size=10", "--predictions=null"])
    (grid,) = predicting.datamodule._splits["predict"].tensors
    with torch.no_grad():
        member = member_fit.model.cpu()(grid)[1]  # the member's output inside its fit
    p_class_1 = member_fit.model.to_probabilities(member)
    torch.testing.assert_close(
        predicting.trainer.predict_loop.predictions[0], torch.stack([1 - p_class_1, p_class_1], 1)
    )


def test_a_member_fit_resumes_in_place(tmp_path):
    args = ("--data.n_samples=200", "--members.activations=[tanh, relu]", "--members.seeds=[0, 1]")
    uninterrupted = fit(*args, "--trainer.max_epochs=4", f"--trainer.logger.init_args.save_dir={tmp_path / 'a'}")
    first_half = fit(*args, "--trainer.max_epochs=2")
    resumed = fit(*args, "--trainer.max_epochs=4", "--ckpt_path=last")
    assert resumed.trainer.logger.log_dir == first_half.trainer.logger.log_dir
    for ours, theirs in zip(resumed.trainer.logger.member_dirs, uninterrupted.trainer.logger.member_dirs, strict=True):
        resumed_scalars, reference = read_scalars(ours), read_scalars(theirs)
        assert_same_curves(resumed_scalars, reference)
    assert sorted(p.name for p in (tmp_path / "logs" / "members").iterdir()) == ["version_0"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.optimizer=LBFGS"], "invalid model.optimizer LBFGS for 4 members: its update mixes parameters"),
        (
            ["--model.scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau"],
            "invalid model.scheduler ReduceLROnPlateau for 4 members: it watches one metric for all of them",
        ),
        (["--trainer.gradient_clip_val=1.0"], "invalid trainer.gradient_clip_val 1.0 for 4 members: clipping by the"),
        (
            ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/loss"],
            "invalid trainer.callbacks EarlyStopping(monitor='val/loss') for 4 members: it watches one metric",
        ),
        (["--members.seeds=[]"], "invalid members.seeds []; expected a non-empty list of integers"),
        (["--members.activations=[{name: relu, slope: 2}]"], "invalid members.activations entry {'name': 'relu',"),
        (["--members.activations=[relu, relu]"], "invalid members: relu/seed_0 appears twice"),
        (["--members.activations=[relu7]"], "unknown activation 'relu7'; choose one of: elu, gelu, identity"),
        (["--members.run_dir={activation}"], "invalid members.run_dir '{activation}': it gives several members the"),
        (["--members.run_dir={act}"], "invalid members.run_dir '{act}'; expected a path with the placeholders"),
    ],
)
def test_what_would_couple_members_or_name_them_badly_is_refused_before_anything_is_written(
    args, message, tmp_path, capsys
):
    with pytest.raises(SystemExit) as exit_info:
        fit("--members.activations=[tanh, relu]", "--members.seeds=[0, 1]", *args)
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line and "Traceback" not in last_line
    assert not (tmp_path / "logs").exists()


def test_an_element_wise_clip_and_a_time_schedule_are_accepted_for_members():
    cli = fit("--members.seeds=[0, 1]", "--trainer.gradient_clip_val=0.5", "--trainer.gradient_clip_algorithm=value",
              "--model.scheduler=StepLR", "--model.scheduler.step_size=1", "--trainer.max_epochs=1",
              "--trainer.limit_train_batches=2")  # fmt: skip
    assert cli.model.num_members == 2 and cli.trainer.global_step == 2


def test_each_members_learnable_activation_parameters_are_logged_in_its_own_run():
    cli = fit("--data.n_samples=200", "--members.activations=[prelu, relu]", "--members.seeds=[0, 1]",
              "--model.optimizer.lr=0.05", "--trainer.max_epochs=2")  # fmt: skip
    model, runs = cli.model, cli.trainer.logger.member_dirs
    for k in (0, 1):  # the two PReLU members: each its own slope per layer, as trained
        scalars = read_scalars(runs[k])
        for layer in (1, 3, 5, 7):
            block = model.net[layer].blocks[model.net[layer].block_of(k)]
            assert scalars[f"activation_param/net.{layer}.weight"][-1][1] == pytest.approx(block.weight.item())
    assert (
        read_scalars(runs[0])["activation_param/net.1.weight"] != read_scalars(runs[1])["activation_param/net.1.weight"]
    )
    assert not any(tag.startswith("activation_param/") for tag in read_scalars(runs[2]))  # relu: nothing to learn


class SharedAndOwnMLP(ActivationMLP):
    """A subclass logging as the class docstring says: one value for all members, and one value per member."""

    def on_train_epoch_end(self):
        super().on_train_epoch_end()
        self.log("train/shared", 7.0)
        self.log_members({"train/own": torch.arange(self.num_members)})


def test_self_log_writes_one_value_to_every_members_run_and_log_members_each_its_own(tmp_path):
    specs = [("relu", None, 0), ("tanh", None, 1), ("elu", None, 2)]
    model = SharedAndOwnMLP(members=[Member(*spec).as_dict() for spec in specs])
    logger = TensorBoardRunLogger(tmp_path, name="fit", members=["relu", "tanh", "elu"], default_hp_metric=False)
    x = torch.randn(32, 2)
    data = DataLoader(TensorDataset(x, (x.norm(dim=1) > 1).float()), batch_size=16)
    trainer = Trainer(max_epochs=2, logger=logger, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, log_every_n_steps=1)  # fmt: skip
    trainer.fit(model, data, data)
    for k, run in enumerate(logger.member_dirs):
        scalars = read_scalars(run)
        assert [value for _, value in scalars["train/shared"]] == [7.0, 7.0]  # one value, in every member's run
        assert scalars["train/own"] == [(2, k), (4, k)]  # member k's own, at the end of each epoch (2 steps each)
        assert [step for step, _ in scalars["train/own"]] == [step for step, _ in scalars["train/loss"]]
        assert model.last_epoch_metrics[k]["train/own"] == k
    assert not list(Path(logger.log_dir).glob("events.out.tfevents.*"))  # nothing went to the fit's own directory
    assert "train/shared" in trainer.callback_metrics and "train/own" not in trainer.callback_metrics


def test_the_grid_expands_activation_major_with_each_entrys_own_seeds():
    members = expand_members("relu", None, ["tanh", {"name": "elu", "args": {"alpha": 2.0}, "seeds": [7]}], [0, 1])
    assert members == [Member("tanh", None, 0), Member("tanh", None, 1), Member("elu", {"alpha": 2.0}, 7)]
    assert expand_members("relu", {"negative_slope": 1}, None, [5]) == [Member("relu", {"negative_slope": 1}, 5)]
    assert expand_members("relu", None, None, None) is None
    assert member_run_dirs(members, "/study/x-{activation}/s{seed}")[2] == "/study/x-elu-alpha=2.0/s7"
    assert member_run_dirs([Member("tanh"), Member("elu")]) == ["tanh", "elu"]  # the fit's own seed: no seed level


def test_the_run_logger_of_members_used_directly_writes_hparams_and_metrics_to_every_members_run(tmp_path):
    """Outside the CLI (``default_hp_metric`` on, as TensorBoardLogger's default): each member's run gets both."""
    logger = TensorBoardRunLogger(tmp_path, name="fit", members=["a", "b"])
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"x": 2.0}, step=3)
    logger.finalize("success")
    for member in ("a", "b"):
        assert read_scalars(tmp_path / "fit" / "version_0" / member) == {"hp_metric": [(0, -1.0)], "x": [(3, 2.0)]}
