"""Lightning's training step without its per-hook dispatch layers, for the runs that need none of them.

One automatic-optimization step in Lightning goes: the epoch loop → ``_AutomaticOptimization`` →
``LightningModule.optimizer_step`` → ``LightningOptimizer.step`` → the strategy → the precision
plugin → ``optimizer.step(closure)``, and every hook on the way (about fifteen a step) is called
through ``trainer.call``, which formats a debug message and a profiler name, looks the hook up on
every callback and calls the base class's no-op where nothing overrides it; ``training_step``'s
signature is read with ``inspect`` at every step. On a small net on a CPU that is a third of a
1 ms step.

:class:`LeanTrainingEpochLoop` runs the same step directly: the same hooks with the same arguments
in the same order (only those that some callback or the module overrides), the same
``_current_fx_name`` around each, the same progress counters, learning-rate scheduler updates,
logger-connector calls and Lightning ``Closure`` (so an optimizer that re-runs the closure, as SAM
and Entropy-SGD do, re-runs the zero-grad, backward and before-optimizer-step hooks each time, and
receives the detached loss). A non-finite loss (``training_step`` returning ``None``) is handled as
Lightning does it: zero-grad, no backward, the optimizer steps over ``None`` gradients.

It applies to a run that uses nothing in between: one device without a distributed group, the
plain 32-bit precision plugin, automatic optimization with one optimizer, no gradient
accumulation, a module that overrides neither ``optimizer_step`` nor ``on_train_batch_start``
(whose -1 ends the epoch, handled differently across Lightning 2.4–2.6), and the default profiler
(``--trainer.profiler simple`` or any other keeps the standard loop, so that its report names every
hook). Anything else, the first step after a restart, and a step without backward
(``StochasticWeightAveraging``'s last epoch) take Lightning's own ``advance``; the tests run both
and check that they train bit-identically and call the same hooks.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from pytorch_lightning.loops.fetchers import _DataFetcher, _DataLoaderIterDataFetcher
from pytorch_lightning.loops.optimization.automatic import Closure, ClosureResult
from pytorch_lightning.loops.training_epoch_loop import _TrainingEpochLoop
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.trainer import call
from pytorch_lightning.utilities.signature_utils import is_param_in_hook_signature

STEP_HOOKS = (
    "on_train_batch_start",
    "on_before_zero_grad",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
)
TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def overrides(obj: object, name: str, base: type) -> bool:
    """Whether ``obj.name`` is something other than ``base``'s own method (a subclass's or the instance's)."""
    return name in vars(obj) or getattr(type(obj), name, None) is not getattr(base, name)


def lean_step_applies(trainer: pl.Trainer) -> bool:
    """Whether this fit's training step needs nothing of what the lean step leaves out (see the module's text)."""
    module = trainer.lightning_module
    return (
        module is not None
        and type(trainer.strategy) is SingleDeviceStrategy
        and type(trainer.precision_plugin) is Precision
        and isinstance(trainer.profiler, PassThroughProfiler)
        and not (torch.distributed.is_available() and torch.distributed.is_initialized())
        and module.automatic_optimization
        and len(trainer.optimizers) == 1
        and trainer.accumulate_grad_batches == 1
        and not overrides(module, "optimizer_step", pl.LightningModule)
        and not overrides(module, "on_train_batch_start", pl.LightningModule)  # may return -1: the rest of the epoch skipped
    )


