"""SGD gradient noise: the trace of the covariance of the minibatch gradient, and the SGD temperature.

    g = ∇L(θ) on all n samples,   g_B = ∇L_B(θ) on a minibatch of B samples drawn without replacement
    tr Σ_B = E ‖g_B − g‖²

SGD with step η is, to first order, gradient descent plus noise of covariance η²Σ_B per step; its
stationary spread scales with the temperature η/B (Jastrzębski et al., 2017, "Three Factors
Influencing Minima in SGD"; Mandt et al., 2017). For per-sample losses ℓᵢ and batches drawn without
replacement, tr Σ_B = (n − B)/(B(n − 1)) · (1/n) Σᵢ ‖∇ℓᵢ − g‖², which is 0 at B = n.

The fluctuation–dissipation (FDT) temperature. Mignacco & Urbani 2022 ("The effective noise of stochastic
gradient descent", J. Stat. Mech. 083405, arXiv:2112.10852) measure SGD's noise in the underparameterized
regime, where SGD reaches a stationary state at positive training error, by the temperature of the FDT:
with C(τ) = (1/P) ⟨δθ(t + τ)·δθ(t)⟩ and the response R(τ) = (1/P) Σ_p ∂⟨θ_p(t + τ)⟩/∂h_p(t) to a field
h that adds −h·θ to the loss, a system in equilibrium at temperature T obeys R(τ) = −(1/T) dC/dτ. Here
P is the number of trainable parameters and t = η·(steps) the SGD time, in which SGD reads, to first
order in η,

    dθ = −∇L(θ) dt + √η Σ_B^{1/2} dW                     (noise covariance η Σ_B per unit time)

Near a stationary point with Hessian H this is an Ornstein–Uhlenbeck process; its stationary covariance S
solves HS + SH = ηΣ_B. At short lags τ the integrated response is χ(τ) = ∫₀^τ R ≈ τ (R(0⁺) = 1) and
C(0) − C(τ) ≈ τ Tr(HS)/P (the drift −Hδθ; the noise after t is independent of δθ(t)), so the FDT ratio is

    T_FDT = Tr(HS)/P = η tr Σ_B / (2P)                    (``sgd/fdt_temperature``)

the temperature T of the Langevin dynamics dθ = −∇L dt + √(2T) dW with the same noise power (2TP = η
tr Σ_B), and the equipartition temperature: ⟨δθᵀ H δθ⟩ = ⟨δθ·∇L⟩ = P·T_FDT at stationarity. It is
exact to first order in η (discrete SGD on a quadratic adds η Tr(HSH)/(2P)); with anisotropic Σ_B the
FDT ratio at long lags, Tr S / Tr H⁻¹, may differ from this short-lag one. It is computed from the same
tr Σ_B estimate as ``sgd/noise_trace``, at the current θ (before stationarity: the current noise power,
not a stationary FDT ratio), and like ``sgd/temperature`` ignores momentum (heavy ball with β multiplies
it by 1/(1 − β)). Unlike η/B it includes how noisy the per-sample gradients are where SGD is: it goes to 0
where the net interpolates and every per-sample gradient vanishes. tests/test_exp_temperature.py checks
it against the closed-form stationary state of SGD on a quadratic and against the equipartition
temperature of brute-force minibatch SGD on linear regression.

Mode and state: the gradients are taken in *training* mode (the loss the optimizer descends); modes,
buffers, ``.grad`` and the torch RNG state are restored afterwards (``preserved_state``).
"""

from __future__ import annotations

import time
from typing import Optional

import pytorch_lightning as pl
import torch
from torch import nn
from typing_extensions import override

from callbacks.diagnostic import ProbeCallback, module_loss, module_net, optimizer_lr
from callbacks.net_state import LossFn, preserved_state, trainable_parameters
from lightning_modules.checks import ConfigError, check_positive_int, is_integer


