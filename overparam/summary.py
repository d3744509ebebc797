"""What a run leaves behind: TensorBoard events with the last value of every scalar remembered,
``summary.json`` (final metrics, resolved config, its hash, wall time, status), and the config hash
that names a run's identity (a resume and a sweep compare it)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import torch
from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

#: Settings that change where a run is logged or how it is shown, never what it computes: left out of its hash.
PRESENTATION_KEYS = (
    "config",
    "ckpt_path",
    "checkpoint_every_n_epochs",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.enable_checkpointing",
    "trainer.log_every_n_steps",
    "trainer.accelerator",
)


class SummaryLogger(TensorBoardLogger):
    """TensorBoardLogger that also remembers the last value (and step) of every scalar it writes."""

    def __init__(self, save_dir: str = ".", name: str = "lightning_logs", version: Optional[int | str] = None, **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir, name=name, version=version, default_hp_metric=False, **kwargs)
        self.last: dict[str, float] = {}
        self.last_step: dict[str, int] = {}

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        super().log_metrics(metrics, step)
        for name, value in metrics.items():
            if name.startswith(self.HPARAM_PREFIX):
                continue
            self.last[name] = float(value.item() if isinstance(value, torch.Tensor) else value)
            self.last_step[name] = -1 if step is None else int(step)

    HPARAM_PREFIX = "hparam/"
    #: TensorBoard "Custom Scalars" charts: several tags on one set of axes.
    LAYOUT = {
        "overview": {
            "loss: train vs test": ["Multiline", ["train/loss", "test/loss"]],
            "accuracy: train vs test": ["Multiline", ["train/acc", "test/acc"]],
            "sharpness: lambda_max vs stability threshold": ["Multiline", ["sharpness/lambda_max", "sharpness/stability_threshold"]],
            "kernel": ["Multiline", ["kernel/drift", "kernel/alignment"]],
            "alignment angles": ["Multiline", ["alignment/.*"]],
        }
    }

    @rank_zero_only
    def write_layout(self) -> None:
        self.experiment.add_custom_scalars(self.LAYOUT)

    @rank_zero_only
    def log_hparams_summary(self, config: dict, metrics: dict[str, float]) -> None:
        """Record the run's scalar settings and final metrics for TensorBoard's HParams dashboard
        (metrics under ``hparam/<tag>``, so the training curves keep their own tags)."""
        params = {
            k: v for k, v in flatten(config).items() if isinstance(v, (bool, int, float, str)) and not k.startswith("trainer.callbacks")
        }
        finals = {f"{self.HPARAM_PREFIX}{k}": v for k, v in metrics.items() if math.isfinite(v)}
        self.log_hyperparams(params, finals)
        save_hparams_to_yaml(Path(self.log_dir) / self.NAME_HPARAMS_FILE, self.hparams)  # Lightning writes it only once, empty


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"init_args": {"b": 1}}}`` -> ``{"a.b": 1}`` (``init_args`` levels dropped, as on the command line).

    >>> flatten({"model": {"class_path": "M", "init_args": {"lr": 0.1, "net": {"init_args": {"width": 8}}}}})
    {'model.class_path': 'M', 'model.lr': 0.1, 'model.net.width': 8}
    """
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = prefix if key == "init_args" else (f"{prefix}.{key}" if prefix else str(key))
        out.update(flatten(value, name))
    return out


def config_hash(config: dict) -> str:
    """A 12-hex-digit hash of everything in a resolved config that determines the run's trajectory.

    Covers the model, the data, the seeds and the trainer's training settings; leaves out
    ``PRESENTATION_KEYS`` (log folder, progress bar, callbacks: diagnostics never change training).

    >>> a = {"model": {"init_args": {"lr": 0.1}}, "trainer": {"default_root_dir": "runs/a"}}
    >>> b = {"model": {"init_args": {"lr": 0.1}}, "trainer": {"default_root_dir": "runs/b"}}
    >>> config_hash(a) == config_hash(b), config_hash(a) == config_hash({"model": {"init_args": {"lr": 0.2}}})
    (True, False)
    """
    flat = {k: v for k, v in flatten(config).items() if not any(k == p or k.startswith(p + ".") for p in PRESENTATION_KEYS)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _jsonable(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


@rank_zero_only
def write_summary(path: Path, metrics: dict[str, float], config: dict, wall_time_s: float, status: str, **extra: Any) -> None:
    """Write ``summary.json`` atomically (a temporary file renamed into place)."""
    summary = {
        "status": status,
        "wall_time_s": round(wall_time_s, 3),
        "metrics": {k: _jsonable(v) for k, v in sorted(metrics.items())},
        **extra,
        "config": config,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, path)
