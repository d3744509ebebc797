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

import importlib
import inspect
import logging
import os
import pkgutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import yaml
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, ProgressBar, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException
from torch import nn

from callbacks.gaps import TrainTestGap
from datamodules.tensor import TensorDataModule
from lightning_modules.checks import ConfigError
from lightning_modules.module import SupervisedModule
from overparam.checkpoint import CtrlCAsSigterm, LastCheckpoint, RunRecord, find_last_checkpoint, stored_config_hash
from overparam.errors import condense_error
from overparam.lean_step import use_lean_step
from overparam.paths import BASE_CONFIG, CONFIGS, DEFAULT_CONFIG
from overparam.profiler import NullProfiler
from overparam.status import EXIT_BAD_CONFIG, EXIT_DIVERGED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, FINISHED, run_status
from overparam.summary import SummaryLogger, config_hash, write_summary

# stderr is for problems only: Lightning's notices (accelerator found, logger tips, "max_epochs
# reached", checkpoint loading defaults) are facts the run's own output and config already state.
for _name in (
    "lightning_fabric.utilities.seed",
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "pytorch_lightning.trainer.connectors.checkpoint_connector",
    "pytorch_lightning.accelerators.cuda",
):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # raised inside Lightning
# build_cli passes sys.argv[1:] (behind the default experiment) as `args` on purpose.
warnings.filterwarnings("ignore", message=r".*args parameter is intended to run from within Python")
#: The classes a config gets when it names none (``--help`` shows them as defaults).
DEFAULT_CLASSES = {"model": {"class_path": "lightning_modules.module.SupervisedModule"}}
#: The net and data a config gets when neither it nor the command line names one. They are put in front of the
#: arguments only then: a class set as a parser default and switched later would pass its defaults for the
#: arguments both classes share (jsonargparse keeps them), e.g. GaussianMixture's n_train to MNIST.
DEFAULT_NET, DEFAULT_DATA = "lightning_modules.nets.mlp.TwoLayerMLP", "datamodules.synthetic.GaussianMixture"


def run_folder(config_files: list) -> Optional[Path]:
    """The log folder of a config that names none: ``runs/<path under configs/ without .yaml>``
    for a file in configs/, else ``runs/<file stem>``; ``None`` without a config file.

    >>> run_folder([CONFIGS / "ci" / "sparse_parity.yaml"]).as_posix()
    'runs/ci/sparse_parity'
    >>> run_folder(["elsewhere/my_run.yaml"]).as_posix()
    'runs/my_run'
    """
    if not config_files:
        return None
    path = Path(str(config_files[-1])).resolve()
    try:
        name = path.relative_to(CONFIGS).with_suffix("")
    except ValueError:
        name = Path(path.stem)
    return Path("runs") / name


class SuiteProgressBar(RichProgressBar):
    """Lightning's rich bar without what is not true of these runs: no ``v_num`` (the version is in the
    log path), and no speed column when an epoch is one full-batch step (it would read 0.00 it/s);
    the latest whole-set ``train/loss`` is shown instead."""

    def configure_columns(self, trainer: Trainer) -> list:
        columns = super().configure_columns(trainer)
        if getattr(trainer, "num_training_batches", 0) == 1:
            columns = [c for c in columns if type(c).__name__ != "ProcessingSpeedColumn"]
        return columns

    def get_metrics(self, trainer: Trainer, pl_module: Any) -> dict:
        metrics = {k: v for k, v in super().get_metrics(trainer, pl_module).items() if k != "v_num"}
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            metrics["train/loss"] = f"{float(loss):.4g}"
        return metrics


SUITE_PACKAGES = ("lightning_modules.nets", "datamodules", "callbacks")


