"""The command line: config parsing and overrides, every YAML in configs/, one end-to-end run of
the default config through scripts/train.py, and one-line errors."""

import contextlib
import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from train_process import train_process

from overparam.cli import build_cli, check_before_fit
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
    cli = build_cli(
        [
            "--model.net.width",
            "24",
            "--data.dim",
            "7",
            "--model.lr",
            "0.01",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger",
            "false",
        ]
    )
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
    result = subprocess.run(
        [*TRAIN, "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"],
        capture_output=True,
        text=True,
        timeout=300,
    )
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
    net_args = {
        k: v for k, v in summary["config"]["model"]["init_args"]["net"]["init_args"].items() if k not in ("input_dim", "output_dim")
    }
    model = SupervisedModule(
        TwoLayerMLP(data.input_dim, output_dim=data.output_dim, **net_args), seed=summary["config"]["model"]["init_args"]["seed"]
    )
    with torch.no_grad():
        initial = losses.mean_loss("mse", model.net(data.train.x), data.train.y).item()
    assert summary["metrics"]["train/loss"] <= initial / 10


@pytest.mark.parametrize(
    "args, field, allowed", [(["--model.net.activation", "swish"], "activation", "relu, tanh, erf, quadratic, gelu, linear")]
)
def test_bad_choice_exits_nonzero_with_one_line_naming_field_and_choices(args, field, allowed, tmp_path):
    result = train_process([*args, "--trainer.default_root_dir", str(tmp_path)])
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0] and allowed in lines[0] and "swish" in lines[0], result.stderr
    assert not (tmp_path / "lightning_logs").exists()


def test_condense_error_keeps_path_and_reason():
    message = (
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
        '    - Problem with given class_path \'X\':\n        Parser key "net":\n          Parser key "width":\n'
        "            Expected a <class 'int'>. Got value: abc\n    - Expected a <class 'NoneType'>\n  Given value type: str"
    )
    assert condense_error(message) == "model.net.width: expected an integer but got 'abc'"


