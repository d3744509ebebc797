"""One LightningModule: net + learning rule + loss + optimizer + whole-set metrics."""

from __future__ import annotations

import copy
import math
from typing import Literal, Optional

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from lightning_modules import losses
from lightning_modules.checks import ConfigError, check_choice, check_int, check_number, check_positive_int
from lightning_modules.ist import average_shared_gradients, check_ist_net, ist_loss
from lightning_modules.learning_rules import RULES, apply_rule
from lightning_modules.optimizers import OPTIMIZERS, build_optimizer
from lightning_modules.publish import publish

OptimizerName = Literal["sgd", "adam", "sam", "entropy_sgd"]
ModuleRule = Literal["backprop", "fa", "dfa", "sign_symmetry", "ist"]
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
        ConfigError: when a key names no trainable parameter or a multiplier is no finite number >= 0.
    """
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    layers = sorted({n.rsplit(".", 1)[0] for n, _ in named})
    groups, taken = [], set()
    for prefix, mult in layer_lr.items():
        check_number(f"layer_lr[{prefix}]", mult, 0.0)
        params = [p for n, p in named if (n == prefix or n.startswith(prefix + ".")) and id(p) not in taken]
        if not params:
            raise ConfigError(f"Expected argument `layer_lr` keys to name trainable layers ({', '.join(layers)}) but got {prefix!r}")
        taken.update(map(id, params))
        groups.append({"params": params, "lr": lr * mult, "name": prefix})
    rest = [p for _, p in named if id(p) not in taken]
    if rest:
        groups.append({"params": rest, "lr": lr, "name": "default"})
    return groups


class SupervisedModule(pl.LightningModule):
    """Supervised training of ``net`` with a learning rule, a loss and an optimizer.

    Before the first update, after every validation epoch (every ``check_val_every_n_epoch`` training
    epochs) and at the end of training it evaluates the loss (and accuracy, for class labels) on the
    *whole* train and test sets and logs ``train/loss``, ``train/acc``, ``test/loss``, ``test/acc`` at
    the global step of the weights evaluated (step 0: the initialization).

    Args:
        net: any ``nn.Module`` mapping inputs (n, ...) to outputs (n, k).
        rule: how errors reach the layers (see learning_rules.py).
        loss: see losses.py; mse is L = 1/(2n) Σ ‖f(x) − y‖².
        optimizer: ``sgd`` (heavy-ball momentum, coupled weight decay), ``adam``, ``sam`` (Foret et
            al. 2021, radius ``sam_rho``) or ``entropy_sgd`` (Chaudhari et al. 2017; ``entropy_*``).
        lr: base learning rate η.
        momentum: SGD momentum (β1 for Adam is fixed at 0.9).
        weight_decay: L2 coefficient λ (adds λθ to the gradient).
        layer_lr: learning-rate multiplier per layer name, e.g. ``{"fc2": 0.1}``.
        lr_schedule: ``constant`` or ``cosine`` (decay to 0 over the run, per step).
        feedback_scale: entry scale of the feedback of fa/dfa/sign_symmetry, relative to the initial weights.
        seed: re-draws the net's initial weights from this seed (``None`` keeps them as given);
            also draws the feedback matrices and the IST unit partitions.
        sam_rho: SAM's neighbourhood radius ρ.
        entropy_gamma, entropy_inner_steps, entropy_inner_lr, entropy_noise: Entropy-SGD's coupling γ,
            Langevin steps L, inner step size and noise (choose lr near 1/γ).
        ist_parts: K, the number of disjoint subnetworks per step with ``rule: ist`` (see ist.py); at
            most the net's width and every batch size.
        replicas: R copies of the net from the same initialization, trained in lockstep; replica 0
            sees the DataModule's minibatch order, replica r its own order from ``replica_seeds``.
            Each replica takes exactly the steps a single run on its order would take: the same rule
            (IST partitions drawn from the same per-step seed for every replica), the same optimizer
            with its own SAM radius; nothing couples them. Entropy-SGD's Langevin noise is drawn
            afresh for each replica (from the global RNG).
        replica_seeds: minibatch-order seeds of replicas 1..R−1 (default: data seed + r).

    Raises:
        ConfigError: on an unknown choice, a negative rate, a size that is no positive integer, or (at
            setup) a DataModule that does not fit the loss or the replicas.
    """

    def __init__(
        self,
        net: nn.Module,
        rule: ModuleRule = "backprop",
        loss: losses.LossName = "mse",
        optimizer: OptimizerName = "sgd",
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        layer_lr: Optional[dict[str, float]] = None,
        lr_schedule: Schedule = "constant",
        feedback_scale: float = 1.0,
        seed: Optional[int] = 0,
        sam_rho: float = 0.05,
        entropy_gamma: float = 0.03,
        entropy_inner_steps: int = 5,
        entropy_inner_lr: float = 0.1,
        entropy_noise: float = 1e-4,
        ist_parts: int = 2,
        replicas: int = 1,
        replica_seeds: Optional[list[int]] = None,
    ) -> None:
        super().__init__()
        check_choice("rule", rule, (*RULES, "ist"))
        check_choice("loss", loss, losses.LOSSES)
        check_choice("optimizer", optimizer, OPTIMIZERS)
        check_choice("lr_schedule", lr_schedule, ("constant", "cosine"))
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            check_number(name, value, 0.0)
        check_positive_int("ist_parts", ist_parts)
        check_positive_int("replicas", replicas)
        check_int("seed", seed, allow_none=True)
        if replica_seeds is not None:
            if not isinstance(replica_seeds, (list, tuple)) or len(replica_seeds) != replicas - 1:
                raise ConfigError(f"Expected argument `replica_seeds` to hold replicas - 1 = {replicas - 1} seeds but got {replica_seeds!r}")
            for seed_r in replica_seeds:
                check_int("replica_seeds", seed_r)
        self.save_hyperparameters(ignore=["net"], logger=False)
        if seed is not None:
            reset_parameters(net, seed)
        if rule == "ist":
            check_ist_net(net, ist_parts)
        copies = [copy.deepcopy(net) for _ in range(replicas - 1)]  # same initialization
        swap = "backprop" if rule == "ist" else rule
        self.net = apply_rule(net, swap, feedback_scale, 0 if seed is None else seed)
        self.replica_nets = nn.ModuleList(apply_rule(c, swap, feedback_scale, 0 if seed is None else seed) for c in copies)
        self.layer_lr = dict(layer_lr or {})
        self.configure_optimizers_now()  # validate layer names and optimizer settings now, not at fit time
        self.metrics = nn.ModuleDict({f"{split}_{what}": MeanMetric() for split in ("train", "test") for what in ("loss", "acc")})
        self.diverged_at_step: Optional[int] = None
        self.last_eval_step: Optional[int] = None  # global step of the latest whole-set evaluation
        self._replica_orders: dict[tuple[int, int], list] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss_fn(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss (a scalar), as the diagnostics call it."""
        return losses.mean_loss(self.hparams.loss, output, y)

    def setup(self, stage: str) -> None:
        self.check_data(self.trainer.datamodule if self.trainer is not None else None)

    def check_data(self, data) -> None:
        """Settings that only the data can refute; the CLI calls this before any log is written.

        Raises:
            ConfigError: a non-MSE loss on regression data; replicas without a seeded batch order;
                IST on a batch smaller than ``ist_parts`` (the full batch, a minibatch or the last one).
        """
        hp = self.hparams
        if data is not None and not getattr(data, "classification", True) and hp.loss != "mse":
            raise ConfigError(f"Expected argument `loss` to be mse for the regression data {type(data).__name__} but got {hp.loss!r}")
        if hp.replicas > 1 and not callable(getattr(data, "batch_order", None)):
            raise ConfigError(f"Expected a DataModule with `batch_order` (a TensorDataModule) for replicas = {hp.replicas} "
                              f"but got {type(data).__name__}")
        train = getattr(data, "train", None)  # the prepared split, when there is one (image sets may say n_train = null)
        n_train, batch_size = len(train.x) if train is not None else getattr(data, "n_train", None), getattr(data, "batch_size", 0)
        if hp.rule == "ist" and isinstance(n_train, int):
            sizes = [n_train] if not batch_size or batch_size >= n_train else [batch_size, n_train % batch_size or batch_size]
            if min(sizes) < hp.ist_parts:
                raise ConfigError(f"Expected every batch to hold at least `ist_parts` = {hp.ist_parts} samples (one per subnetwork) "
                                  f"but n_train = {n_train} with batch_size = {batch_size} gives a batch of {min(sizes)}")

    # ---- training ----------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.replica_loss(self.net, *batch)
        for r, replica in enumerate(self.replica_nets, start=1):
            loss = loss + self.replica_loss(replica, *self.replica_batch(r, batch_idx))  # disjoint parameters: own gradients
        if not torch.isfinite(loss):  # diverged: stop now, skip this update, keep the last finite state
            self.diverged_at_step = self.global_step
            self.trainer.should_stop = True
            return None
        return loss

    def replica_loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of one replica on its batch, by the module's rule. Under ``ist`` the unit
        partition comes from (seed, step) alone, so every replica draws the same one."""
        hp = self.hparams
        if hp.rule != "ist":
            return self.loss_fn(net(x), y)
        step_seed = (0 if hp.seed is None else hp.seed) * 1_000_003 + self.global_step  # resumes exactly
        return ist_loss(net, self.loss_fn, x, y, hp.ist_parts, torch.Generator().manual_seed(step_seed))

    def on_after_backward(self) -> None:
        if self.hparams.rule == "ist":
            for net in (self.net, *self.replica_nets):
                average_shared_gradients(net, self.hparams.ist_parts)

    def replica_batch(self, r: int, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Replica r's minibatch number ``batch_idx`` of this epoch, from its own seeded order (the
        DataModule's ``batch_order`` for the replica's seed: the data seed gives replica 0's batches)."""
        data = self.trainer.datamodule
        split = data.split_on_device("train")
        seeds = self.hparams.replica_seeds or [data.seed + i for i in range(1, self.hparams.replicas)]
        key = (r, self.current_epoch)
        if key not in self._replica_orders:
            self._replica_orders = {k: v for k, v in self._replica_orders.items() if k[1] == self.current_epoch}
            self._replica_orders[key] = data.batch_order("train", seeds[r - 1], self.current_epoch)
        idx = self._replica_orders[key][batch_idx]
        if idx is None:
            return split.x, split.y
        return split.x[idx], split.y[idx]

    def configure_optimizers_now(self) -> torch.optim.Optimizer:
        """The optimizer over the net and its replicas (``layer_lr`` applies to every copy). Replica r's
        groups carry ``block = r``, so SAM normalizes its ascent step per replica."""
        hp = self.hparams
        groups = []
        for r, net in enumerate((self.net, *self.replica_nets)):
            groups += [{**group, "block": r} for group in param_groups(net, hp.lr, self.layer_lr)]
        hyper = {
            "sam": {"rho": hp.sam_rho},
            "entropy_sgd": {"gamma": hp.entropy_gamma, "inner_steps": hp.entropy_inner_steps,
                            "inner_lr": hp.entropy_inner_lr, "noise": hp.entropy_noise},
        }.get(hp.optimizer, {})
        return build_optimizer(hp.optimizer, groups, hp.lr, hp.momentum, hp.weight_decay, **hyper)

    def configure_optimizers(self):
        hp = self.hparams
        opt = self.configure_optimizers_now()
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
        publish(self.trainer, values)  # metric.compute() has already reduced across ranks
        return values

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update_metrics("train" if dataloader_idx == 0 else "test", batch)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(("train", "test"))
        if not self.trainer.sanity_checking:
            self.last_eval_step = self.trainer.global_step

    def on_train_start(self) -> None:
        if self.trainer.global_step == 0:  # the initial weights at step 0 (a resumed run has logged them)
            self.evaluate_whole_sets()

    def on_train_end(self) -> None:
        if self.last_eval_step != self.trainer.global_step:  # the final weights, when no validation epoch ended there
            self.evaluate_whole_sets()

    @torch.no_grad()
    def evaluate_whole_sets(self) -> None:
        """The validation pass outside the validation loop: whole-set train/test metrics of the current weights
        in eval mode, logged at the current step. Nothing when validation is off (e.g. ``limit_val_batches=0``)."""
        trainer = self.trainer
        if not trainer.enable_validation:
            return
        loaders = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else trainer.val_dataloaders
        if loaders is None:  # plain loaders given to fit() that the validation loop has not set up yet
            return
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            for index, loader in enumerate(loaders if isinstance(loaders, (list, tuple)) else [loaders]):
                for batch_idx, batch in enumerate(loader):
                    self.validation_step(self.transfer_batch_to_device(batch, self.device, index), batch_idx, index)
        finally:
            for module, mode in modes:
                module.training = mode
        self._log_metrics(("train", "test"))
        self.last_eval_step = trainer.global_step

    def test_step(self, batch, batch_idx: int) -> None:
        self._update_metrics("test", batch)

    def on_test_epoch_end(self) -> None:
        self._log_metrics(("test",))