def import_suite() -> dict[str, type]:
    """Import every module of the suite's nets, data and callbacks, so that short class names
    (``--data MNIST``, ``--model.net SmallConvNet``) resolve; returns ``{name: class}`` of them."""
    classes = {}
    for package_name in SUITE_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__, package_name + "."):
            module = importlib.import_module(info.name)
            classes.update(
                {
                    name: obj
                    for name, obj in vars(module).items()
                    if inspect.isclass(obj) and obj.__module__ == module.__name__ and not name.startswith("_")
                }
            )
    return classes


CLASS_OPTIONS = ("--data", "--model.net", "--trainer.callbacks", "--trainer.callbacks+")


def expand_short_names(args: list[str], classes: dict[str, type]) -> list[str]:
    """``--data MNIST`` -> ``--data datamodules.vision.MNIST``: a bare name of the suite's own classes
    given to a class option becomes its full path (torch and Lightning have classes of the same
    name, e.g. ``ResNet``, which jsonargparse alone could not tell apart).

    >>> class ResNet: ...
    >>> ResNet.__module__ = "lightning_modules.nets.resnet"
    >>> expand_short_names(["--model.net", "ResNet", "--trainer.callbacks+=ResNet", "--model.lr", "ResNet"], {"ResNet": ResNet})
    ['--model.net', 'lightning_modules.nets.resnet.ResNet', '--trainer.callbacks+=lightning_modules.nets.resnet.ResNet', '--model.lr', 'ResNet']
    """
    out = list(args)
    for i, arg in enumerate(out):
        option, sep, value = arg.partition("=")
        if option in CLASS_OPTIONS and sep and value in classes:
            out[i] = f"{option}={classes[value].__module__}.{value}"
        elif arg in CLASS_OPTIONS and i + 1 < len(out) and out[i + 1] in classes:
            out[i + 1] = f"{classes[out[i + 1]].__module__}.{out[i + 1]}"
    return out


def option_choices() -> dict[str, list[str]]:
    """The names each option group accepts, for "did you mean" (see overparam.errors)."""
    classes = import_suite()

    def params(*types: type) -> list[str]:
        return [name for t in types for name in inspect.signature(t.__init__).parameters if name not in ("self", "args", "kwargs")]

    nets = [c for c in classes.values() if issubclass(c, nn.Module) and c.__module__.startswith("lightning_modules.nets")]
    data = [c for c in classes.values() if issubclass(c, TensorDataModule)]
    return {
        "model": params(SupervisedModule),
        "model.net": params(*nets),
        "data": params(*data),
        "trainer": params(Trainer),
        "": ["config", "ckpt_path", "checkpoint_every_n_epochs", "seed_everything", "model", "data", "trainer", "print_config", "help"],
        "class": list(classes),
    }


def catalog() -> str:
    """Every net, data set and diagnostic of the suite, one line each (``scripts/train.py --list``)."""
    classes = import_suite()
    groups = {
        "nets (--model.net NAME)": [
            c for c in classes.values() if issubclass(c, nn.Module) and c.__module__.startswith("lightning_modules.nets")
        ],
        "data (--data NAME)": [
            c for c in classes.values() if issubclass(c, TensorDataModule) and getattr(c, "build", None) is not TensorDataModule.build
        ],
        "diagnostics (--trainer.callbacks+=NAME)": [
            c
            for c in classes.values()
            if issubclass(c, Callback)
            and c.__module__.startswith("callbacks.")
            and "on_train_start" in {m for k in c.__mro__ if k.__module__.startswith("callbacks.") for m in vars(k)}
        ],
    }
    lines = []
    for title, members in groups.items():
        lines.append(f"{title}:")
        members = [
            c
            for c in members
            if not any(o is not c and issubclass(o, c) for o in members)  # bases are building blocks
            and ("output_dim" in inspect.signature(c.__init__).parameters or not issubclass(c, nn.Module))
        ]  # so are net parts
        for cls in sorted(members, key=lambda c: (c.__module__, c.__name__)):
            doc = (inspect.getdoc(cls) or "").split("\n")[0]
            lines.append(f"  {cls.__name__:<24} {cls.__module__}.{cls.__name__}  {doc}")
    return "\n".join(lines)


