"""Nothing lost: divergence stops with its status and the last finite checkpoint; SIGTERM and Ctrl-C
save, and an interrupted-then-resumed run ends bit-identical to an uninterrupted one, its diagnostics'
probe sets and initial kernel included; runs are deterministic."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from train_process import train_process

SMALL = [
    "--trainer.enable_progress_bar",
    "false",
    "--data.n_train",
    "96",
    "--data.n_test",
    "64",
    "--data.batch_size",
    "16",
    "--model.net.width",
    "32",
    "--trainer.max_epochs",
    "4",
]


def train(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``scripts/train.py SMALL --trainer.default_root_dir root args`` in a process of its own (forked, preloaded)."""
    return train_process([*SMALL, "--trainer.default_root_dir", str(root), *args])


def summary(root: Path) -> dict:
    return json.loads((root / "lightning_logs" / "version_0" / "summary.json").read_text())


def checkpoint(root: Path) -> dict:
    return torch.load(root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def weights(root: Path) -> dict:
    return checkpoint(root)["state_dict"]


def callback_state(root: Path, name: str) -> dict:
    """The state the callback class ``name`` keeps in the run's last.ckpt."""
    (state,) = [v for k, v in checkpoint(root)["callbacks"].items() if k.startswith(name + "{")]
    return state


# Diagnostics on probe subsets (40 of the 96 training samples), measured every epoch: a resumed run must
# keep measuring on the same probes and against the same initial kernel and weights.
DIAGNOSTICS = [
    "--trainer.callbacks",
    "[{class_path: KernelDrift, init_args: {probe_size: 40}}, {class_path: HessianSharpness, "
    "init_args: {probe_size: 40}}, {class_path: Flatness, init_args: {probe_size: 40, n_samples: 4}}]",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The root of one uninterrupted SMALL run with DIAGNOSTICS."""
    root = tmp_path_factory.mktemp("full")
    result = train(root, *DIAGNOSTICS)
    assert result.returncode == 0, result.stderr[-1000:]
    return root


def test_divergence_stops_with_status_logs_and_last_finite_checkpoint(tmp_path):
    """Full-batch GD with η = 100 (NTK parameterization, momentum 0.9): the loss grows ~10⁴× per step from
    step 2 and first overflows at step 10 (8.8e34 at step 9; the next value, ~8.5e38, is 2.5× past float32's
    largest, 3.4e38, so rounding cannot move the step).
    The run must stop at exactly that step, and its last.ckpt (saved every epoch) must hold the weights
    after the 10 updates that came before it: finite, trained, not the initial ones."""
    from datamodules.synthetic import GaussianMixture
    from lightning_modules.module import SupervisedModule
    from lightning_modules.nets.mlp import TwoLayerMLP

    result = train(
        tmp_path, "--model.lr", "100", "--data.batch_size", "null", "--trainer.max_epochs", "50", "--checkpoint_every_n_epochs", "1"
    )
    assert result.returncode == 3, result.stderr[-1000:]
    assert "diverged" in result.stdout
    info = summary(tmp_path)

    # The same run replayed in this process: the step of the first non-finite loss and the weights before it.
    config = info["config"]
    data = GaussianMixture(**config["data"]["init_args"])
    data.prepare_splits()
    net_args = {k: v for k, v in config["model"]["init_args"]["net"]["init_args"].items() if k not in ("input_dim", "output_dim")}
    model = SupervisedModule(
        TwoLayerMLP(data.input_dim, output_dim=data.output_dim, **net_args),
        **{k: v for k, v in config["model"]["init_args"].items() if k != "net"},
    )
    initial = {k: v.clone() for k, v in model.net.state_dict().items()}
    optimizer = model.configure_optimizers_now()
    for step in range(50):
        loss = model.loss_fn(model.net(data.train.x), data.train.y)
        if not torch.isfinite(loss):
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert step == 10

    assert info["status"] == "diverged" and info["diverged_at_step"] == step and info["global_step"] == step
    assert list((tmp_path / "lightning_logs" / "version_0").glob("events.out.tfevents.*"))
    saved = checkpoint(tmp_path)
    assert saved["global_step"] == step
    state = saved["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())
    for name, value in model.net.state_dict().items():
        torch.testing.assert_close(state[f"net.{name}"], value, rtol=1e-4, atol=0)  # float32, the same operations
    assert not torch.equal(state["net.fc1.weight"], initial["fc1.weight"])


@pytest.mark.parametrize("signal_name, code, epoch, batch", [("SIGTERM", 143, 2, 2), ("SIGINT", 130, 1, 4)])
def test_signal_saves_and_resume_is_bit_identical_to_an_uninterrupted_run(uninterrupted, tmp_path, signal_name, code, epoch, batch):
    """SIGTERM (preemption) and Ctrl-C mid-epoch: exit 143 / 130, status interrupted, last.ckpt at the
    interrupted step; ``--ckpt_path last`` completes the run bit-identical to the uninterrupted one."""
    full, cut = uninterrupted, tmp_path
    stopped = train(
        cut,
        *DIAGNOSTICS,
        "--trainer.callbacks+=tests.signal_helper.SignalAt",
        "--trainer.callbacks.epoch",
        str(epoch),
        "--trainer.callbacks.batch",
        str(batch),
        "--trainer.callbacks.signal_name",
        signal_name,
    )
    assert stopped.returncode == code, stopped.stderr[-1000:]
    assert summary(cut)["status"] == "interrupted"
    assert checkpoint(cut)["global_step"] == 6 * epoch + batch + 1  # 6 batches per epoch: saved right after the signal's batch
    assert not torch.equal(weights(cut)["net.fc1.weight"], weights(full)["net.fc1.weight"])
    # The probe sets (40 of 96 samples) and K_0, W_0 are in the checkpoint, as the uninterrupted run has them.
    for name in ("KernelDrift", "HessianSharpness", "Flatness"):
        indices = callback_state(cut, name)["indices"]
        assert len(indices) == 40 and torch.equal(indices, callback_state(full, name)["indices"]), name
    kernel_cut, kernel_full = callback_state(cut, "KernelDrift"), callback_state(full, "KernelDrift")
    assert torch.equal(kernel_cut["kernel_0"], kernel_full["kernel_0"])
    assert all(torch.equal(w, kernel_full["weights_0"][n]) for n, w in kernel_cut["weights_0"].items())

    resumed = train(cut, *DIAGNOSTICS, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-1000:]
    assert summary(cut)["status"] == "completed" and summary(cut)["global_step"] == summary(full)["global_step"] == 24
    a, b = weights(full), weights(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("KernelDrift", "HessianSharpness", "Flatness"):
        assert torch.equal(callback_state(cut, name)["indices"], callback_state(full, name)["indices"]), name
    assert torch.equal(callback_state(cut, "KernelDrift")["kernel_0"], kernel_full["kernel_0"])
    # Every value of the summary, the diagnostics measured before the interruption included (at step 0
    # and at the end of each epoch before it), equals the uninterrupted run's (the final kernel/drift, a
    # distance from K_0, among them): only wall times may differ.
    untimed = lambda run: {k: v for k, v in summary(run)["metrics"].items() if not k.endswith("_seconds")}  # noqa: E731
    measured = {"kernel/drift", "sharpness/lambda_max", "flatness/perturbed_loss_increase", "weights/rel_change/fc1.weight"}
    assert measured <= set(untimed(cut))
    assert untimed(cut) == untimed(full)


def test_same_seed_same_summary_other_seed_different(uninterrupted, tmp_path):
    runs = {
        name: train(tmp_path / name, *DIAGNOSTICS, *args) for name, args in (("b", []), ("c", ["--model.seed", "1", "--data.seed", "1"]))
    }
    assert all(r.returncode == 0 for r in runs.values())
    roots = {"a": uninterrupted, "b": tmp_path / "b", "c": tmp_path / "c"}
    metrics = {name: {k: v for k, v in summary(root)["metrics"].items() if not k.startswith("diag/")} for name, root in roots.items()}
    assert metrics["a"] == metrics["b"]  # every logged value but the wall times of the diagnostics
    assert metrics["a"]["train/loss"] != metrics["c"]["train/loss"]


def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path):
    result = train(tmp_path, "--ckpt_path", "last")
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "last.ckpt" in lines[0] and str(tmp_path) in lines[0]