def _flat_grad(params: list[nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
    return torch.cat([g.reshape(-1) for g in grads]).double()


def gradient_noise_trace(
    net: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    n_batches: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> float:
    """Estimate of tr Σ_B, the summed variance of the batch-size-B minibatch gradient (module docstring):

        tr Σ_B ≈ (1/K) Σₖ ‖g_k − g‖²

    where g is the gradient of ``loss_fn`` (a mean over samples) on all of ``(x, y)`` and g_1 … g_K are
    the gradients on the first K disjoint slices of size B of ``torch.randperm(n, generator=generator)``
    (seed 0 when ``generator`` is None): each slice is a uniform draw without replacement, as an SGD
    epoch draws its batches, so the estimate is unbiased. ``n_batches=None`` (or more than ⌊n/B⌋) uses
    all ⌊n/B⌋ of them. At B = n it is exactly 0. With batch-dependent layers (BatchNorm in training mode)
    E g_B ≠ g and the value is the mean squared distance to the full-batch gradient.

    Raises:
        ConfigError: unless 1 ≤ ``batch_size`` ≤ n and ``n_batches`` is a positive integer or None.
    """
    n = len(x)
    if not is_integer(batch_size) or not 1 <= batch_size <= n:
        raise ConfigError(f"Expected argument `batch_size` to be an integer in [1, {n}] (the number of samples) but got {batch_size!r}")
    check_positive_int("n_batches", n_batches, allow_none=True)
    k = n // batch_size if n_batches is None else min(n_batches, n // batch_size)
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    order = torch.randperm(n, generator=generator).to(x.device)
    params = [p for _, p in trainable_parameters(net)]
    with preserved_state(net, train=True):
        # The full gradient on the permuted set: the same sum as on (x, y), and bit-equal to g_1 at B = n.
        g = _flat_grad(params, loss_fn(net(x[order]), y[order]))
        total = 0.0
        for idx in order[: k * batch_size].split(batch_size):
            g_k = _flat_grad(params, loss_fn(net(x[idx]), y[idx]))
            total += float(torch.sum((g_k - g) ** 2))
    return total / k


def fdt_temperature(noise_trace: float, lr: float, n_params: int) -> float:
    """The fluctuation–dissipation temperature of SGD with step ``lr`` (module docstring):

        T_FDT = η · tr Σ_B / (2P)

    with ``noise_trace`` = tr Σ_B (:func:`gradient_noise_trace`) and ``n_params`` = P, the number of
    trainable parameters.

    >>> fdt_temperature(0.5, lr=0.1, n_params=10)
    0.0025

    A NaN trace (a diverged run) gives NaN, as it does for ``sgd/noise_trace``.

    Raises:
        ConfigError: unless ``n_params`` is a positive integer.
    """
    check_positive_int("n_params", n_params)
    return lr * noise_trace / (2 * n_params)


class GradientNoise(ProbeCallback):
    """Logs ``sgd/noise_trace`` (tr Σ_B at the training batch size), ``sgd/temperature`` (η/B, η of the
    first optimizer param group), ``sgd/fdt_temperature`` (η tr Σ_B / (2P), :func:`fdt_temperature`, P the
    trainable parameters of the module's net) and ``diag/sgd_noise_seconds`` at the start of training,
    after every ``every_n_epochs``-th epoch and at the end (see :class:`callbacks.diagnostic.Diagnostic`).

    B is the DataModule's ``batch_size`` times the number of processes (DDP averages their gradients),
    or n_train for full batch; then the noise is 0 and no gradient is computed. The batches are the
    same at every call (drawn from ``seed``). On a probe subset of P < n_train samples the batches
    come from the probe, which lowers the value by the factor (P − B)(n − 1)/((P − 1)(n − B)).

    Args:
        every_n_epochs: how often to measure.
        n_batches: K, minibatches per estimate (K + 1 gradients per call).
        probe_size: samples the estimate draws from; ``None`` = the whole training set. Must exceed B.
        seed: draws the probe subset and the batches.

    Raises:
        ValueError: on a non-positive ``every_n_epochs``, ``n_batches`` or ``probe_size``; at the start of
            training, when the DataModule has no ``batch_size`` or the probe is not larger than B.
    """

    def __init__(self, every_n_epochs: int = 1, n_batches: int = 8, probe_size: Optional[int] = None, seed: int = 0) -> None:
        super().__init__(every_n_epochs, probe_size, seed)
        check_positive_int("n_batches", n_batches)
        self.n_batches = n_batches

    def batch_size(self, trainer: pl.Trainer) -> tuple[int, int]:
        """``(B, n_train)`` of the training run.

        Raises:
            ConfigError: when the DataModule has no ``batch_size`` or ``train`` split.
        """
        data = trainer.datamodule
        if data is None or not hasattr(data, "batch_size") or not hasattr(data, "prepare_splits"):
            raise ConfigError(
                f"Expected a TensorDataModule (with `batch_size` and a `train` split) for GradientNoise but got {type(data).__name__}"
            )
        data.prepare_splits()
        n_train = len(data.train)
        b = n_train if data.batch_size is None else min(data.batch_size * trainer.world_size, n_train)
        n_probe = n_train if self.probe_size is None else min(self.probe_size, n_train)
        if b < n_train and n_probe <= b:
            raise ConfigError(f"Expected argument `probe_size` to be null or larger than the batch size {b} but got {self.probe_size!r}")
        return b, n_train

    def measure(
        self, net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, lr: float, batch_size: int, n_train: int
    ) -> dict[str, float]:
        """The logged values for one call (no Lightning involved)."""
        start = time.perf_counter()
        if batch_size >= n_train:
            trace = 0.0  # full batch: no gradient noise
        else:
            trace = gradient_noise_trace(net, loss_fn, x, y, batch_size, self.n_batches, torch.Generator().manual_seed(self.seed))
        n_params = sum(p.numel() for _, p in trainable_parameters(net))
        return {
            "sgd/noise_trace": trace,
            "sgd/temperature": lr / batch_size,
            "sgd/fdt_temperature": fdt_temperature(trace, lr, n_params),
            "diag/sgd_noise_seconds": time.perf_counter() - start,
        }

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.batch_size(trainer)  # fail at the start, also when a resumed run measures nothing now
        super().on_train_start(trainer, pl_module)

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        b, n_train = self.batch_size(trainer)
        x, y = self.probe(trainer, pl_module.device)
        lr = optimizer_lr(trainer)
        return self.measure(module_net(pl_module), module_loss(pl_module), x, y, lr, b, n_train)