class OneLineErrorParser(LightningArgumentParser):
    """Reports a bad configuration as one line on stderr and exits with code 2. ``argv`` (set by
    :func:`build_cli`) lets the line name the full option and the value as typed."""

    argv: list[str] = []

    def error(self, message: str, ex: Optional[Exception] = None):  # noqa: D102
        print(f"error: {condense_error(message, self.argv, option_choices())}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)


class OverparamCLI(LightningCLI):
    """LightningCLI with the data's sizes linked into the net, a TensorBoard logger that keeps
    final values, a rich progress bar, the train/test-gap callback and a ``--ckpt_path`` option."""

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Model and data first, so ``--help`` shows them before the Trainer's forty options."""
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=self.subclass_mode_data)
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=Optional[str],
            default=None,
            help="Checkpoint to resume fit from; 'last' resumes the latest run under default_root_dir in its own folder.",
        )
        parser.add_argument(
            "--checkpoint_every_n_epochs",
            type=int,
            default=1,
            help="Save checkpoints/last.ckpt every N epochs (0: only at the end and on SIGTERM/Ctrl-C).",
        )
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
            callbacks.append(SuiteProgressBar())
        if not any(isinstance(c, TrainTestGap) for c in callbacks):
            callbacks.append(TrainTestGap())
        kwargs["callbacks"] = callbacks
        if cfg.get("profiler") is None:
            kwargs["profiler"] = NullProfiler()
        try:
            return use_lean_step(super().instantiate_trainer(**kwargs))
        except MisconfigurationException as err:  # e.g. an accelerator this machine does not have
            settings = ", ".join(
                f"{k}={cfg.get(k)!r}" for k in ("accelerator", "devices", "strategy", "precision") if cfg.get(k) is not None
            )
            raise ConfigError(f"trainer: Expected settings this machine can run ({settings}) but Lightning says: {err}") from err

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
                raise ConfigError(
                    f"Expected a checkpoint to resume (--ckpt_path last) under {root / 'lightning_logs'} but found no version_*/checkpoints/last.ckpt"
                )
            ckpt, version = str(last), int(last.parent.parent.name.split("_", 1)[1])
        if not Path(ckpt).is_file():
            raise ConfigError(f"Expected --ckpt_path to be 'last' or a checkpoint file but got {ckpt!r} (no such file)")
        stored = stored_config_hash(Path(ckpt))
        if stored is not None and stored != self.config_hash:
            raise ConfigError(
                f"Expected {ckpt} to be written under this config but it was written under another "
                f"(config hash {stored}, this one {self.config_hash}); give this config its own --trainer.default_root_dir"
            )
        status = run_status(Path(ckpt).parent.parent) if version is not None else None
        if status in FINISHED:
            raise ConfigError(
                f"Expected an unfinished run to resume but {Path(ckpt).parent.parent} has status {status}; "
                f"run without --ckpt_path to start a new version under {root}"
            )
        return ckpt, version


def long_config_flags(args: list[str]) -> list[str]:
    """``args`` with jsonargparse's short ``-c`` spelled ``--config``, so the config files are found before parsing.

    >>> long_config_flags(["-c", "x.yaml", "-c=y.yaml", "--model.lr", "-c"])
    ['--config', 'x.yaml', '--config=y.yaml', '--model.lr', '-c']
    """
    out = []
    for i, arg in enumerate(args):
        if arg == "-c" and (i == 0 or not args[i - 1].startswith("--") or "=" in args[i - 1] or args[i - 1] == "-c"):
            out.append("--config")
        elif arg.startswith("-c="):
            out.append("--config=" + arg[3:])
        else:
            out.append(arg)
    return out


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


