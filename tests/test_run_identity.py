"""Results are never mixed up: every config logs into its own folder, ``--ckpt_path last`` resumes
only a checkpoint of the same config and never reopens a finished run, and a resumed run's summary
keeps what was measured before the checkpoint."""

import contextlib
import io
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from quiet_trainer import quiet_trainer

from overparam.checkpoint import RunRecord
from overparam.cli import main, run_folder
from overparam.paths import ROOT
from overparam.summary import SummaryLogger, config_hash

SMALL = [
    "--trainer.enable_progress_bar",
    "false",
    "--data.n_train",
    "64",
    "--data.n_test",
    "32",
    "--model.net.width",
    "16",
    "--trainer.max_epochs",
    "3",
    "--trainer.callbacks",
    "[]",
]
PARITY = [
    "--config",
    str(ROOT / "configs" / "ci" / "sparse_parity.yaml"),
    "--trainer.enable_progress_bar",
    "false",
    "--data.n_train",
    "64",
    "--data.n_test",
    "32",
    "--trainer.max_epochs",
    "2",
]


def run(*args: str) -> tuple[int, str]:
    """``main(args)`` in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, err.getvalue()


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_configs_that_name_no_folder_get_their_own():
    """No two YAML files under configs/ log into one folder (a named one or the derived runs/<path>)."""
    roots = {}
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        written = ((yaml.safe_load(path.read_text()) or {}).get("trainer") or {}).get("default_root_dir")
        if path.name == "base.yaml":
            assert written is None  # base.yaml is under every config
            continue
        roots.setdefault(written or run_folder([path]).as_posix(), []).append(path.relative_to(ROOT).as_posix())
    shared = {root: paths for root, paths in roots.items() if len(paths) > 1}
    assert not shared, shared
    assert run_folder([ROOT / "configs" / "ci" / "sparse_parity.yaml"]).as_posix() == "runs/ci/sparse_parity"


def test_config_hash_follows_what_determines_the_run():
    base = {
        "model": {"init_args": {"lr": 0.1, "net": {"init_args": {"width": 8}}}},
        "data": {"init_args": {"seed": 0}},
        "trainer": {"max_epochs": 3, "default_root_dir": "runs/a", "enable_progress_bar": True},
        "ckpt_path": None,
    }
    moved = {**base, "trainer": {**base["trainer"], "default_root_dir": "elsewhere", "enable_progress_bar": False}, "ckpt_path": "last"}
    assert config_hash(base) == config_hash(moved)  # where it logs and how it shows progress: same run
    for change in (
        {"model": {"init_args": {"lr": 0.2, "net": {"init_args": {"width": 8}}}}},
        {"model": {"init_args": {"lr": 0.1, "net": {"init_args": {"width": 9}}}}},
        {"data": {"init_args": {"seed": 1}}},
        {"trainer": {**base["trainer"], "max_epochs": 4}},
    ):
        assert config_hash({**base, **change}) != config_hash(base), change


def test_finished_run_refuses_resume_and_keeps_every_file(tmp_path):
    assert run(*SMALL, "--trainer.default_root_dir", str(tmp_path))[0] == 0
    before = snapshot(tmp_path)
    summary = json.loads((tmp_path / "lightning_logs" / "version_0" / "summary.json").read_text())
    assert summary["status"] == "completed" and {"train/loss", "test/loss", "train/acc"} <= set(summary["metrics"])

    code, err = run(*SMALL, "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", "last")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "completed" in lines[0] and "version_0" in lines[0], err
    assert snapshot(tmp_path) == before


def test_another_config_cannot_resume_a_checkpoint_and_touches_no_file(tmp_path):
    """The default config and the sparse-parity CI twin in one folder, each run cut short (no summary,
    as after a hard kill): neither resumes the other's checkpoint, and neither run's files change;
    each still resumes its own."""
    default, parity = tmp_path / "default", tmp_path / "parity"
    assert run(*SMALL, "--trainer.default_root_dir", str(default))[0] == 0
    assert run(*PARITY, "--trainer.default_root_dir", str(parity))[0] == 0
    for root in (default, parity):
        (root / "lightning_logs" / "version_0" / "summary.json").unlink()  # unfinished, as after a kill
    for args, root in ((PARITY, default), (SMALL, parity)):
        before = snapshot(root)
        code, err = run(*args, "--trainer.default_root_dir", str(root), "--ckpt_path", "last")
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "another" in lines[0] and "last.ckpt" in lines[0], err
        assert snapshot(root) == before
    code, err = run(*SMALL, "--trainer.default_root_dir", str(default), "--ckpt_path", "last")
    assert code == 0, err
    assert json.loads((default / "lightning_logs" / "version_0" / "summary.json").read_text())["status"] == "completed"


class LogOnceAtStart(pl.Callback):
    """Logs ``probe/once`` at the first step only: after a resume, only the checkpoint can bring it back."""

    def on_train_start(self, trainer, pl_module):
        if trainer.global_step == 0:
            trainer.logger.log_metrics({"probe/once": 7.0}, step=0)


@pytest.fixture
def tiny():
    from datamodules.synthetic import GaussianMixture
    from lightning_modules.module import SupervisedModule
    from lightning_modules.nets.mlp import TwoLayerMLP

    def make():
        data = GaussianMixture(dim=4, n_train=32, n_test=16, seed=0)
        return SupervisedModule(TwoLayerMLP(4, 8, 1), seed=0), data

    return make


def fit(root: Path, tiny, max_epochs: int, ckpt_path=None) -> SummaryLogger:
    torch.set_num_threads(1)
    logger = SummaryLogger(save_dir=str(root), version=0)
    model, data = tiny()
    trainer = quiet_trainer(max_epochs=max_epochs, logger=logger, callbacks=[RunRecord("h"), LogOnceAtStart()], default_root_dir=str(root))
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    trainer.save_checkpoint(str(root / "state.ckpt"))
    return logger


def test_run_record_restores_the_last_values_into_the_logger(tmp_path, tiny):
    first = fit(tmp_path, tiny, 2)
    assert first.last["probe/once"] == 7.0
    resumed = fit(tmp_path, tiny, 4, ckpt_path=str(tmp_path / "state.ckpt"))
    assert resumed.last["probe/once"] == 7.0  # logged before the checkpoint only
    assert resumed.last_step["probe/once"] == 0
    assert torch.load(tmp_path / "state.ckpt", weights_only=False)[RunRecord.KEY]["config_hash"] == "h"