class StepHooks:
    """The hooks of one fit's training step, resolved once: for each name, the bound methods of the
    callbacks that override it (in ``trainer.callbacks`` order), then the module's own if it overrides it."""

    def __init__(self, trainer: pl.Trainer) -> None:
        module = trainer.lightning_module
        self.trainer, self.module, self.key = trainer, module, self.key_of(trainer)
        self.callbacks = {name: [getattr(cb, name) for cb in trainer.callbacks if overrides(cb, name, pl.Callback)] for name in STEP_HOOKS}
        self.module_hooks = {name: getattr(module, name) for name in STEP_HOOKS if overrides(module, name, pl.LightningModule)}
        self.takes_batch_idx = is_param_in_hook_signature(module.training_step, "batch_idx", min_args=2)
        datamodule = trainer.datamodule
        self.custom_transfer = any(
            overrides(module, name, pl.LightningModule) or (datamodule is not None and overrides(datamodule, name, pl.LightningDataModule))
            for name in TRANSFER_HOOKS
        )
        self.clips = bool(trainer.gradient_clip_val) or overrides(module, "configure_gradient_clipping", pl.LightningModule)

    @staticmethod
    def key_of(trainer: pl.Trainer) -> tuple:
        """What the resolved hooks depend on: the module, the data module, the callbacks, the clipping value."""
        return (trainer.lightning_module, trainer.datamodule, trainer.gradient_clip_val, *trainer.callbacks)

    def run(self, name: str, *args: Any) -> Any:
        """Callbacks' ``name`` hooks, then the module's; returns the module's output (as ``trainer.call`` does)."""
        module, output = self.module, None
        callbacks, own = self.callbacks[name], self.module_hooks.get(name)
        if callbacks or own is not None:
            previous = module._current_fx_name
            module._current_fx_name = name
            for hook in callbacks:
                hook(self.trainer, module, *args)
            if own is not None:
                output = own(*args)
            module._current_fx_name = previous
        return output

    def module_call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` with ``_current_fx_name`` = ``name``, as Lightning calls a module or strategy hook."""
        module = self.module
        previous = module._current_fx_name
        module._current_fx_name = name
        output = fn(*args)
        module._current_fx_name = previous
        return output

    def to_device(self, batch: Any) -> Any:
        """The batch on the root device, through the transfer hooks when the module or data module has any."""
        trainer = self.trainer
        if self.custom_transfer:
            batch = self.module._on_before_batch_transfer(batch, dataloader_idx=0)
            return call._call_strategy_hook(trainer, "batch_to_device", batch, dataloader_idx=0)
        device = trainer.strategy.root_device
        if type(batch) is tuple and all(isinstance(t, torch.Tensor) and t.device == device for t in batch):
            return batch  # what ``move_data_to_device`` returns for tensors already there
        return move_data_to_device(batch, device)


class LeanTrainingEpochLoop(_TrainingEpochLoop):
    """``_TrainingEpochLoop`` whose ``advance`` takes the lean step when :func:`lean_step_applies`.

    Install with :func:`use_lean_step` before ``fit``."""

    _hooks: Optional[StepHooks] = None

    def on_run_start(self, data_fetcher: _DataFetcher) -> None:
        super().on_run_start(data_fetcher)
        trainer = self.trainer
        if not lean_step_applies(trainer):
            self._hooks = None
        elif self._hooks is None or self._hooks.key != StepHooks.key_of(trainer):  # resolved again only when changed
            self._hooks = StepHooks(trainer)

    def _on_before_fetch(self) -> None:  # the profiler's start and stop name the loop; they are no-ops here
        if self._hooks is None:
            super()._on_before_fetch()

    def _on_after_fetch(self) -> None:
        if self._hooks is None:
            super()._on_after_fetch()

    def advance(self, data_fetcher: _DataFetcher) -> None:
        hooks = self._hooks
        if (
            hooks is None
            or self.restarting
            or self.automatic_optimization._skip_backward  # set by StochasticWeightAveraging for its last epoch
            or isinstance(data_fetcher, _DataLoaderIterDataFetcher)
        ):
            super().advance(data_fetcher)
            return
        trainer = self.trainer
        if self.val_loop.restarting:
            self.val_loop.restarting = False
        batch, _, __ = next(data_fetcher)
        batch_idx = self.batch_idx + 1
        self.batch_progress.is_last_batch = data_fetcher.done
        batch = hooks.to_device(batch)
        self.batch_progress.increment_ready()
        trainer._logger_connector.on_batch_start(batch)

        batch_output = None
        if batch is None:
            self._warning_cache.warn("train_dataloader yielded None. If this was on purpose, ignore this warning...")
        else:
            hooks.run("on_train_batch_start", batch, batch_idx)  # the callbacks' (the module's could end the epoch)
            self.batch_progress.increment_started()
            batch_output = self.optimize(hooks, batch, batch_idx)

        self.batch_progress.increment_processed()
        if trainer.lr_scheduler_configs:  # (Lightning's update returns at once without any)
            self.update_lr_schedulers("step", update_plateau_schedulers=False)
            if self._num_ready_batches_reached():
                self.update_lr_schedulers("epoch", update_plateau_schedulers=False)

        hooks.run("on_train_batch_end", batch_output, batch, batch_idx)
        results = self._results  # what ``self.log`` wrote to in this epoch
        if results:  # Lightning merges this step's values and writes them to the loggers
            trainer._logger_connector.on_batch_end()
            self.batch_progress.increment_completed()
            trainer._logger_connector.update_train_step_metrics()
        else:  # what those two calls do with nothing logged
            results.batch = results.batch_size = None
            self.batch_progress.increment_completed()

    def optimize(self, hooks: StepHooks, batch: Any, batch_idx: int) -> dict:
        """``_AutomaticOptimization.run`` for one optimizer without accumulation: the closure (training
        step, zero-grad, backward) wrapped with the before-optimizer-step hooks and clipping, and one
        ``optimizer.step(closure)``. Returns the step's outputs (``{}`` when ``training_step`` returned None)."""
        trainer, module = self.trainer, hooks.module
        optimizer = trainer.optimizers[0]
        progress = self.automatic_optimization.optim_progress.optimizer
        args = (batch, batch_idx) if hooks.takes_batch_idx else (batch,)

        def step_fn() -> ClosureResult:
            output = hooks.module_call("training_step", module.training_step, *args)
            if isinstance(output, torch.Tensor):  # what from_training_step_output makes of it (its division by 1 is exact)
                return ClosureResult(output)
            return ClosureResult.from_training_step_output(output, 1)

        def zero_grad_fn() -> None:
            progress.zero_grad.increment_ready()
            hooks.run("on_before_zero_grad", optimizer)
            progress.zero_grad.increment_started()
            hooks.module_call("optimizer_zero_grad", module.optimizer_zero_grad, trainer.current_epoch, batch_idx, optimizer)
            progress.zero_grad.increment_completed()

        def backward_fn(loss: torch.Tensor) -> None:
            previous = module._current_fx_name
            module._current_fx_name = "backward"
            hooks.run("on_before_backward", loss)
            module.backward(loss)
            hooks.run("on_after_backward")
            module._current_fx_name = previous

        closure = Closure(step_fn=step_fn, backward_fn=backward_fn, zero_grad_fn=zero_grad_fn)

        def closure_and_after() -> Optional[torch.Tensor]:
            loss = closure()
            hooks.run("on_before_optimizer_step", optimizer)
            if hooks.clips:
                trainer.precision_plugin._clip_gradients(
                    module, optimizer, trainer.gradient_clip_val, gradient_clip_algorithm=trainer.gradient_clip_algorithm
                )
            return loss

        progress.step.increment_ready()
        hooks.module_call("optimizer_step", partial(optimizer.step, closure=closure_and_after))
        progress.step.increment_completed()
        result = closure.consume_result()
        return {} if result.loss is None else result.asdict()


def use_lean_step(trainer: pl.Trainer) -> pl.Trainer:
    """Give ``trainer`` the lean training step (a no-op for a trainer with a custom or recording profiler,
    or one whose epoch loop was replaced already). Returns the trainer."""
    loop = trainer.fit_loop.epoch_loop
    if type(loop) is _TrainingEpochLoop and isinstance(trainer.profiler, PassThroughProfiler):
        trainer.fit_loop.epoch_loop = LeanTrainingEpochLoop(trainer, min_steps=loop.min_steps, max_steps=loop.max_steps)
    return trainer