def read_config_files(args: list[str]) -> list[dict]:
    """Read and YAML-parse every ``--config`` file named in ``args``, in order.

    Raises:
        ConfigError: naming the file, when it is missing, unreadable or not valid YAML.
    """
    files = [b for a, b in zip(args, args[1:]) if a == "--config"] + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    configs = []
    for name in files:
        try:
            text = Path(name).read_text()
        except OSError as err:
            raise ConfigError(f"Expected --config to name a readable YAML file but got {name!r} ({err.strerror or err})") from err
        try:
            configs.append(yaml.safe_load(text) or {})
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ConfigError(f"Expected --config {name} to be valid YAML but {getattr(err, 'problem', None) or err}{where}") from err
    return configs


def with_default_classes(args: list[str], configs: list[dict]) -> list[str]:
    """``args`` with ``--model.net TwoLayerMLP`` / ``--data GaussianMixture`` in front when none of the
    ``configs`` (the parsed ``--config`` files) and no flag in ``args`` names a net / data class (see ``DEFAULT_NET``).

    >>> with_default_classes(["--data", "MNIST"], [])[:2]
    ['--model.net', 'lightning_modules.nets.mlp.TwoLayerMLP']
    """
    named = {"net": False, "data": False}
    for config in (c for c in configs if isinstance(c, dict)):  # anything else jsonargparse reports
        net = ((config.get("model") or {}).get("init_args") or {}).get("net")
        named["net"] |= isinstance(net, str) or (isinstance(net, dict) and "class_path" in net)
        data = config.get("data")
        named["data"] |= isinstance(data, str) or (isinstance(data, dict) and "class_path" in data)
    for arg in args:
        option = arg.partition("=")[0]
        named["net"] |= option == "--model.net"
        named["data"] |= option == "--data"
    return [*(["--model.net", DEFAULT_NET] if not named["net"] else []), *(["--data", DEFAULT_DATA] if not named["data"] else []), *args]


def build_cli(args: Optional[list[str]] = None) -> OverparamCLI:
    """Parse ``args`` (default: ``sys.argv[1:]``) on top of configs/base.yaml (see the module
    docstring for the layering) and instantiate everything."""
    args = with_default_experiment(long_config_flags(sys.argv[1:] if args is None else args))
    if os.getcwd() not in sys.path:  # class paths of the user's own modules resolve from the working directory, as with `python -m`
        sys.path.append(os.getcwd())
    args = expand_short_names(with_default_classes(args, read_config_files(args)), import_suite())
    OneLineErrorParser.argv = args
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
        parser_kwargs={
            "default_config_files": [str(BASE_CONFIG)],
            "description": "Fit then test a config (configs/default.yaml without --config). "
            "--list names every net, data set and diagnostic; short class names work; "
            "--model.net.help NAME and --data.help NAME show one class's options.",
        },
    )


def config_error_in(err: BaseException) -> Optional[ConfigError]:
    """The ConfigError that ``err`` is or was raised from (jsonargparse re-raises a class's own
    error as a ValueError of its own while instantiating), else ``None``: then it is a bug."""
    seen = 0
    while err is not None and seen < 16:
        if isinstance(err, ConfigError):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def check_before_fit(model: Any, data: Any, callbacks: list, trainer_settings: Optional[dict] = None) -> None:
    """The checks that need the module, the data, the trainer and the callbacks together (e.g. an MSE-only
    regression set, SAM with gradient accumulation, a diagnostic that needs a teacher), run before any log
    is written: ``model.check_data(data)``, ``model.check_trainer(**trainer_settings)`` and each callback's
    ``check_fit(model, data)`` where they exist.

    Raises:
        ConfigError: from those checks.
    """
    if callable(getattr(model, "check_data", None)):
        model.check_data(data)
    if trainer_settings is not None and callable(getattr(model, "check_trainer", None)):
        model.check_trainer(**trainer_settings)
    for callback in callbacks:
        if callable(getattr(callback, "check_fit", None)):
            callback.check_fit(model, data)


