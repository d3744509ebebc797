"""One LightningModule: net + learning rule + loss + optimizer + whole-set metrics."""

from __future__ import annotations

import math
from typing import Literal, Optional

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from lightning_modules import losses
from lightning_modules.learning_rules import RULES, RuleName, apply_rule
from lightning_modules.nets.mlp import check_choice

OptimizerName = Literal["sgd", "adam"]
Schedule = Literal["constant", "cosine"]


def reset_parameters(net: nn.Module, seed: int) -> None:
    """Re-draw the net's initial weights from ``seed`` alone (the global RNG is left untouched).

    Uses the net's own ``reset_parameters`` when it has one, else each submodule's.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hasattr(net, "reset_parameters"):
            net.reset_parameters()
        else:
            for module in net.modules():
                if module is not net and hasattr(module, "reset_parameters"):
                    module.reset_parameters()


def param_groups(net: nn.Module, lr: float, layer_lr: dict[str, float]) -> list[dict]:
    """Optimizer groups: parameters under a ``layer_lr`` key (a module-name prefix) get lr × multiplier.

    Raises:
        ValueError: when a key names no trainable parameter.
    """
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    layers = sorted({n.rsplit(".", 1)[0] for n, _ in named})
    groups, taken = [], set()
    for prefix, mult in layer_lr.items():
        params = [p for n, p in named if (n == prefix or n.startswith(prefix + ".")) and id(p) not in taken]
        if not params:
            raise ValueError(f"Expected argument `layer_lr` keys to name trainable layers ({', '.join(layers)}) but got {prefix!r}")
        taken.update(map(id, params))
        groups.append({"params": params, "lr": lr * mult, "name": prefix})
    rest = [p for _, p in named if id(p) not in taken]
    if rest:
        groups.append({"params": rest, "lr": lr, "name": "default"})
    return groups


class SupervisedModule(pl.LightningModule):
    """Supervised training of ``net`` with a learning rule, a loss and an optimizer.

    After every training epoch it evaluates the loss (and accuracy, for class labels) on the
    *whole* train and test sets and logs ``train/loss``, ``train/acc``, ``test/loss``, ``test/acc``.

    Args:
        net: any ``nn.Module`` mapping inputs (n, ...) to outputs (n, k).
        rule: how errors reach the layers (see learning_rules.py).
        loss: see losses.py; mse is L = 1/(2n) Σ ‖f(x) − y‖².
        optimizer: ``sgd`` (heavy-ball momentum, coupled weight decay) or ``adam``.
        lr: base learning rate η.
        momentum: SGD momentum (β1 for Adam is fixed at 0.9).
        weight_decay: L2 coefficient λ (adds λθ to the gradient).
        layer_lr: learning-rate multiplier per layer name, e.g. ``{"fc2": 0.1}``.
        lr_schedule: ``constant`` or ``cosine`` (decay to 0 over the run, per step).
        feedback_scale: scale of the random feedback matrices of fa/dfa.
        seed: re-draws the net's initial weights from this seed (``None`` keeps them as given);
            also draws the feedback matrices.

    Raises:
        ValueError: on an unknown choice or a negative rate.
    """

    def __init__(
        self,
        net: nn.Module,
        rule: RuleName = "backprop",
        loss: losses.LossName = "mse",
        optimizer: OptimizerName = "sgd",
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        layer_lr: Optional[dict[str, float]] = None,
        lr_schedule: Schedule = "constant",
        feedback_scale: float = 1.0,
        seed: Optional[int] = 0,
    ) -> None:
        super().__init__()
        check_choice("rule", rule, RULES)
        check_choice("loss", loss, losses.LOSSES)
        check_choice("optimizer", optimizer, ("sgd", "adam"))
        check_choice("lr_schedule", lr_schedule, ("constant", "cosine"))
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Expected argument `{name}` to be a finite number >= 0 but got {value!r}")
        self.save_hyperparameters(ignore=["net"], logger=False)
        if seed is not None:
            reset_parameters(net, seed)
        self.net = apply_rule(net, rule, feedback_scale, 0 if seed is None else seed)
        self.layer_lr = dict(layer_lr or {})
        param_groups(self.net, lr, self.layer_lr)  # validate the layer names now, not at fit time
        self.metrics = nn.ModuleDict({f"{split}_{what}": MeanMetric() for split in ("train", "test") for what in ("loss", "acc")})
        self.diverged_at_step: Optional[int] = None
        self.last_eval_epoch: Optional[int] = None  # epoch of the latest whole-set evaluation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss_fn(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss (a scalar), as the diagnostics call it."""
        return losses.mean_loss(self.hparams.loss, output, y)

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule if self.trainer is not None else None
        if data is not None and not getattr(data, "classification", True) and self.hparams.loss != "mse":
            raise ValueError(f"Expected argument `loss` to be mse for the regression data {type(data).__name__} but got {self.hparams.loss!r}")

    # ---- training ----------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self.net(x), y)
        if not torch.isfinite(loss):  # diverged: stop now, skip this update, keep the last finite state
            self.diverged_at_step = self.global_step
            self.trainer.should_stop = True
            return None
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups(self.net, hp.lr, self.layer_lr)
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.Adam(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        cosine = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}

    # ---- whole-set evaluation ------------------------------------------------------------------
    def _update_metrics(self, split: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        output = self.net(x)
        self.metrics[f"{split}_loss"].update(losses.per_sample_loss(self.hparams.loss, output, y))
        if losses.is_classification(y):
            self.metrics[f"{split}_acc"].update(losses.correct(output, y))

    def _log_metrics(self, splits: tuple[str, ...]) -> dict[str, torch.Tensor]:
        values = {}
        for split in splits:
            for what in ("loss", "acc"):
                metric = self.metrics[f"{split}_{what}"]
                if metric.update_called:
                    values[f"{split}/{what}"] = metric.compute()
                metric.reset()
        if values:
            self.log_dict(values, sync_dist=self.trainer.world_size > 1)  # equal on all ranks already
        return values

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update_metrics("train" if dataloader_idx == 0 else "test", batch)

    def on_validation_epoch_end(self) -> None:
        values = self._log_metrics(("train", "test"))
        if self.trainer.sanity_checking:
            return
        self.last_eval_epoch = self.current_epoch

    def test_step(self, batch, batch_idx: int) -> None:
        self._update_metrics("test", batch)

    def on_test_epoch_end(self) -> None:
        self._log_metrics(("test",))
