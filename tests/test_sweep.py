"""scripts/sweep.py: every run exactly once in the CSV, across a kill and a restart; submitit launcher."""

import csv
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


def test_bad_grid_is_a_clear_error(tmp_path):
    result = subprocess.run([*SWEEP, "--grid", "model.lr", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "KEY=V1,V2" in result.stderr
