"""Flatness: the mean increase of the training loss under random relative weight perturbations.

    ΔL(σ) = (1/S) Σₛ [L(θ + δₛ) − L(θ)],    δₛ = σ · ‖W‖_F/√numel(W) · ξₛ  for each parameter tensor W,  ξₛ ~ N(0, I)

A flat minimum keeps ΔL small (Hochreiter & Schmidhuber, 1997; Keskar et al., 2017, "On Large-Batch
Training for Deep Learning", who perturb relative to the weight magnitude). Near a minimum
ΔL ≈ ½ Σ_W s_W² tr H_WW, s_W = σ‖W‖_F/√numel(W), a magnitude-aware Hessian trace. The noise is
relative per *tensor* (entry scale σ·rms(W)), not per entry as in the magnitude-aware flatness of
Jiang et al., 2020 ("Fantastic Generalization Measures and Where to Find Them", σ|wᵢ|): per tensor
it is invariant to the layer rescalings W₁ → cW₁, W₂ → W₂/c that leave a ReLU net unchanged (Dinh et al.,
2017), and it also moves entries that are 0 (biases at init). A tensor that is all zeros is not moved.

The loss profile along the top Hessian eigenvector v (‖v‖ = 1, eigenvalue λ_max) asks the same question
in the sharpest direction, at a few distances t (:func:`loss_profile`):

    P(t) = ½ [L(θ + t v) + L(θ − t v)] − L(θ)  =  ½ λ_max t² + O(t⁴)

The symmetric average cancels the gradient's linear term, so P(t)/(½ λ_max t²) → 1 as t → 0; far out it
says whether the loss grows slower than the quadratic (ratio < 1: the valley widens, as the multiscale
picture of the edge of stability has it; Kong & Tao 2020, Ma et al. 2022) or faster.

Mode and state: the loss is evaluated in *training* mode; every evaluation of a call starts from the
same RNG state (one dropout mask for all), and modes, buffers, ``.grad``, the RNG state and the
weights (bit for bit) are restored afterwards.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from callbacks.diagnostic import ProbeCallback
from callbacks.net_state import LossFn, preserved_state, trainable_parameters
from callbacks.sharpness import hessian_top_eigenpairs
from lightning_modules.checks import ConfigError, check_number, check_positive_int


@contextmanager
def moved_weights(
    net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor
) -> Iterator[tuple[list[nn.Parameter], list[torch.Tensor], Callable[[], float]]]:
    """``(params, saved, loss)`` for moving the trainable weights and reading the loss: the parameters, copies
    of their values, and ``loss()`` = loss_fn(net(x), y) in training mode, every call from the same RNG
    state (one dropout mask for all). On exit the weights are restored bit for bit, and modes, buffers,
    ``.grad`` and the RNG state as :func:`callbacks.net_state.preserved_state` restores them."""
    params = [p for _, p in trainable_parameters(net)]
    saved = [p.detach().clone() for p in params]
    cuda = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})

    def loss() -> float:
        with torch.random.fork_rng(devices=cuda):  # the same RNG state, so the same dropout mask, every time
            return float(loss_fn(net(x), y))

    with preserved_state(net, train=True):
        try:
            yield params, saved, loss
        finally:
            with torch.no_grad():
                for p, w in zip(params, saved):
                    p.copy_(w)


@torch.no_grad()
def perturbed_loss_increase(
    net: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: float = 0.01,
    n_samples: int = 10,
    generator: Optional[torch.Generator] = None,
) -> float:
    """ΔL(σ) of the module docstring with S = ``n_samples`` draws over the trainable parameters.

    ξ is drawn on the CPU from ``generator`` (seed 0 when None), sample by sample and tensor by tensor
    in ``net.parameters()`` order, in the parameters' dtype, then moved to their device.

    Raises:
        ConfigError: on a negative ``sigma`` or an ``n_samples`` that is no positive integer.
    """
    check_number("sigma", sigma, 0.0)
    check_positive_int("n_samples", n_samples)
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    total = 0.0
    with moved_weights(net, loss_fn, x, y) as (params, saved, loss):
        base = loss()
        scales = [sigma * float(torch.linalg.vector_norm(w)) / w.numel() ** 0.5 for w in saved]  # σ‖W‖_F/√numel(W)
        for _ in range(n_samples):
            for p, w, s in zip(params, saved, scales):
                xi = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                p.copy_(w + s * xi)
            total += loss() - base
    return total / n_samples


class Flatness(ProbeCallback):
    """Logs ``flatness/perturbed_loss_increase`` (ΔL(σ)) and ``diag/flatness_seconds`` at the start of
    training, after every ``every_n_epochs``-th epoch and at the end (see :class:`callbacks.diagnostic.Diagnostic`).
    The perturbations ξ are the same at every call (drawn from ``seed``), so the curve over epochs is not
    blurred by fresh noise.

    Args:
        every_n_epochs: how often to measure.
        sigma: σ, the relative size of the perturbation of each parameter tensor.
        n_samples: S, perturbations per call (S + 1 forward passes).
        probe_size: training samples the loss is evaluated on; ``None`` = the whole training set.
        seed: draws the probe subset and ξ.

    Raises:
        ConfigError: on a negative ``sigma``, or an ``every_n_epochs``, ``n_samples`` or ``probe_size`` that is no positive integer.
    """

    def __init__(
        self, every_n_epochs: int = 1, sigma: float = 0.01, n_samples: int = 10, probe_size: Optional[int] = None, seed: int = 0
    ) -> None:
        super().__init__(every_n_epochs, probe_size, seed)
        check_number("sigma", sigma, 0.0)
        check_positive_int("n_samples", n_samples)
        self.sigma, self.n_samples = sigma, n_samples

    def measure(self, net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The logged values for one call (no Lightning involved)."""
        start = time.perf_counter()
        increase = perturbed_loss_increase(net, loss_fn, x, y, self.sigma, self.n_samples, torch.Generator().manual_seed(self.seed))
        return {"flatness/perturbed_loss_increase": increase, "diag/flatness_seconds": time.perf_counter() - start}