def main(args: Optional[list[str]] = None) -> int:
    """Fit, test, write summary.json, print the final metrics. Returns the process exit code."""
    start = time.perf_counter()
    if "--list" in (sys.argv[1:] if args is None else args):
        print(catalog())
        return EXIT_OK
    try:
        cli = build_cli(args)
        if hasattr(cli.datamodule, "prepare_splits"):
            cli.datamodule.prepare_splits()  # data errors (sizes, files) now, before any log is written
        asked = cli.config.as_dict().get("trainer") or {}  # the precision as given: Lightning runs 16-mixed as bf16 on a CPU
        settings = {
            "accumulate_grad_batches": cli.trainer.accumulate_grad_batches,
            "precision": asked.get("precision") or cli.trainer.precision,
        }
        check_before_fit(cli.model, cli.datamodule, cli.trainer.callbacks, settings)
    except ValueError as err:  # a ConfigError, maybe wrapped by jsonargparse; any other exception is a bug
        cause = config_error_in(err)
        if cause is None:
            raise
        print(f"error: {condense_error(str(cause), OneLineErrorParser.argv)}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    status, code = "completed", EXIT_OK
    if isinstance(trainer.logger, SummaryLogger):
        trainer.logger.write_layout()
    error = None
    ctrl_c = CtrlCAsSigterm()
    try:
        with ctrl_c:
            trainer.fit(model, datamodule=data, ckpt_path=cli.resume_from)
    except SIGTERMException:  # preempted, or a first Ctrl-C: LastCheckpoint has saved the state after a whole batch
        status, code = "interrupted", EXIT_SIGINT if ctrl_c.received else EXIT_SIGTERM
    except ValueError as err:  # a setting that only fails once training starts
        cause = config_error_in(err)
        if cause is None:
            raise
        status, code, error = "failed", EXIT_BAD_CONFIG, condense_error(str(cause), OneLineErrorParser.argv)
        print(f"error: {error}", file=sys.stderr)
    except SystemExit:  # Lightning turns a second Ctrl-C into exit(1) after its graceful shutdown
        if not trainer.interrupted:
            raise
        status, code = "interrupted", EXIT_SIGINT
    if model.diverged_at_step is not None:
        status, code = "diverged", EXIT_DIVERGED
    elif status == "completed" and getattr(model, "last_eval_step", None) != trainer.global_step:
        trainer.test(model, datamodule=data, verbose=False)  # the test set at the final weights, unless evaluated there already
    # Updates done: the step that met a non-finite loss made none, though Lightning counts it.
    steps = trainer.global_step if model.diverged_at_step is None else model.diverged_at_step
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
        global_step=steps,
        epochs=trainer.current_epoch,
        config_hash=cli.config_hash,
        **extra,
    )
    if logger is not None:
        logger.finalize("success" if status == "completed" else "failed")  # flush and close the event files
    if trainer.is_global_zero:
        shown = {k: v for k, v in sorted(metrics.items()) if k.split("/")[0] in ("train", "test", "gap")}
        print(f"status: {status}" + (f" at step {model.diverged_at_step} (loss is not finite)" if status == "diverged" else ""))
        n_params = sum(p.numel() for p in model.net.parameters() if p.requires_grad)
        print(f"model: {type(model.net).__name__}, {n_params:,} trainable parameters, {steps} steps")
        print("final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
        measured = {
            k: v for k, v in sorted(metrics.items()) if k.split("/")[0] not in ("train", "test", "gap", "diag", "epoch", "ensemble")
        }
        headline = {k: v for k, v in measured.items() if k.count("/") == 1}  # per-layer and per-member values stay in summary.json
        if measured:  # the experiment's own quantities: what its config's diagnostics measured last
            more = f" (+{len(measured) - len(headline)} per-layer values in summary.json)" if len(measured) > len(headline) else ""
            print("diagnostics: " + ", ".join(f"{k}={v:.4g}" for k, v in headline.items()) + more)
        if status == "interrupted":
            print("resume with: --ckpt_path last (and the same config and default_root_dir)")
        print(f"logs: {log_dir}  (tensorboard --logdir {log_dir.parent})")
    return code
