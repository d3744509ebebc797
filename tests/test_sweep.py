"""scripts/sweep.py: every run exactly once in the CSV, across a kill and a restart; submitit launcher."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SWEEP = [sys.executable, str(ROOT / "scripts" / "sweep.py")]
TINY = ["--", "--trainer.max_epochs", "2", "--data.n_train", "64", "--data.n_test", "32", "--checkpoint_every_n_epochs", "0"]


def rows(out: Path) -> list[dict]:
    with (out / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_killed_sweep_restarts_and_completes_every_run_exactly_once(tmp_path):
    out = tmp_path / "sweep"
    args = [*SWEEP, "--grid", "model.net.width=8,16,24", "--seeds", "1", "--out", str(out), *TINY]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not ((out / "results.csv").exists() and len(rows(out)) >= 1):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the run in flight
    proc.wait()
    done_before = {r["run_id"] for r in rows(out)}
    assert 1 <= len(done_before) < 3

    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    final = rows(out)
    assert sorted(r["run_id"] for r in final) == sorted(f"model.net.width={w}__seed=0" for w in (8, 16, 24))
    assert all(r["status"] == "completed" and r["train/loss"] for r in final)
    assert {r["model.net.width"] for r in final} == {"8", "16", "24"}

    again = subprocess.run(args, capture_output=True, text=True, timeout=120)  # nothing left: skips everything
    assert "0 runs to go" in again.stdout and len(rows(out)) == 3


def test_submitit_local_launcher_runs_the_grid(tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "sweep"
    result = subprocess.run([*SWEEP, "--grid", "model.lr=0.1", "--seeds", "2", "--launcher", "submitit_local", "--out", str(out), *TINY],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    final = rows(out)
    assert sorted(r["seed"] for r in final) == ["0", "1"] and all(r["status"] == "completed" for r in final)
    assert final[0]["train/loss"] != final[1]["train/loss"]  # different seeds, different runs


TINY_CONFIG = """\
# Two full-batch GD steps of a width-8 net on 32 points, no diagnostics: a sweep run in a few seconds.
seed_everything: 0
checkpoint_every_n_epochs: 0
trainer:
  max_epochs: 2
  callbacks: []
model:
  class_path: lightning_modules.module.SupervisedModule
  init_args:
    net:
      class_path: lightning_modules.nets.mlp.TwoLayerMLP
      init_args:
        width: 8
    lr: 0.1
data:
  class_path: datamodules.synthetic.GaussianMixture
  init_args:
    dim: 4
    n_train: 32
    n_test: 16
"""


def sweep(out: Path, config: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [*SWEEP, "--config", str(config), "--grid", "model.net.width=8", "--out", str(out), *(["--", *extra] if extra else [])]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def attempts(out: Path) -> dict[Path, int]:
    """Every run attempt under ``out`` (version folder) and the mtime of its summary.json."""
    return {p.parent: p.stat().st_mtime_ns for p in out.glob("runs/*/*/lightning_logs/version_*/summary.json")}


@pytest.fixture(scope="module")
def first_sweep(tmp_path_factory):
    """One finished sweep of one tiny run: (out, config, its CSV rows)."""
    root = tmp_path_factory.mktemp("sweep")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out = root / "out"
    sweep(out, config)
    return out, config, rows(out)


def test_rerun_with_another_extra_argument_starts_new_runs_and_keeps_the_old_rows_apart(first_sweep):
    out, config, before = first_sweep
    (old,) = before
    assert old["status"] == "completed" and old["config"] == str(config) and len(old["config_hash"]) == 12
    assert Path(old["log_dir"]).is_relative_to(out / "runs" / old["config_hash"] / old["run_id"])

    result = sweep(out, config, "--model.lr", "0.05")
    assert "1 runs to go" in result.stdout, result.stdout  # not "0 runs to go" with the old numbers
    new = [r for r in rows(out) if r["config_hash"] != old["config_hash"]]
    assert len(new) == 1 and new[0]["run_id"] == old["run_id"] and new[0]["status"] == "completed"
    assert Path(new[0]["log_dir"]).is_relative_to(out / "runs" / new[0]["config_hash"])
    assert new[0]["train/loss"] != old["train/loss"]  # the new run's own numbers
    assert [r for r in rows(out) if r["config_hash"] == old["config_hash"]] == [old]  # the old row, untouched


def test_deleted_csv_is_rebuilt_from_the_runs_summaries_without_training_again(first_sweep):
    out, config, before = first_sweep
    trained = attempts(out)
    (out / "results.csv").unlink()
    result = sweep(out, config)
    assert "0 runs to go" in result.stdout and "1 rows rebuilt" in result.stdout, result.stdout
    assert attempts(out) == trained  # no new version folder, no summary.json rewritten
    assert [r for r in rows(out) if r["config_hash"] == before[0]["config_hash"]] == before


def test_the_config_hash_follows_content_and_arguments_and_only_interrupted_runs_resume(tmp_path):
    from overparam import sweep as sweep_script

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(TINY_CONFIG)
    b.write_text(TINY_CONFIG)
    digest = lambda config, *extra: sweep_script.sweep_identity(str(config), list(extra))["config_hash"]  # noqa: E731
    assert digest(a) == digest(b)  # the content counts, not the file name
    assert digest(a, "--model.lr", "0.05") != digest(a) != digest(a, "--model.lr", "0.5")
    b.write_text(TINY_CONFIG.replace("lr: 0.1", "lr: 0.2"))
    assert digest(b) != digest(a)
    assert digest(a, "--data", str(b)) != digest(a, "--data", str(a))  # files named by extra arguments count too

    def attempt(name: str, status, checkpoint: bool) -> Path:
        version = tmp_path / name / "lightning_logs" / "version_0"
        (version / "checkpoints").mkdir(parents=True)
        if status is not None:
            (version / "summary.json").write_text(json.dumps({"status": status, "wall_time_s": 1.0, "metrics": {}}))
        if checkpoint:
            (version / "checkpoints" / "last.ckpt").write_bytes(b"")
        return tmp_path / name

    cases = {("completed", True): (True, False), ("diverged", True): (True, False), ("interrupted", True): (False, True),
             (None, True): (False, True), ("failed", True): (False, False), ("interrupted", False): (False, False)}
    for i, ((status, checkpoint), (finished, resumed)) in enumerate(cases.items()):
        root = attempt(f"run{i}", status, checkpoint)
        assert (sweep_script.finished_summary(root) is not None, sweep_script.interrupted(root)) == (finished, resumed), (status, checkpoint)


def test_bad_grid_is_a_clear_error(tmp_path):
    result = subprocess.run([*SWEEP, "--grid", "model.lr", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "KEY=V1,V2" in result.stderr
