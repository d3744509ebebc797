"""One LightningModule: net + learning rule + loss + optimizer + whole-set metrics."""

from __future__ import annotations

import copy
import math
from functools import partial
from typing import Any, Callable, Literal, Optional

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric, Metric

from lightning_modules import losses
from lightning_modules.checks import ConfigError, check_bool, check_choice, check_int, check_number, check_positive_int
from lightning_modules.divergence import DEFAULT_EVERY, DEFERRABLE, DeviceFlag
from lightning_modules.ist import (
    average_shared_gradients,
    check_ist_net,
    check_local_steps,
    ist_loss,
    ist_masks,
    local_round_loss,
    step_generator,
)
from lightning_modules.learning_rules import RULES, apply_rule
from lightning_modules.nets.ensemble import StackedEnsemble
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


def per_member(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The per-sample ``fn(output_k, y)`` of every member k of an ensemble output (E, n, k), at once: (E, n)."""
    members, n = output.shape[:2]
    y_all = y.unsqueeze(0).expand(members, *y.shape).reshape(members * n, *y.shape[1:])  # y for each member
    return fn(output.reshape(members * n, *output.shape[2:]), y_all).view(members, n)


class MemberMean(Metric):
    """Each ensemble member's mean of a per-sample value over every sample seen: (E,) (one state for all members)."""

    full_state_update = False

    def __init__(self, members: int) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(members), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:  # (E, n)
        self.total += values.sum(1).to(self.total.dtype)
        self.count += values.shape[1]

    def compute(self) -> torch.Tensor:
        return self.total / self.count


def check_ensemble(
    net: nn.Module, size: int, rule: str, optimizer: str, layer_lr: Optional[dict], replicas: int, seed: Optional[int]
) -> None:
    """What a stacked seed ensemble of ``size`` members cannot train exactly like ``size`` separate runs.

    Raises:
        ConfigError: a rule other than backprop and fa, an optimizer whose step is not elementwise (SAM,
            Entropy-SGD), ``layer_lr``, replicas, no seed, or a net with dropout or batch norm.
    """

    def refuse(expected: str, got: object) -> None:
        raise ConfigError(f"Expected {expected} with `ensemble` = {size} (each member must step as a run of its own) but got {got!r}")

    if rule not in ("backprop", "fa"):
        refuse("argument `rule` to be backprop or fa", rule)
    if optimizer not in ("sgd", "adam"):
        refuse("argument `optimizer` to be sgd or adam (elementwise steps)", optimizer)
    if layer_lr:
        refuse("argument `layer_lr` to be empty", layer_lr)
    if replicas != 1:
        refuse("argument `replicas` to be 1", replicas)
    if seed is None:
        refuse("argument `seed` to be an integer (member k is drawn from seed + k)", seed)
    if getattr(net, "closed_form", False):
        refuse("argument `net.closed_form` to be false (the members' readouts are trained)", True)
    dropout = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
    for name, module in net.named_modules():
        if isinstance(module, dropout) and module.p > 0 or getattr(module, "track_running_stats", False):
            refuse("a net without dropout or batch norm", f"{name}: {module}")


def replica_spread(nets: list[nn.Module]) -> torch.Tensor:
    """Σ_r ‖θ_r − θ̄‖² over the trainable parameters of R nets of one architecture, θ̄ = (1/R) Σ_r θ_r.

    Its gradient in θ_r is 2(θ_r − θ̄): the terms through θ̄ cancel, since Σ_r (θ_r − θ̄) = 0.
    """
    total = None
    for tensors in zip(*([p for p in net.parameters() if p.requires_grad] for net in nets)):
        stacked = torch.stack(tensors)  # (R, ...)
        term = ((stacked - stacked.mean(0)) ** 2).sum()
        total = term if total is None else total + term
    return total


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
        ist_parts: p, the number of surrogate subnetworks per round with ``rule: ist`` (see ist.py); with
            ``ist_keep_prob`` null, disjoint groups of units, each on its own chunk of the batch (at most
            the net's width and every batch size).
        ist_keep_prob: ξ, each surrogate keeps each hidden unit with probability ξ, independently (every
            surrogate sees the whole batch; Liao & Kyrillidis 2022); null: the disjoint groups (ξ = 1/p).
        ist_local_steps: τ, gradient steps of size ``lr`` each surrogate takes before the merge; one
            optimizer step is one round. τ > 1 needs plain SGD (no momentum, weight decay, ``layer_lr``
            or schedule).
        replicas: R copies of the net from the same initialization, trained in lockstep; replica 0
            sees the DataModule's minibatch order, replica r its own order from ``replica_seeds``.
            Each replica takes exactly the steps a single run on its order would take: the same rule
            (IST partitions drawn from the same per-step seed for every replica), the same optimizer
            with its own SAM radius; nothing couples them unless ``replica_coupling`` > 0. Entropy-SGD's
            Langevin noise is drawn afresh for each replica (from the global RNG).
        replica_seeds: minibatch-order seeds of replicas 1..R−1 (default: data seed + r).
        replica_coupling: γ ≥ 0; γ > 0 couples the replicas into Replicated SGD (Baldassi et al. 2020,
            "Shaping the learning landscape in neural networks around wide flat minima"): the loss gains
            γ/2 Σ_r ‖θ_r − θ̄‖² (:func:`replica_spread`, θ̄ the replicas' mean), which pulls each replica
            toward their centre with the force γ(θ_r − θ̄). 0 (the default) leaves them independent.
        ensemble: E > 1 trains E independently initialized copies of the net (member k drawn from
            ``seed + k``, with its own FA feedback from ``seed + k``) as one stacked model (see
            nets/ensemble.py); ``forward`` then returns (E, n, k). The loss is the sum of the members'
            losses, so each member takes exactly the steps of a run of its own with ``seed = seed + k``
            and the same data seed: all members see the same minibatches. Member k's whole-set metrics
            are logged as ``ensemble/<k>/train/loss`` etc., the plain tags are the members' mean. The
            ensemble stops when any member's loss is not finite. Rules backprop and fa, optimizers sgd and
            adam (elementwise steps); refused: ``layer_lr``, SAM, Entropy-SGD, replicas, other rules, nets
            with dropout or batch norm, gradient clipping and the diagnostics callbacks (they act on one net).
        divergence_check_every_n_steps: how often the host looks for a non-finite loss. 1 reads the loss
            every step (a host sync; free on a CPU). k > 1 keeps the check on the device (see
            divergence.py): a non-finite loss at step t freezes the weights there at once (fused SGD/Adam
            skip that update and every later one), and the host reads the flag every k steps, at each
            epoch's last step and before a diagnostic or checkpoint looks at the weights; the run then
            stops as with 1 (``diverged_at_step`` = t, the last finite weights kept) after at most k − 1
            wasted steps. null (the default): 16 on a CUDA GPU, else 1. SAM, Entropy-SGD and
            ``16-mixed`` precision always use 1.
        log_batch_loss: also log ``train/batch_loss`` every step: the loss of the step's batch at the
            weights before the update (the net's own, replicas and penalties aside; the members' mean for
            an ensemble; under ``ist`` the sum of the subnetworks' losses, as trained). With full batches
            it is the whole training loss in train mode, so ``--trainer.check_val_every_n_epoch k`` can space out the whole-set evaluations while the
            training loss stays logged every step.

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
        ist_keep_prob: Optional[float] = None,
        ist_local_steps: int = 1,
        replicas: int = 1,
        replica_seeds: Optional[list[int]] = None,
        replica_coupling: float = 0.0,
        ensemble: int = 1,
        divergence_check_every_n_steps: Optional[int] = None,
        log_batch_loss: bool = False,
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
        check_number("replica_coupling", replica_coupling, 0.0)
        if replica_coupling > 0 and replicas < 2:
            raise ConfigError(
                f"Expected argument `replicas` to be >= 2 with `replica_coupling` = {replica_coupling!r} but got {replicas!r}"
            )
        check_int("seed", seed, allow_none=True)
        check_positive_int("ensemble", ensemble)
        if divergence_check_every_n_steps is not None:
            check_positive_int("divergence_check_every_n_steps", divergence_check_every_n_steps)
        check_bool("log_batch_loss", log_batch_loss)
        if ensemble > 1:
            check_ensemble(net, ensemble, rule, optimizer, layer_lr, replicas, seed)
        if replica_seeds is not None:
            if not isinstance(replica_seeds, (list, tuple)) or len(replica_seeds) != replicas - 1:
                raise ConfigError(
                    f"Expected argument `replica_seeds` to hold replicas - 1 = {replicas - 1} seeds but got {replica_seeds!r}"
                )
            for seed_r in replica_seeds:
                check_int("replica_seeds", seed_r)
        self.save_hyperparameters(ignore=["net"], logger=False)
        if seed is not None:
            reset_parameters(net, seed)
        if rule == "ist":
            check_ist_net(net, ist_parts, ist_keep_prob)
            check_local_steps(ist_local_steps, optimizer, momentum, weight_decay, layer_lr, lr_schedule)
        copies = [copy.deepcopy(net) for _ in range(replicas - 1)]  # same initialization
        swap = "backprop" if rule == "ist" else rule
        if ensemble > 1:
            members = [net] + [copy.deepcopy(net) for _ in range(ensemble - 1)]
            for k, member in enumerate(members[1:], start=1):
                reset_parameters(member, seed + k)
            net = StackedEnsemble([apply_rule(m, rule, feedback_scale, seed + k) for k, m in enumerate(members)])
            swap = "backprop"  # the members carry their rule
        self.net = apply_rule(net, swap, feedback_scale, 0 if seed is None else seed)
        self.replica_nets = nn.ModuleList(apply_rule(c, swap, feedback_scale, 0 if seed is None else seed) for c in copies)
        self.layer_lr = dict(layer_lr or {})
        self.configure_optimizers_now()  # validate layer names and optimizer settings now, not at fit time
        self.metrics = nn.ModuleDict({f"{split}_{what}": MeanMetric() for split in ("train", "test") for what in ("loss", "acc")})
        self.member_metrics = nn.ModuleDict(
            {f"{split}_{what}": MemberMean(ensemble) for split in ("train", "test") for what in ("loss", "acc") if ensemble > 1}
        )
        self.diverged_at_step: Optional[int] = None
        self.device_flag: Optional[DeviceFlag] = None  # the on-device divergence check, when it is deferred
        self._batch_loss_step: Optional[int] = None
        self.last_eval_step: Optional[int] = None  # global step of the latest whole-set evaluation
        self._replica_orders: dict[tuple[int, int], list] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":  # Lightning sets it around every hook call, ~45 times a step: a plain attribute
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss_fn(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss (a scalar), as the diagnostics call it."""
        return losses.mean_loss(self.hparams.loss, output, y)

    def setup(self, stage: str) -> None:
        self.check_data(self.trainer.datamodule if self.trainer is not None else None)
        if stage == "fit" and self.trainer is not None:
            self.check_trainer(self.trainer.accumulate_grad_batches, self.trainer.precision)
            if self.hparams.ensemble > 1 and self.trainer.gradient_clip_val:
                raise ConfigError(
                    f"Expected `trainer.gradient_clip_val` to be null with `ensemble` = {self.hparams.ensemble} "
                    f"(the norm would couple the members) but got {self.trainer.gradient_clip_val!r}"
                )
            if self.hparams.rule == "ist" and self.hparams.ist_local_steps > 1 and self.trainer.gradient_clip_val:
                raise ConfigError(
                    f"Expected `trainer.gradient_clip_val` to be null with `ist_local_steps` = {self.hparams.ist_local_steps} "
                    f"(one SGD step must land on the merged weights) but got {self.trainer.gradient_clip_val!r}"
                )

    def check_trainer(self, accumulate_grad_batches: int, precision: str) -> None:
        """Trainer settings the optimizer cannot follow; the CLI calls this (with the precision asked for)
        before any log is written.

        Raises:
            ConfigError: IST rounds (``ist_local_steps`` > 1), SAM or Entropy-SGD, which re-evaluate the loss
                on the step's batch, with ``accumulate_grad_batches`` > 1; or with 16-bit mixed precision, whose GradScaler steps without
                the closure they need (bf16 works; on a CPU Lightning runs ``16-mixed`` as bf16, but the same
                config would fail on a GPU).
        """
        optimizer = self.hparams.optimizer
        if self.hparams.rule == "ist" and self.hparams.ist_local_steps > 1 and accumulate_grad_batches != 1:
            raise ConfigError(
                f"Expected `trainer.accumulate_grad_batches` to be 1 with `ist_local_steps` = {self.hparams.ist_local_steps} "
                f"(each step is a whole round of local steps and its merge) but got {accumulate_grad_batches!r}"
            )
        if optimizer not in ("sam", "entropy_sgd"):
            return
        if accumulate_grad_batches != 1:
            raise ConfigError(
                f"Expected `trainer.accumulate_grad_batches` to be 1 for optimizer {optimizer!r} (each step re-evaluates "
                f"the loss on its own batch) but got {accumulate_grad_batches!r}"
            )
        if str(precision) in ("16", "16-mixed"):
            raise ConfigError(
                f"Expected `trainer.precision` to be 32-true, bf16-mixed or bf16-true for optimizer {optimizer!r} "
                f"(16-bit mixed precision steps without the closure it needs) but got {precision!r}"
            )

    def check_data(self, data) -> None:
        """Settings that only the data can refute; the CLI calls this before any log is written.

        Raises:
            ConfigError: a non-MSE loss on regression data; replicas without a seeded batch order;
                IST with disjoint groups on a batch smaller than ``ist_parts`` (the full batch, a minibatch
                or the last one).
        """
        hp = self.hparams
        if data is not None and not getattr(data, "classification", True) and hp.loss != "mse":
            raise ConfigError(f"Expected argument `loss` to be mse for the regression data {type(data).__name__} but got {hp.loss!r}")
        if getattr(self.net, "closed_form", False) and hp.loss != "mse":
            raise ConfigError(
                f"Expected argument `loss` to be mse with `net.closed_form` true (a least-squares readout) but got {hp.loss!r}"
            )
        if hp.replicas > 1 and not callable(getattr(data, "batch_order", None)):
            raise ConfigError(
                f"Expected a DataModule with `batch_order` (a TensorDataModule) for replicas = {hp.replicas} but got {type(data).__name__}"
            )
        train = getattr(data, "train", None)  # the prepared split, when there is one (image sets may say n_train = null)
        n_train, batch_size = len(train.x) if train is not None else getattr(data, "n_train", None), getattr(data, "batch_size", 0)
        if hp.rule == "ist" and hp.ist_keep_prob is None and isinstance(n_train, int):  # disjoint chunks
            sizes = [n_train] if not batch_size or batch_size >= n_train else [batch_size, n_train % batch_size or batch_size]
            if min(sizes) < hp.ist_parts:
                raise ConfigError(
                    f"Expected every batch to hold at least `ist_parts` = {hp.ist_parts} samples (one per subnetwork) "
                    f"but n_train = {n_train} with batch_size = {batch_size} gives a batch of {min(sizes)}"
                )

    # ---- training ----------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.replica_loss(self.net, *batch)
        if self.hparams.log_batch_loss and self._batch_loss_step != self.global_step:  # once a step (SAM re-runs it)
            self._batch_loss_step = self.global_step
            publish(self.trainer, {"train/batch_loss": loss.detach() / self.hparams.ensemble})
        for r, replica in enumerate(self.replica_nets, start=1):
            loss = loss + self.replica_loss(replica, *self.replica_batch(r, batch_idx))  # disjoint parameters: own gradients
        if self.hparams.replica_coupling > 0:  # Replicated SGD: each replica pulled toward the replicas' centre
            loss = loss + 0.5 * self.hparams.replica_coupling * replica_spread([self.net, *self.replica_nets])
        if self.device_flag is not None:  # on the device: a non-finite loss freezes the weights, the host looks later
            self.device_flag.update(loss, self.global_step)
        elif not math.isfinite(loss.item()):  # diverged: stop now, skip this update, keep the last finite state
            self.diverged_at_step = self.global_step
            self.trainer.should_stop = True
            return None
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        flag = self.device_flag
        if flag is not None and (self.global_step % flag.every == 0 or batch_idx + 1 == self.trainer.num_training_batches):
            self.check_divergence()

    def check_divergence(self) -> bool:
        """Whether the run has met a non-finite loss. Reads the on-device flag when the check is deferred
        (a host sync) and then stops the run at its first non-finite step, as the per-step check does."""
        if self.diverged_at_step is None and self.device_flag is not None:
            step = self.device_flag.first_nonfinite_step()
            if step is not None:
                self.diverged_at_step = step
                self.trainer.should_stop = True
        return self.diverged_at_step is not None

    def replica_loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of one replica on its batch, by the module's rule. Under ``ist`` the round's
        masks come from (seed, step) alone, so every replica draws the same ones."""
        hp = self.hparams
        if hp.ensemble > 1:  # Σ_k L_k: member k's own gradient in its slice
            return per_member(partial(losses.per_sample_loss, hp.loss), net(x), y).mean(1).sum()
        if hp.rule != "ist":
            return self.loss_fn(net(x), y)
        generator = step_generator(hp.seed, self.global_step)  # resumes exactly
        if hp.ist_local_steps > 1:  # a whole round: its gradient steps SGD onto the merged weights
            return local_round_loss(net, self.loss_fn, x, y, hp.ist_parts, generator, hp.lr, hp.ist_local_steps, hp.ist_keep_prob)
        return ist_loss(net, self.loss_fn, x, y, hp.ist_parts, generator, hp.ist_keep_prob)

    def on_after_backward(self) -> None:
        hp = self.hparams
        if hp.rule == "ist" and hp.ist_local_steps == 1:  # the merge of one local step (τ > 1 merged already)
            counts = None
            if hp.ist_keep_prob is not None:  # overlapping masks: unit r's gradient over its N_r holders
                counts = ist_masks(self.net.width, hp.ist_parts, step_generator(hp.seed, self.global_step), hp.ist_keep_prob).sum(0)
            for net in (self.net, *self.replica_nets):
                average_shared_gradients(net, hp.ist_parts, counts)

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

    def configure_optimizers_now(self, fused: bool = False) -> torch.optim.Optimizer:
        """The optimizer over the net and its replicas (``layer_lr`` applies to every copy). Replica r's
        groups carry ``block = r``, so SAM normalizes its ascent step per replica."""
        hp = self.hparams
        groups = []
        for r, net in enumerate((self.net, *self.replica_nets)):
            groups += [{**group, "block": r} for group in param_groups(net, hp.lr, self.layer_lr)]
        hyper = {
            "sam": {"rho": hp.sam_rho},
            "entropy_sgd": {
                "gamma": hp.entropy_gamma,
                "inner_steps": hp.entropy_inner_steps,
                "inner_lr": hp.entropy_inner_lr,
                "noise": hp.entropy_noise,
            },
        }.get(hp.optimizer, {})
        return build_optimizer(hp.optimizer, groups, hp.lr, hp.momentum, hp.weight_decay, fused=fused, **hyper)

    def divergence_check_interval(self) -> int:
        """Steps between the host's looks for a non-finite loss (``divergence_check_every_n_steps`` resolved):
        1 reads the loss every step; k > 1 keeps the check on the device."""
        hp, every = self.hparams, self.hparams.divergence_check_every_n_steps
        if hp.optimizer not in DEFERRABLE or str(getattr(self._trainer, "precision", "32-true")) in ("16", "16-mixed"):
            return 1
        if every is not None:
            return every
        return DEFAULT_EVERY if self.device.type == "cuda" else 1  # fused SGD and Adam there for certain

    def configure_optimizers(self):
        hp = self.hparams
        every = self.divergence_check_interval()
        opt = self.configure_optimizers_now(fused=every > 1)
        self.device_flag = DeviceFlag(opt, self.device, every) if every > 1 else None
        if hp.lr_schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        cosine = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}

    # ---- whole-set evaluation ------------------------------------------------------------------
    def _update_metrics(self, split: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        output = self.net(x)
        if self.hparams.ensemble > 1:
            self._update_member_metrics(split, output, y)
            return
        self.metrics[f"{split}_loss"].update(losses.per_sample_loss(self.hparams.loss, output, y))
        if losses.is_classification(y):
            self.metrics[f"{split}_acc"].update(losses.correct(output, y))

    def _update_member_metrics(self, split: str, output: torch.Tensor, y: torch.Tensor) -> None:
        """Each member's per-sample losses (and hits, for class labels) into the ensemble's metrics."""
        self.member_metrics[f"{split}_loss"].update(per_member(partial(losses.per_sample_loss, self.hparams.loss), output, y))  # (E, n)
        if losses.is_classification(y):
            self.member_metrics[f"{split}_acc"].update(per_member(losses.correct, output, y))

    def _log_metrics(self, splits: tuple[str, ...]) -> dict[str, torch.Tensor]:
        values = {}
        for split in splits:
            for what in ("loss", "acc"):
                metric = self.metrics[f"{split}_{what}"]
                if metric.update_called:
                    values[f"{split}/{what}"] = metric.compute()
                metric.reset()
        for name, metric in self.member_metrics.items():  # ensemble/<k>/<split>/<what>; the plain tag: their mean
            split, what = name.split("_")
            if split in splits:
                if metric.update_called:
                    members = metric.compute()  # (E,)
                    values[f"{split}/{what}"] = members.mean()
                    values.update({f"ensemble/{k}/{split}/{what}": value for k, value in enumerate(members)})
                metric.reset()
        publish(self.trainer, values)  # metric.compute() has already reduced across ranks
        return values

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update_metrics("train" if dataloader_idx == 0 else "test", batch)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(("train", "test"))
        if not self.trainer.sanity_checking:
            self.last_eval_step = self.trainer.global_step

    def on_fit_start(self) -> None:
        """A closed-form readout (``net.closed_form``, e.g. RandomFeatures) is solved on the whole training
        set before the first step, for the net and each replica; a resumed run keeps its checkpoint's."""
        if self.trainer.global_step != 0 or not getattr(self.net, "closed_form", False):
            return
        train = self.trainer.datamodule.train  # the whole set on every rank (not its shard): the same readout everywhere
        x, y = train.x.to(self.device), train.y.to(self.device)
        for net in (self.net, *self.replica_nets):
            net.fit_readout(x, losses.mse_targets(y, net.output_dim))

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
