"""Nothing lost: divergence stops with its status and the last finite checkpoint; SIGTERM saves and
an interrupted-then-resumed run ends bit-identical to an uninterrupted one; runs are deterministic."""

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]
SMALL = ["--trainer.enable_progress_bar", "false", "--data.n_train", "96", "--data.n_test", "64", "--data.batch_size", "16",
         "--model.net.width", "32", "--trainer.max_epochs", "4"]


def train(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TRAIN, *SMALL, "--trainer.default_root_dir", str(root), *args], capture_output=True, text=True, timeout=300)


def summary(root: Path) -> dict:
    return json.loads((root / "lightning_logs" / "version_0" / "summary.json").read_text())


def weights(root: Path) -> dict:
    ckpt = torch.load(root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


def test_divergence_stops_with_status_logs_and_last_finite_checkpoint(tmp_path):
    result = train(tmp_path, "--model.lr", "1e6", "--data.batch_size", "null", "--trainer.max_epochs", "50", "--checkpoint_every_n_epochs", "1")
    assert result.returncode == 3, result.stderr[-1000:]
    assert "diverged" in result.stdout
    info = summary(tmp_path)
    assert info["status"] == "diverged" and info["diverged_at_step"] < 50
    assert list((tmp_path / "lightning_logs" / "version_0").glob("events.out.tfevents.*"))
    state = weights(tmp_path)
    assert all(torch.isfinite(v).all() for v in state.values())


def test_sigterm_saves_and_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    full = train(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-1000:]

    cut = tmp_path / "cut"
    stopped = train(cut, "--trainer.callbacks+=tests.signal_helper.SignalAt", "--trainer.callbacks.epoch", "2", "--trainer.callbacks.batch", "2")
    assert stopped.returncode == 143, stopped.stderr[-1000:]
    assert summary(cut)["status"] == "interrupted"
    assert not torch.equal(weights(cut)["net.fc1.weight"], weights(tmp_path / "full")["net.fc1.weight"])

    resumed = train(cut, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-1000:]
    assert summary(cut)["status"] == "completed" and summary(cut)["global_step"] == summary(tmp_path / "full")["global_step"]
    a, b = weights(tmp_path / "full"), weights(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Every value of the summary, the diagnostics measured before the interruption included (the
    # default config's KernelDrift and HessianSharpness measure at step 0), equals the uninterrupted
    # run's: only wall times may differ.
    untimed = lambda run: {k: v for k, v in summary(run)["metrics"].items() if not k.endswith("_seconds")}  # noqa: E731
    assert {"kernel/drift", "sharpness/lambda_max", "weights/rel_change/fc1.weight"} <= set(untimed(cut))
    assert untimed(cut) == untimed(tmp_path / "full")


def test_same_seed_same_summary_other_seed_different(tmp_path):
    runs = {name: train(tmp_path / name, *args) for name, args in
            (("a", []), ("b", []), ("c", ["--model.seed", "1", "--data.seed", "1"]))}
    assert all(r.returncode == 0 for r in runs.values())
    metrics = {name: {k: v for k, v in summary(tmp_path / name)["metrics"].items() if not k.startswith("diag/")} for name in runs}
    assert metrics["a"] == metrics["b"]  # every logged value but the wall times of the diagnostics
    assert metrics["a"]["train/loss"] != metrics["c"]["train/loss"]


def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path):
    result = train(tmp_path, "--ckpt_path", "last")
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "last.ckpt" in lines[0] and str(tmp_path) in lines[0]