@torch.no_grad()
def loss_profile(
    net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor, steps: list[float]
) -> list[float]:
    """P(t) = ½ [L(θ + t v) + L(θ − t v)] − L(θ) for each t in ``steps`` (module docstring); v = ``direction``,
    a flat vector over the trainable parameters in ``net.named_parameters()`` order. Same mode, RNG and
    restoring rules as :func:`perturbed_loss_increase`."""
    out = []
    with moved_weights(net, loss_fn, x, y) as (params, saved, loss):
        base = loss()
        pieces = direction.to(params[0].device, params[0].dtype).split([p.numel() for p in params])
        for t in steps:
            sides = []
            for sign in (1.0, -1.0):
                for p, w, v in zip(params, saved, pieces):
                    p.copy_(w + sign * t * v.view_as(p))
                sides.append(loss())
            out.append(0.5 * (sides[0] + sides[1]) - base)
    return out


class LossProfile(ProbeCallback):
    """Logs the loss profile along the top Hessian eigenvector (module docstring) at distances ``steps``:
    ``flatness/profile/<t>`` = P(t) and ``flatness/profile_over_quadratic/<t>`` = P(t) / (½ λ_max t²), plus
    ``flatness/profile_lambda_max`` and ``diag/loss_profile_seconds``, at the start of training, after every
    ``every_n_epochs``-th epoch and at the end.

    Args:
        every_n_epochs: how often to measure.
        steps: the distances t > 0 (in parameter units: θ moves by t along the unit vector v).
        tol: Lanczos tolerance of the eigenpair (see :func:`callbacks.sharpness.hessian_top_eigs`).
        probe_size: training samples the loss and the Hessian use; ``None`` = the whole training set.
        seed: draws the probe subset.

    Raises:
        ConfigError: on an empty ``steps`` or a step that is no finite number > 0, a negative ``tol``, or an
            ``every_n_epochs`` or ``probe_size`` that is no positive integer.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        steps: tuple[float, ...] = (0.01, 0.1, 0.3, 1.0),
        tol: float = 1e-4,
        probe_size: Optional[int] = None,
        seed: int = 0,
    ) -> None:
        super().__init__(every_n_epochs, probe_size, seed)
        if not steps:
            raise ConfigError(f"Expected argument `steps` to hold at least one distance but got {steps!r}")
        for t in steps:
            check_number("steps", t, 0.0, strict_minimum=True)
        check_number("tol", tol, 0.0)
        self.steps, self.tol = [float(t) for t in steps], tol

    def measure(self, net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The logged values for one call (no Lightning involved)."""
        start = time.perf_counter()
        pair = hessian_top_eigenpairs(net, loss_fn, x, y, 1, self.tol)
        lam = float(pair.values[0])
        profile = loss_profile(net, loss_fn, x, y, pair.vectors[:, 0], self.steps)
        values = {"flatness/profile_lambda_max": lam}
        for t, p in zip(self.steps, profile):
            values[f"flatness/profile/{t:g}"] = p
            values[f"flatness/profile_over_quadratic/{t:g}"] = p / (0.5 * lam * t * t) if lam != 0 else float("nan")
        values["diag/loss_profile_seconds"] = time.perf_counter() - start
        return values
