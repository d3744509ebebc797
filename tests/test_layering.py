"""Config layering: configs/base.yaml under every config, configs/default.yaml only when no config is
given, and the classes' own defaults for everything a config does not name."""

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from experiment_runner import run_config
from test_cli import resolved_config
from test_vision_data import TEST_COUNTS, TRAIN_COUNTS, write_mnist

from lightning_modules.module import SupervisedModule
from lightning_modules.nets.mlp import TwoLayerMLP
from overparam.cli import build_cli
from overparam.paths import CONFIGS, DEFAULT_CONFIG

WIDTH_AND_DATA = (
    "model:\n  init_args:\n    net:\n      init_args:\n        width: 64\ndata:\n  class_path: datamodules.synthetic.SparseParity\n"
)


def default_of(cls, name: str):
    return inspect.signature(cls.__init__).parameters[name].default


def test_a_config_naming_a_width_and_a_data_class_gets_every_other_value_from_the_classes(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(WIDTH_AND_DATA)
    config = resolved_config("--config", str(path))
    model, net = config["model"]["init_args"], config["model"]["init_args"]["net"]["init_args"]
    default = yaml.safe_load(DEFAULT_CONFIG.read_text())["model"]["init_args"]
    assert default["momentum"] != default_of(SupervisedModule, "momentum")  # so the check below can fail
    for name in ("momentum", "lr", "optimizer", "loss", "weight_decay"):
        assert model[name] == default_of(SupervisedModule, name), name
    assert net["width"] == 64 and net["parameterization"] == default_of(TwoLayerMLP, "parameterization")
    from datamodules.synthetic import SparseParity

    for name in ("n_train", "n_test", "batch_size"):
        assert config["data"]["init_args"][name] == default_of(SparseParity, name), name
    assert config["trainer"]["callbacks"] is None  # the default experiment's diagnostics stay with it
    assert config["trainer"]["num_sanity_val_steps"] == 0  # configs/base.yaml is under every config


def test_no_config_runs_the_default_experiment():
    config = resolved_config()
    assert config["model"]["init_args"]["momentum"] == 0.9 and config["data"]["init_args"]["n_train"] == 2048
    assert [c["class_path"].rsplit(".", 1)[-1] for c in config["trainer"]["callbacks"]] == ["HessianSharpness", "KernelDrift"]


@pytest.mark.parametrize(
    "path",
    sorted(p.relative_to(CONFIGS).as_posix() for p in (CONFIGS / "nets").glob("*.yaml"))
    + sorted(p.relative_to(CONFIGS).as_posix() for p in (CONFIGS / "data").glob("*.yaml")),
)
def test_net_and_data_configs_run_no_diagnostic_they_do_not_list(path):
    config = resolved_config("--config", str(CONFIGS / path))
    listed = ((yaml.safe_load((CONFIGS / path).read_text()) or {}).get("trainer") or {}).get("callbacks")
    assert (config["trainer"]["callbacks"] or []) == (listed or [])


def test_a_config_naming_other_classes_gets_nothing_of_the_default_classes(tmp_path):
    """jsonargparse keeps the arguments two classes share when a class is switched; the default net and
    data are therefore only put in when nothing names one, so a config's MNIST never gets
    GaussianMixture's sizes and its SmallConvNet never gets TwoLayerMLP's width."""
    from datamodules.vision import MNIST
    from lightning_modules.nets.cnn import SmallConvNet

    path = tmp_path / "cnn.yaml"
    path.write_text("model:\n  init_args:\n    net: lightning_modules.nets.cnn.SmallConvNet\ndata: datamodules.vision.MNIST\n")
    config = resolved_config("--config", str(path))
    assert config["data"]["init_args"]["n_train"] == default_of(MNIST, "n_train")  # None: every image
    assert config["model"]["init_args"]["net"]["init_args"]["width"] == default_of(SmallConvNet, "width")


def test_an_mnist_config_without_sizes_uses_every_image_of_its_files(tmp_path):
    write_mnist(tmp_path)
    config = tmp_path / "mnist.yaml"
    config.write_text(f"data:\n  class_path: datamodules.vision.MNIST\n  init_args:\n    data_dir: {tmp_path}\n")
    cli = build_cli(["--config", str(config), "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "runs")])
    cli.datamodule.prepare_splits()
    assert len(cli.datamodule.train.x) == sum(TRAIN_COUNTS) and len(cli.datamodule.test.x) == sum(TEST_COUNTS)


def test_the_issue_parity_config_written_without_momentum_learns(tmp_path):
    """The (20, 3) sparse-parity run of the layering issue: width 512, hinge, SGD, lr 0.1, weight decay
    0.01, batch 32, 60 epochs, momentum and parameterization not named. Under the default experiment's
    momentum 0.9 and NTK parameterization it ended at chance (test accuracy 0.51); with the classes'
    defaults it reaches 1.0 (measured: 1.0 on seed 0). Asserting > 0.95 leaves room for another torch."""
    torch.set_num_threads(1)
    config = Path(tmp_path / "parity.yaml")
    config.write_text(
        "data:\n  class_path: datamodules.synthetic.SparseParity\n  init_args:\n    n: 20\n    k: 3\n    batch_size: 32\n"
        "model:\n  init_args:\n    net:\n      init_args:\n        width: 512\n    loss: hinge\n    lr: 0.1\n    weight_decay: 0.01\n"
        "trainer:\n  max_epochs: 60\n"
    )
    summary = run_config(str(config), tmp_path / "runs")
    assert summary["config"]["model"]["init_args"]["momentum"] == 0.0
    assert summary["metrics"]["test/acc"] > 0.95, summary["metrics"]
