"""The command line: config parsing and overrides, every YAML in configs/, one end-to-end run of
the default config through scripts/train.py, and one-line errors."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from overparam.cli import build_cli
from overparam.errors import condense_error

ROOT = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]
DESIGN_TAGS = {"train/loss", "test/loss", "train/acc", "test/acc", "gap/loss", "gap/acc"}


def resolved_config(*args: str) -> dict:
    """The config that scripts/train.py would run with ``args`` (parsed, not instantiated)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        build_cli([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


def test_overrides_reach_the_nested_net_and_data_sizes_are_linked(tmp_path):
    cli = build_cli(["--model.net.width", "24", "--data.dim", "7", "--model.lr", "0.01", "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"])
    net = cli.model.net
    assert (net.width, net.input_dim, net.output_dim) == (24, 7, 1)  # input/output dims come from the data
    assert cli.model.hparams.lr == 0.01
    assert cli.datamodule.dim == 7


@pytest.mark.parametrize("config", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")))
def test_every_config_parses(config):
    cfg = resolved_config("--config", str(ROOT / config))
    written = yaml.safe_load((ROOT / config).read_text()) or {}
    for group in ("model", "data"):
        if isinstance(written.get(group), dict) and "class_path" in written[group]:
            assert cfg[group]["class_path"].endswith(written[group]["class_path"].split(".")[-1])


def test_default_run_writes_tagged_events_and_summary_and_loss_falls_tenfold(tmp_path):
    result = subprocess.run([*TRAIN, "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (version,) = (tmp_path / "lightning_logs").iterdir()
    assert str(version) in result.stdout and "train/loss=" in result.stdout

    summary = json.loads((version / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["wall_time_s"] > 0
    assert DESIGN_TAGS <= set(summary["metrics"])
    assert summary["config"]["model"]["init_args"]["net"]["class_path"].endswith("TwoLayerMLP")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(version)).Reload()
    assert DESIGN_TAGS <= set(events.Tags()["scalars"])
    train_loss = events.Scalars("train/loss")
    assert len(train_loss) >= 100  # one whole-set value per epoch
    assert summary["metrics"]["train/loss"] == pytest.approx(train_loss[-1].value, rel=1e-6)

    # Loss at initialization, computed directly from the same seeds.
    from datamodules.synthetic import GaussianMixture
    from lightning_modules import losses
    from lightning_modules.module import SupervisedModule
    from lightning_modules.nets.mlp import TwoLayerMLP

    data_args = summary["config"]["data"]["init_args"]
    data = GaussianMixture(**data_args)
    data.prepare_splits()
    net_args = {k: v for k, v in summary["config"]["model"]["init_args"]["net"]["init_args"].items() if k not in ("input_dim", "output_dim")}
    model = SupervisedModule(TwoLayerMLP(data.input_dim, output_dim=data.output_dim, **net_args), seed=summary["config"]["model"]["init_args"]["seed"])
    with torch.no_grad():
        initial = losses.mean_loss("mse", model.net(data.train.x), data.train.y).item()
    assert summary["metrics"]["train/loss"] <= initial / 10


@pytest.mark.parametrize("args, field, allowed", [(["--model.net.activation", "swish"], "activation", "relu, tanh, erf, quadratic, gelu, linear")])
def test_bad_choice_exits_nonzero_with_one_line_naming_field_and_choices(args, field, allowed, tmp_path):
    result = subprocess.run([*TRAIN, *args, "--trainer.default_root_dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0] and allowed in lines[0] and "swish" in lines[0], result.stderr
    assert not (tmp_path / "lightning_logs").exists()


def test_condense_error_keeps_path_and_reason():
    message = (
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
        "    - Problem with given class_path 'X':\n        Parser key \"net\":\n          Parser key \"width\":\n"
        "            Expected a <class 'int'>. Got value: abc\n    - Expected a <class 'NoneType'>\n  Given value type: str"
    )
    assert condense_error(message) == "model.net.width: expected an integer but got 'abc'"


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    """Full batch under DDP: each rank takes its shard and gradients are averaged, so two ranks
    follow the same trajectory as one process (up to float reduction order)."""
    common = ["--trainer.max_epochs", "5", "--trainer.enable_progress_bar", "false", "--data.n_train", "256", "--data.n_test", "128"]
    summaries = {}
    for name, extra in (("one", []), ("ddp", ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"])):
        root = tmp_path / name
        result = subprocess.run([*TRAIN, *common, *extra, "--trainer.default_root_dir", str(root)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        summaries[name] = json.loads(next(root.rglob("summary.json")).read_text())["metrics"]
    for tag in ("train/loss", "test/loss", "train/acc", "test/acc"):
        assert summaries["ddp"][tag] == pytest.approx(summaries["one"][tag], rel=1e-4), tag


def test_list_names_every_class_a_user_can_choose_and_each_short_name_resolves(capsys):
    from overparam.cli import main

    assert main(["--list"]) == 0
    listed = [line.split()[0:2] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    names = {name for name, _ in listed}
    assert {"TwoLayerMLP", "SmallConvNet", "ResNet", "MNIST", "CIFAR10", "MNIST1D", "SparseParity", "KernelDrift", "HessianSharpness"} <= names
    assert not names & {"Diagnostic", "ProbeCallback", "ImageClassification", "BasicBlock"}  # bases and parts are not choices
    for name, path in listed:
        if path.startswith("datamodules."):
            assert resolved_config("--data", name)["data"]["class_path"] == path
        elif path.startswith("lightning_modules.nets."):
            assert resolved_config("--model.net", name)["model"]["init_args"]["net"]["class_path"] == path
