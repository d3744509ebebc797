"""The command line: LightningCLI over SupervisedModule and the tensor DataModules.

``python scripts/train.py [--config X.yaml] [--model.lr 0.05 ...]`` fits, then tests, then writes
``summary.json`` (final value of every logged scalar, the resolved config, wall time, status)
next to the TensorBoard events in ``<default_root_dir>/lightning_logs/version_K/``.

Config layering: ``configs/base.yaml`` (trainer-wide settings only) is always loaded; then the
``--config`` files given, or ``configs/default.yaml`` (the default experiment) when none is; every
value that neither names comes from the class's own default, as ``--help`` shows it. A config that
names no ``trainer.default_root_dir`` logs into ``runs/<its path under configs/>`` (e.g.
``runs/ci/sparse_parity``), so two configs never share a run folder by accident.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from callbacks.gaps import TrainTestGap
from datamodules.tensor import TensorDataModule
from lightning_modules.checkpoint import FINISHED, LastCheckpoint, RunRecord, find_last_checkpoint, run_status, stored_config_hash
from lightning_modules.checks import ConfigError
from lightning_modules.module import SupervisedModule

ROOT = Path(__file__).resolve().parent.parent
logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)  # the seed is in config.yaml
# build_cli passes sys.argv[1:] (behind the default experiment) as `args` on purpose.
warnings.filterwarnings("ignore", message=r".*args parameter is intended to run from within Python")
BASE_CONFIG = ROOT / "configs" / "base.yaml"
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
#: The classes a config gets when it names none (``--help`` shows them as defaults).
DEFAULT_CLASSES = {
    "model": {"class_path": "lightning_modules.module.SupervisedModule",
              "init_args": {"net": {"class_path": "lightning_modules.nets.mlp.TwoLayerMLP"}}},
    "data": {"class_path": "datamodules.synthetic.GaussianMixture"},
}
#: Settings that change where a run is logged or how it is shown, never what it computes: left out of its hash.
PRESENTATION_KEYS = ("config", "ckpt_path", "checkpoint_every_n_epochs", "trainer.default_root_dir", "trainer.logger",
                     "trainer.callbacks", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                     "trainer.enable_checkpointing", "trainer.log_every_n_steps", "trainer.accelerator")

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


def run_folder(config_files: list) -> Optional[Path]:
    """The log folder of a config that names none: ``runs/<path under configs/ without .yaml>``
    for a file in configs/, else ``runs/<file stem>``; ``None`` without a config file.

    >>> run_folder([ROOT / "configs" / "ci" / "sparse_parity.yaml"]).as_posix()
    'runs/ci/sparse_parity'
    >>> run_folder(["elsewhere/my_run.yaml"]).as_posix()
    'runs/my_run'
    """
    if not config_files:
        return None
    path = Path(str(config_files[-1])).resolve()
    try:
        name = path.relative_to(ROOT / "configs").with_suffix("")
    except ValueError:
        name = Path(path.stem)
    return Path("runs") / name


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
    >>> condense_error('Parser key "config": File does not exist: \'/x/c.yaml\'')
    "config: File does not exist: '/x/c.yaml'"
    """
    path: list[str] = []
    reason = ""
    for line in message.splitlines():
        text = line.strip().lstrip("- ").strip()
        key = re.match(r'Parser key "([^"]+)":?\s*(.*)', text)
        if key:
            path.append(key.group(1))
            if key.group(2):  # the reason on the same line, e.g. 'File does not exist: ...'
                reason = key.group(2)
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
        parser.set_defaults(DEFAULT_CLASSES)
        parser.link_arguments("data.input_dim", "model.init_args.net.init_args.input_dim", apply_on="instantiate")
        parser.link_arguments("data.output_dim", "model.init_args.net.init_args.output_dim", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self._get(self.config_init, "trainer", default={})
        derived = run_folder(self.config_init.get("config") or [])
        if not cfg.get("default_root_dir") and derived is not None:
            kwargs["default_root_dir"] = str(derived)
            self.config["trainer"]["default_root_dir"] = str(derived)  # config.yaml and summary.json say where
        root = Path(kwargs.get("default_root_dir") or cfg.get("default_root_dir") or os.getcwd())
        self.config_hash = config_hash(self.config.as_dict())
        self.resume_from, version = self.resumable_checkpoint(root)
        if cfg.get("logger") in (None, True):
            kwargs["logger"] = SummaryLogger(save_dir=str(root), version=version)
        callbacks = list(cfg.get("callbacks") or [])
        callbacks.append(RunRecord(self.config_hash))
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

    def resumable_checkpoint(self, root: Path) -> tuple[Optional[str], Optional[int]]:
        """``(checkpoint, version)`` for ``--ckpt_path``: ``last`` is the newest ``last.ckpt`` under
        ``root``, resumed in its own version folder. Checked before anything is written.

        Raises:
            ConfigError: when there is no checkpoint, when its run has finished (its summary says
                completed or diverged), or when it was written under another config (hash).
        """
        ckpt, version = self.config_init.get("ckpt_path"), None
        if ckpt is None:
            return None, None
        if ckpt == "last":
            last = find_last_checkpoint(root)
            if last is None:
                raise ConfigError(f"Expected a checkpoint to resume (--ckpt_path last) under {root / 'lightning_logs'} but found no version_*/checkpoints/last.ckpt")
            ckpt, version = str(last), int(last.parent.parent.name.split("_", 1)[1])
        if not Path(ckpt).is_file():
            raise ConfigError(f"Expected --ckpt_path to be 'last' or a checkpoint file but got {ckpt!r} (no such file)")
        stored = stored_config_hash(Path(ckpt))
        if stored is not None and stored != self.config_hash:
            raise ConfigError(f"Expected {ckpt} to be written under this config but it was written under another "
                              f"(config hash {stored}, this one {self.config_hash}); give this config its own --trainer.default_root_dir")
        status = run_status(Path(ckpt).parent.parent) if version is not None else None
        if status in FINISHED:
            raise ConfigError(f"Expected an unfinished run to resume but {Path(ckpt).parent.parent} has status {status}; "
                              f"run without --ckpt_path to start a new version under {root}")
        return ckpt, version


def with_default_experiment(args: list[str]) -> list[str]:
    """``args`` with ``--config configs/default.yaml`` in front when they name no config file.

    >>> with_default_experiment(["--model.lr", "0.1"])[1] == str(DEFAULT_CONFIG)
    True
    >>> with_default_experiment(["--config=x.yaml"])
    ['--config=x.yaml']
    """
    if any(a in ("--config", "-h", "--help") or a.startswith("--config=") for a in args):
        return list(args)  # --help shows the classes' own defaults
    return ["--config", str(DEFAULT_CONFIG), *args]


def check_config_files(args: list[str]) -> None:
    """Read and YAML-parse every ``--config`` file named in ``args``.

    Raises:
        ConfigError: naming the file, when it is missing, unreadable or not valid YAML.
    """
    files = [b for a, b in zip(args, args[1:]) if a == "--config"] + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for name in files:
        try:
            text = Path(name).read_text()
        except OSError as err:
            raise ConfigError(f"Expected --config to name a readable YAML file but got {name!r} ({err.strerror or err})") from err
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ConfigError(f"Expected --config {name} to be valid YAML but {getattr(err, 'problem', None) or err}{where}") from err


def build_cli(args: Optional[list[str]] = None) -> OverparamCLI:
    """Parse ``args`` (default: ``sys.argv[1:]``) on top of configs/base.yaml (see the module
    docstring for the layering) and instantiate everything."""
    args = with_default_experiment(sys.argv[1:] if args is None else args)
    check_config_files(args)
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
        parser_kwargs={"default_config_files": [str(BASE_CONFIG)]},
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
        config_hash=cli.config_hash,
        **extra,
    )
    if logger is not None:
        logger.finalize("success" if status == "completed" else "failed")  # flush and close the event files
    if trainer.is_global_zero:
        shown = {k: v for k, v in sorted(metrics.items()) if k.split("/")[0] in ("train", "test", "gap")}
        print(f"status: {status}" + (f" at step {model.diverged_at_step} (loss is not finite)" if status == "diverged" else ""))
        print("final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
        if status == "interrupted":
            print("resume with: --ckpt_path last (and the same config and default_root_dir)")
        print(f"logs: {log_dir}  (tensorboard --logdir {log_dir.parent})")
    return code