def test_ddp_ranks_train_disjoint_shards_and_match_a_replay_of_their_batches(tmp_path):
    """Two CPU processes under DDP, with an uneven n (101 train, 37 test) and minibatches of 16 per rank.

    - Each rank trains, every epoch, on its own shard exactly once: the shards are disjoint, equal in
      size (50, so both ranks take the same 4 steps per epoch) and cover the training set but the
      n mod 2 = 1 remainder; the evaluation shards are disjoint and cover every sample.
    - The final weights equal a one-process replay in which each step averages the two ranks' batch
      gradients: a rank that trained on the whole set, or on another rank's samples, ends elsewhere.
    - The whole-set metrics of the final weights, reduced over uneven shards (51 + 50, 19 + 18), and
      the diagnostics (on the same probe set in both ranks) equal their one-process values."""
    from callbacks.kernel import KernelDrift
    from callbacks.sgd_noise import gradient_noise_trace
    from callbacks.sharpness import hessian_top_eigs
    from datamodules.synthetic import GaussianMixture
    from lightning_modules import losses
    from lightning_modules.module import SupervisedModule
    from lightning_modules.nets.mlp import TwoLayerMLP

    args = [
        "--trainer.max_epochs",
        "3",
        "--trainer.enable_progress_bar",
        "false",
        "--data.n_train",
        "101",
        "--data.n_test",
        "37",
        "--data.batch_size",
        "16",
        "--model.net.width",
        "32",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.callbacks+=GradientNoise",
        "--trainer.callbacks+=tests.batch_recorder.BatchRecorder",
        "--checkpoint_every_n_epochs",
        "0",
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    result = subprocess.run([*TRAIN, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (version,) = (tmp_path / "lightning_logs").iterdir()
    summary = json.loads((version / "summary.json").read_text())
    ranks = [json.loads((tmp_path / f"batches_rank{r}.json").read_text()) for r in (0, 1)]

    # Shards: every epoch each rank sees its 50 samples once, in 4 steps (16, 16, 16, 2), at the same steps.
    assert [r["rank"] for r in ranks] == [0, 1] and summary["global_step"] == 12
    shards = []
    for rank in ranks:
        assert [s["step"] for s in rank["steps"]] == list(range(12))
        for epoch in range(3):
            seen = [i for s in rank["steps"] if s["epoch"] == epoch for i in s["indices"]]
            assert [len(s["indices"]) for s in rank["steps"] if s["epoch"] == epoch] == [16, 16, 16, 2]
            assert len(set(seen)) == len(seen) == 50  # each sample of the shard exactly once
            shards.append(frozenset(seen))
    assert len(set(shards[:3])) == len(set(shards[3:])) == 1  # a rank keeps its shard across epochs
    assert not shards[0] & shards[3] and shards[0] | shards[3] == set(range(100))  # sample 100 is the dropped remainder
    for split, n in (("train_eval", 101), ("test", 37)):
        a, b = ranks[0][split], ranks[1][split]
        assert not set(a) & set(b) and sorted(a + b) == list(range(n)), split

    # The trajectory: one process replays the recorded batches, averaging the ranks' gradients as DDP does.
    config = summary["config"]
    data = GaussianMixture(**config["data"]["init_args"])
    data.prepare_splits()
    x, y, x_test, y_test = data.train.x, data.train.y, data.test.x, data.test.y
    net_args = {k: v for k, v in config["model"]["init_args"]["net"]["init_args"].items() if k not in ("input_dim", "output_dim")}
    model = SupervisedModule(
        TwoLayerMLP(data.input_dim, output_dim=data.output_dim, **net_args),
        **{k: v for k, v in config["model"]["init_args"].items() if k != "net"},
    )
    initial = copy.deepcopy(model.net)
    optimizer = model.configure_optimizers_now()
    for both in zip(*(rank["steps"] for rank in ranks)):
        optimizer.zero_grad()
        sum(model.loss_fn(model.net(x[s["indices"]]), y[s["indices"]]) for s in both).div(2).backward()
        optimizer.step()
    saved = torch.load(version / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    replayed = {f"net.{k}": v for k, v in model.net.state_dict().items()}
    assert replayed.keys() <= saved.keys()
    for key, value in replayed.items():  # float32; only the order of the gradient reduction may differ
        torch.testing.assert_close(saved[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.equal(saved["net.fc1.weight"], initial.fc1.weight)

    # Whole-set metrics and diagnostics of the final weights, as one process computes them.
    net, metrics = model.net, summary["metrics"]
    with torch.no_grad():
        out, out_test = net(x), net(x_test)
        assert metrics["train/loss"] == pytest.approx(losses.mean_loss("mse", out, y).item(), rel=1e-5)
        assert metrics["test/loss"] == pytest.approx(losses.mean_loss("mse", out_test, y_test).item(), rel=1e-5)
        assert metrics["train/acc"] == pytest.approx(losses.correct(out, y).float().mean().item(), abs=1e-6)
        assert metrics["test/acc"] == pytest.approx(losses.correct(out_test, y_test).float().mean().item(), abs=1e-6)
    drift = KernelDrift(probe_size=256)  # the default config's probe: 256 > 101, the whole set on both ranks
    drift.measure(initial, x, y)
    expected = drift.measure(net, x, y)
    for tag in ("kernel/drift", "kernel/lambda_min", "weights/rel_change/fc1.weight"):
        assert metrics[tag] == pytest.approx(expected[tag], rel=1e-4), tag
    # Lanczos to tol 1e-3; measured on one rank's shard (50 samples) the value would be several % off.
    assert metrics["sharpness/lambda_max"] == pytest.approx(float(hessian_top_eigs(net, model.loss_fn, x, y)[0][0]), rel=1e-2)
    # Two ranks of 16 average into one step of B = 32: the noise and η/B of that batch size.
    assert metrics["sgd/temperature"] == pytest.approx(config["model"]["init_args"]["lr"] / 32)
    noise = gradient_noise_trace(net, model.loss_fn, x, y, 32, 8, torch.Generator().manual_seed(0))
    assert metrics["sgd/noise_trace"] == pytest.approx(noise, rel=1e-4)


@pytest.mark.parametrize("config", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs" / "experiments").glob("*.yaml")))
def test_every_experiment_config_builds_its_model_data_and_diagnostics_and_they_fit(config, tmp_path):
    """Each full-size experiment, instantiated as scripts/train.py would (no training): its data are built,
    the checks that need model, data and callbacks together pass, and the net maps a batch of the data
    to outputs of the data's shape with a finite loss."""
    cli = build_cli(
        [
            "--config",
            str(ROOT / config),
            "--trainer.logger",
            "false",
            "--trainer.enable_checkpointing",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    model, data = cli.model, cli.datamodule
    data.prepare_splits()
    written = yaml.safe_load((ROOT / config).read_text())
    assert type(data).__name__ == written["data"]["class_path"].rsplit(".", 1)[1]
    assert type(model.net).__name__ == written["model"]["init_args"]["net"]["class_path"].rsplit(".", 1)[1]
    n_train, n_test = written["data"]["init_args"].get("n_train"), written["data"]["init_args"].get("n_test")
    assert (len(data.train), len(data.test)) == (n_train or len(data.train), n_test or len(data.test))
    check_before_fit(
        model,
        data,
        cli.trainer.callbacks,
        {"accumulate_grad_batches": cli.trainer.accumulate_grad_batches, "precision": cli.trainer.precision},
    )
    listed = [c["class_path"].rsplit(".", 1)[1] for c in (written.get("trainer") or {}).get("callbacks") or []]
    assert listed == [type(c).__name__ for c in cli.trainer.callbacks if type(c).__name__ in listed]
    x, y = data.train.x[:8], data.train.y[:8]
    with torch.no_grad():
        out = model(x)
    assert out.shape == (8, data.output_dim) and torch.isfinite(model.loss_fn(out, y))
