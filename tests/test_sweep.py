"""scripts/sweep.py: every run exactly once in the CSV, across a kill and a restart; submitit launcher."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SWEEP = [sys.executable, str(ROOT / "scripts" / "sweep.py")]
TINY = ["--", "--trainer.max_epochs", "2", "--data.n_train", "64", "--data.n_test", "32", "--checkpoint_every_n_epochs", "0"]


def rows(out: Path) -> list[dict]:
    with (out / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_killed_sweep_resumes_the_cut_run_from_its_checkpoint_and_completes_every_run_once(tmp_path):
    """A node failure: the sweep and its run in flight are SIGKILLed together, mid-epoch, after that run
    saved last.ckpt. Re-running the command keeps the finished run, resumes the cut one from its
    checkpoint in its own folder, and runs the one not started.

    The grid varies ``trainer.log_every_n_steps``, which changes how a run is shown, not what it computes:
    the three runs are one computation, so the killed-and-resumed run must end with the other two's
    numbers exactly (its kernel drift too, measured against the K_0 its checkpoint kept)."""
    out, marker = tmp_path / "sweep", tmp_path / "killed"
    extra = [
        "--",
        "--trainer.max_epochs",
        "4",
        "--data.n_train",
        "64",
        "--data.n_test",
        "32",
        "--data.batch_size",
        "16",
        "--model.net.width",
        "16",
        "--checkpoint_every_n_epochs",
        "1",
        "--trainer.callbacks+=tests.signal_helper.KillGroupOnce",
        "--trainer.callbacks.epoch",
        "2",
        "--trainer.callbacks.batch",
        "1",
        "--trainer.callbacks.run",
        "log_every_n_steps=2__",
        "--trainer.callbacks.marker",
        str(marker),
    ]
    args = [*SWEEP, "--grid", "trainer.log_every_n_steps=1,2,3", "--seeds", "1", "--out", str(out), *extra]
    run_ids = [f"trainer.log_every_n_steps={k}__seed=0" for k in (1, 2, 3)]
    killed = subprocess.run(args, capture_output=True, text=True, timeout=300, start_new_session=True)  # its own process group
    assert killed.returncode == -signal.SIGKILL and marker.exists(), killed.stdout + killed.stderr
    assert [r["run_id"] for r in rows(out)] == run_ids[:1]  # the first run finished; the second was cut at step 10 of 16
    (runs,) = (out / "runs").iterdir()
    cut = runs / run_ids[1] / "lightning_logs"
    assert [p.name for p in cut.iterdir()] == ["version_0"] and (cut / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert not (cut / "version_0" / "summary.json").exists() and not (runs / run_ids[2]).exists()

    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 of 3 runs finished" in result.stdout and "2 runs to go" in result.stdout, result.stdout
    final = rows(out)
    assert sorted(r["run_id"] for r in final) == run_ids and all(r["status"] == "completed" for r in final)
    assert [p.name for p in cut.iterdir()] == ["version_0"]  # resumed in its folder: a fresh start would add version_1
    summaries = [json.loads((runs / rid / "lightning_logs" / "version_0" / "summary.json").read_text()) for rid in run_ids]
    untimed = [{k: v for k, v in s["metrics"].items() if not k.endswith("_seconds")} for s in summaries]
    assert {"train/loss", "test/acc", "kernel/drift", "sharpness/lambda_max"} <= set(untimed[1])
    assert untimed[1] == untimed[0] == untimed[2] and [s["global_step"] for s in summaries] == [16, 16, 16]

    again = subprocess.run(args, capture_output=True, text=True, timeout=120)  # nothing left: skips everything
    assert "0 runs to go" in again.stdout and len(rows(out)) == 3


def test_submitit_local_launcher_runs_the_grid(tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "sweep"
    result = subprocess.run(
        [*SWEEP, "--grid", "model.lr=0.1", "--seeds", "2", "--launcher", "submitit_local", "--out", str(out), *TINY],
        capture_output=True,
        text=True,
        timeout=300,
    )
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

    cases = {
        ("completed", True): (True, False),
        ("diverged", True): (True, False),
        ("interrupted", True): (False, True),
        (None, True): (False, True),
        ("failed", True): (False, False),
        ("interrupted", False): (False, False),
    }
    for i, ((status, checkpoint), (finished, resumed)) in enumerate(cases.items()):
        root = attempt(f"run{i}", status, checkpoint)
        assert (sweep_script.finished_summary(root) is not None, sweep_script.interrupted(root)) == (finished, resumed), (
            status,
            checkpoint,
        )


def test_bad_grid_is_a_clear_error(tmp_path):
    result = subprocess.run([*SWEEP, "--grid", "model.lr", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "KEY=V1,V2" in result.stderr


def test_zipped_keys_move_together_and_cross_the_grid(tmp_path, capsys):
    from overparam import sweep as sweep_script

    runs = sweep_script.runs_of(
        {"model.net.activation": ["relu", "tanh"]}, [0, 1], {"model.net.width": ["8", "16"], "model.lr": ["0.8", "1.6"]}
    )
    points = {(p["model.net.activation"], p["model.net.width"], p["model.lr"]) for _, p, _ in runs}
    assert points == {(a, w, lr) for a in ("relu", "tanh") for w, lr in (("8", "0.8"), ("16", "1.6"))}
    assert len(runs) == 8 and len({rid for rid, _, _ in runs}) == 8  # 2 activations x 2 zipped points x 2 seeds, each its own folder
    for bad in (["--zip", "model.net.width=8,16", "--zip", "model.lr=0.1"], ["--grid", "model.lr=0.1", "--zip", "model.lr=0.2"]):
        with pytest.raises(SystemExit) as exit_info:
            sweep_script.main([*bad, "--out", str(tmp_path)])
        assert exit_info.value.code == 2 and "model.lr" in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()


def test_forked_runs_give_the_csv_values_of_separate_train_py_runs(tmp_path):
    """The default launcher forks each run from a server that imported the suite once; every metric in
    its CSV equals that of a separate ``python scripts/train.py`` run of the same point and seed."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out = tmp_path / "sweep"
    extra = ["--trainer.max_epochs", "3", "--data.batch_size", "8"]  # minibatches: the data seed orders them
    result = subprocess.run(
        [*SWEEP, "--config", str(config), "--grid", "model.net.width=12", "--seeds", "2", "--jobs", "2", "--out", str(out), "--", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "status: completed" not in result.stdout  # each run's output is in its own train.log
    swept = rows(out)
    assert len(swept) == 2 and all("status: completed" in (Path(r["log_dir"]).parents[1] / "train.log").read_text() for r in swept)

    threads = str(max(1, (os.cpu_count() or 1) // 2))  # what the sweep gives each of its 2 jobs
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    procs = {}
    for r in swept:  # both at once, as the sweep ran them; width 12 is not the config's 8: the grid value counts
        root, seed = tmp_path / "separate" / r["run_id"], r["seed"]
        procs[r["run_id"]] = (
            root,
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "scripts" / "train.py"),
                    "--config",
                    str(config),
                    "--model.net.width",
                    "12",
                    "--seed_everything",
                    seed,
                    "--model.seed",
                    seed,
                    "--data.seed",
                    seed,
                    "--trainer.default_root_dir",
                    str(root),
                    "--trainer.enable_progress_bar",
                    "false",
                    *extra,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
            ),
        )
    for r in swept:
        root, proc = procs[r["run_id"]]
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
        expected = json.loads((root / "lightning_logs" / "version_0" / "summary.json").read_text())
        metrics = {k: v for k, v in expected["metrics"].items() if not k.endswith("_seconds")}  # wall times differ
        assert len(metrics) >= 6 and r["status"] == expected["status"] == "completed" and r["returncode"] == "0"
        assert {k: float(r[k]) for k in metrics} == metrics, r["run_id"]
    assert swept[0]["train/loss"] != swept[1]["train/loss"]  # two seeds, two runs


CRASHES = '''\
"""A callback that ends a run badly: killed by SIGKILL when max_epochs is 2, a bug (exception) when it is 3."""
import os
import signal

from pytorch_lightning import Callback


class Crash(Callback):
    def on_train_start(self, trainer, pl_module):
        if trainer.max_epochs == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        if trainer.max_epochs == 3:
            raise RuntimeError("deliberate bug")
'''


def test_a_run_whose_process_dies_or_raises_is_failed_and_the_sweep_goes_on(tmp_path):
    (tmp_path / "crashes.py").write_text(CRASHES)  # class paths resolve from the working directory
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    result = subprocess.run(
        [
            *SWEEP,
            "--config",
            str(config),
            "--grid",
            "trainer.max_epochs=1,2,3",
            "--jobs",
            "2",
            "--out",
            "out",
            "--",
            "--trainer.callbacks+",
            "crashes.Crash",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # not every run finished
    by_epochs = {r["trainer.max_epochs"]: r for r in rows(tmp_path / "out")}
    assert by_epochs["1"]["status"] == "completed" and by_epochs["1"]["returncode"] == "0"
    # Killed by SIGKILL: -9, or 255 where multiprocessing's fork server could not report the signal
    # (popen_forkserver's fallback when the status pipe closes first; seen once under load).
    assert by_epochs["2"]["status"] == "failed" and by_epochs["2"]["returncode"] in (str(-signal.SIGKILL), "255")
    assert by_epochs["3"]["status"] == "failed" and by_epochs["3"]["returncode"] == "1"
    assert "RuntimeError: deliberate bug" in (tmp_path / by_epochs["3"]["log_dir"]).read_text()  # the traceback, in the run's log


def test_the_sweep_process_itself_imports_no_torch():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, overparam.sweep; print('torch' in sys.modules)"], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stdout + result.stderr  # only the fork server and the runs do


def test_a_forked_ddp_run_starts_its_other_rank_as_train_py(tmp_path):
    """Lightning starts ranks > 0 by re-running the command line: in a forked run that must be
    scripts/train.py with the run's arguments, not the sweep (which would run again inside the run)."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out = tmp_path / "sweep"
    result = subprocess.run(
        [
            *SWEEP,
            "--config",
            str(config),
            "--grid",
            "model.net.width=8",
            "--out",
            str(out),
            "--",
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = rows(out)
    log = (Path(row["log_dir"]).parents[1] / "train.log").read_text()
    assert row["status"] == "completed" and "GLOBAL_RANK: 1" in log and "runs to go" not in log, log


def test_ensemble_sweep_writes_a_row_per_member_that_matches_its_own_run(tmp_path, capsys):
    """``--seeds 3 --ensemble``: one run of ``--model.ensemble 3``, three rows (seeds 0, 1, 2) with each member's
    own metrics and gaps; member 0 (model and data seed 0) matches a plain run of seed 0 to float tolerance;
    with the CSV deleted, the rows come back from the run's summary.json without training again."""
    from overparam import sweep as sweep_script

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out = tmp_path / "sweep"
    extra = ["--", "--trainer.max_epochs", "3", "--data.batch_size", "8"]
    for seeds in (["--seeds", "3", "--ensemble"], ["--seeds", "1"]):
        result = subprocess.run(
            [*SWEEP, "--config", str(config), "--grid", "model.net.width=12", *seeds, "--out", str(out), *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    table = {r["run_id"]: r for r in rows(out)}
    members = [table[f"model.net.width=12__seed={k}__ensemble=3"] for k in range(3)]
    (summary_path,) = out.glob("runs/*/model.net.width=12__ensemble=3/lightning_logs/version_0/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["config"]["model"]["init_args"]["ensemble"] == 3 and summary["config"]["data"]["init_args"]["seed"] == 0
    for k, row in enumerate(members):
        assert row["seed"] == str(k) and row["status"] == "completed"
        for tag in ("train/loss", "test/loss", "train/acc", "test/acc"):
            assert float(row[tag]) == summary["metrics"][f"ensemble/{k}/{tag}"]
        assert float(row["gap/loss"]) == pytest.approx(float(row["test/loss"]) - float(row["train/loss"]))
        assert not any(c.startswith("ensemble/") and row[c] for c in row)
    assert len({row["train/loss"] for row in members}) == 3  # three initializations
    plain = table["model.net.width=12__seed=0"]
    for tag in ("train/loss", "test/loss", "train/acc", "test/acc"):
        assert float(members[0][tag]) == pytest.approx(float(plain[tag]), rel=1e-4, abs=1e-6), tag

    (out / "results.csv").unlink()
    assert (
        sweep_script.main(
            ["--config", str(config), "--grid", "model.net.width=12", "--seeds", "3", "--ensemble", "--out", str(out), *extra]
        )
        == 0
    )
    assert "(1 rows rebuilt from their summary.json); 0 runs to go" in capsys.readouterr().out
    assert {r["run_id"]: r["train/loss"] for r in rows(out)} == {r: table[r]["train/loss"] for r in table if r.endswith("__ensemble=3")}
