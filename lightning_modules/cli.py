"""The command line: LightningCLI over SupervisedModule and the tensor DataModules.

``python scripts/train.py [--config X.yaml] [--model.lr 0.05 ...]`` fits, then tests, then writes
``summary.json`` (final value of every logged scalar, the resolved config, wall time, status)
next to the TensorBoard events in ``<default_root_dir>/lightning_logs/version_K/``.
"""

from __future__ import annotations

import json
import logging
import re
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from callbacks.gaps import TrainTestGap
from datamodules.tensor import TensorDataModule
from lightning_modules.checkpoint import LastCheckpoint, find_last_checkpoint
from lightning_modules.module import SupervisedModule

ROOT = Path(__file__).resolve().parent.parent
logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)  # the seed is in config.yaml
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"

#: Exit codes of scripts/train.py (SIGTERM and SIGINT follow the shell's 128 + signal number).
EXIT_OK, EXIT_BAD_CONFIG, EXIT_DIVERGED, EXIT_SIGINT, EXIT_SIGTERM = 0, 2, 3, 130, 143


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
            "sharpness: lambda_max vs 2/lr": ["Multiline", ["sharpness/lambda_max", "sharpness/two_over_lr"]],
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
        params = {k: v for k, v in flatten(config).items() if isinstance(v, (bool, int, float, str)) and not k.startswith("trainer.callbacks")}
        finals = {f"{self.HPARAM_PREFIX}{k}": v for k, v in metrics.items() if math.isfinite(v)}
        self.log_hyperparams(params, finals)


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


def condense_error(message: str) -> str:
    r"""One line from jsonargparse's nested error report: the dotted field path and the deepest reason.

    >>> condense_error('Parser key "model":\n  Problem with given class_path \'M\':\n    Parser key "width":\n      Expected a <class \'int\'>. Got value: x')
    "model.width: Expected a <class 'int'>. Got value: x"
    """
    path: list[str] = []
    reason = ""
    for line in message.splitlines():
        text = line.strip().lstrip("- ").strip()
        key = re.match(r'Parser key "([^"]+)"', text)
        if key:
            path.append(key.group(1))
        elif text and not re.match(r"(Problem with given class_path|Does not validate|Subtypes|Errors|Given value|Expected a <class 'NoneType'>)", text):
            reason = reason if reason.startswith("Expected argument") else text
    literal = re.match(r"Expected a typing.Literal\[(.*)\]\. Got value: (.*)", reason)
    if literal:
        allowed = ", ".join(v.strip().strip("'") for v in literal.group(1).split(","))
        reason = f"expected one of {allowed} but got {literal.group(2)!r}"
    field = ".".join(dict.fromkeys(".".join(path).split(".")))
    return f"{field}: {reason}" if field else reason or message.strip().splitlines()[0]


class OneLineErrorParser(LightningArgumentParser):
    """Reports a bad configuration as one line on stderr and exits with code 2."""

    def error(self, message: str, ex: Optional[Exception] = None):  # noqa: D102
        print(f"error: {condense_error(message)}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)


class OverparamCLI(LightningCLI):
    """LightningCLI with the data's sizes linked into the net, a TensorBoard logger that keeps
    final values, a rich progress bar, the train/test-gap callback and a ``--ckpt_path`` option."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                            help="Checkpoint to resume fit from; 'last' resumes the latest run under default_root_dir in its own folder.")
        parser.add_argument("--checkpoint_every_n_epochs", type=int, default=1,
                            help="Save checkpoints/last.ckpt every N epochs (0: only at the end and on SIGTERM/Ctrl-C).")
        parser.link_arguments("data.input_dim", "model.init_args.net.init_args.input_dim", apply_on="instantiate")
        parser.link_arguments("data.output_dim", "model.init_args.net.init_args.output_dim", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self._get(self.config_init, "trainer", default={})
        root = Path(cfg.get("default_root_dir") or os.getcwd())
        version = None
        self.resume_from = self.config_init.get("ckpt_path")
        if self.resume_from == "last":
            last = find_last_checkpoint(root)
            if last is None:
                raise ValueError(f"Expected a checkpoint to resume (--ckpt_path last) under {root / 'lightning_logs'} but found no version_*/checkpoints/last.ckpt")
            self.resume_from, version = str(last), int(last.parent.parent.name.split("_", 1)[1])
        if cfg.get("logger") in (None, True):
            kwargs["logger"] = SummaryLogger(save_dir=str(root), version=version)
        callbacks = list(cfg.get("callbacks") or [])
        if cfg.get("enable_checkpointing", True) is not False and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks.append(LastCheckpoint(every_n_epochs=self.config_init.get("checkpoint_every_n_epochs", 1)))
            kwargs["enable_checkpointing"] = False  # LastCheckpoint replaces Lightning's default ModelCheckpoint
        has_bar = any(isinstance(c, ProgressBar) for c in callbacks)
        if cfg.get("enable_progress_bar", True) is not False and not has_bar:
            callbacks.append(RichProgressBar())
        if not any(isinstance(c, TrainTestGap) for c in callbacks):
            callbacks.append(TrainTestGap())
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)


def build_cli(args: Optional[list[str]] = None) -> OverparamCLI:
    """Parse ``args`` (default: ``sys.argv``) on top of configs/default.yaml and instantiate everything."""
    return OverparamCLI(
        SupervisedModule,
        TensorDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=args,
        parser_class=OneLineErrorParser,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_config_files": [str(DEFAULT_CONFIG)]},
    )


def main(args: Optional[list[str]] = None) -> int:
    """Fit, test, write summary.json, print the final metrics. Returns the process exit code."""
    start = time.perf_counter()
    try:
        cli = build_cli(args)
        if hasattr(cli.datamodule, "prepare_splits"):
            cli.datamodule.prepare_splits()  # data errors (sizes, files) now, before any log is written
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {condense_error(str(err))}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    status, code = "completed", EXIT_OK
    if isinstance(trainer.logger, SummaryLogger):
        trainer.logger.write_layout()
    error = None
    try:
        trainer.fit(model, datamodule=data, ckpt_path=cli.resume_from)
    except SIGTERMException:  # preempted: LastCheckpoint has saved the state
        status, code = "interrupted", EXIT_SIGTERM
    except (ValueError, FileNotFoundError) as err:  # a setting that only fails once training starts
        status, code, error = "failed", EXIT_BAD_CONFIG, condense_error(str(err))
        print(f"error: {error}", file=sys.stderr)
    except SystemExit:  # Lightning turns Ctrl-C into exit(1) after its graceful shutdown
        if not trainer.interrupted:
            raise
        status, code = "interrupted", EXIT_SIGINT
    if model.diverged_at_step is not None:
        status, code = "diverged", EXIT_DIVERGED
    elif status == "completed":
        trainer.test(model, datamodule=data, verbose=False)
    logger = trainer.logger
    metrics = dict(getattr(logger, "last", {}))
    if isinstance(logger, SummaryLogger):
        logger.log_hparams_summary(cli.config.as_dict(), metrics)
    log_dir = Path(logger.log_dir) if logger is not None else Path(trainer.default_root_dir)
    extra = {"diverged_at_step": model.diverged_at_step} if status == "diverged" else {}
    if error is not None:
        extra["error"] = error
    write_summary(
        log_dir / "summary.json",
        metrics,
        cli.config.as_dict(),
        time.perf_counter() - start,
        status,
        global_step=trainer.global_step,
        epochs=trainer.current_epoch,
        **extra,
    )
    if trainer.is_global_zero:
        shown = {k: v for k, v in sorted(metrics.items()) if k.split("/")[0] in ("train", "test", "gap")}
        print(f"status: {status}" + (f" at step {model.diverged_at_step} (loss is not finite)" if status == "diverged" else ""))
        print("final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
        if status == "interrupted":
            print("resume with: --ckpt_path last (and the same config and default_root_dir)")
        print(f"logs: {log_dir}  (tensorboard --logdir {log_dir.parent})")
    return code
