"""Sensitivity of the learned function across the subspace that holds the data.

For data x = U z on a d0-dimensional subspace of R^d (U ∈ R^(d×d0), UᵀU = I, P = UUᵀ, P⊥ = I − P)
and the input Jacobian J(x) = ∂f(x)/∂x ∈ R^(k×d) of the net,

    transversal_ratio = E_x ‖J(x) P⊥‖_F / E_x ‖J(x) P‖_F        (x over probe points on the subspace)

(‖·‖_F is the Euclidean norm of ∇ₓf for one output). It is how fast f changes when x leaves the data
subspace, per unit of how fast it changes along it. He, Tsai & Ward (2022), "Side effects of learning
from low-dimensional data embedded in a Euclidean space": depth and noise in the codimension of the
data regularize the variation across the subspace. For a two-layer net f = c2 W2 σ(c1 W1 x + b1) + b2
trained by gradient descent on data in the subspace, ∂L/∂W1 = Σ δ xᵀ has rows in span(U), so W1 P⊥
never moves from its initialization: ∇ₓf = c1 W1ᵀ diag(σ') c2 W2ᵀ keeps its P⊥ part's factor W1 P⊥
at init, and only the hidden-layer factor diag(σ') c2 W2ᵀ that it multiplies is learned.
"""

from __future__ import annotations

import time
from typing import Optional

import pytorch_lightning as pl
import torch
from torch import nn
from typing_extensions import override

from callbacks.diagnostic import ProbeCallback, module_net
from callbacks.net_state import exact_backprop, preserved_state


def input_jacobian(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """J[i] = ∂f(x_i)/∂x_i, shape (n, k, d) for x of shape (n, d) and f(x) of shape (n, k), in eval mode
    (per-sample: dropout off, BatchNorm on running statistics); one backward pass per output."""
    with preserved_state(net, train=False), exact_backprop(net), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        out = net(x).reshape(len(x), -1)  # (n, k)
        rows = [torch.autograd.grad(out[:, c].sum(), x, retain_graph=c + 1 < out.shape[1])[0] for c in range(out.shape[1])]
    return torch.stack(rows, dim=1).flatten(2)  # (n, k, d)


def gradient_split(net: nn.Module, x: torch.Tensor, basis: torch.Tensor) -> tuple[float, float]:
    """``(E ‖J P‖_F, E ‖J P⊥‖_F)`` over the rows of x (n, d), P = UUᵀ the projector on span(basis),
    basis = U (d, d0) with orthonormal columns (``LowDimManifold.embedding``); computed in float64.

    Raises:
        ValueError: when basis is not (d, d0) with d0 ≤ d for x's d.
    """
    d = x.flatten(1).shape[1]
    if basis.ndim != 2 or basis.shape[0] != d or basis.shape[1] > d:
        raise ValueError(f"Expected argument `basis` to have shape (d, d0) with d = {d}, d0 <= d but got {tuple(basis.shape)}")
    jac = input_jacobian(net, x).double()  # (n, k, d)
    u = basis.to(jac.device, torch.float64)  # (d, d0)
    along = jac @ u  # (n, k, d0): J U, and ‖J P‖_F = ‖J U‖_F
    across = jac - along @ u.T  # (n, k, d): J P⊥
    return float(along.flatten(1).norm(dim=1).mean()), float(across.flatten(1).norm(dim=1).mean())


def data_basis(x: torch.Tensor, rtol: float = 1e-5) -> torch.Tensor:
    """An orthonormal basis (d, r) of span{x_i}, the smallest subspace holding the inputs x (n, d): the right
    singular vectors of x with singular value > rtol × the largest (float64; rtol absorbs float32 rounding)."""
    _, s, vh = torch.linalg.svd(x.flatten(1).double(), full_matrices=False)
    return vh[s > rtol * s[0]].T  # (d, r)


def transversal_ratio(net: nn.Module, x: torch.Tensor, basis: torch.Tensor) -> float:
    """E ‖J P⊥‖_F / E ‖J P‖_F (module docstring); inf where f is constant along the subspace on x."""
    along, across = gradient_split(net, x, basis)
    return across / along if along > 0 else float("inf")


class TransversalSensitivity(ProbeCallback):
    """Logs ``sensitivity/transversal_ratio`` (E‖P⊥∇ₓf‖ / E‖P∇ₓf‖), ``sensitivity/along`` (E‖P∇ₓf‖),
    ``sensitivity/across`` (E‖P⊥∇ₓf‖) and ``diag/sensitivity_seconds`` at the start, every
    ``every_n_epochs`` epochs and at the end of training (see :class:`callbacks.diagnostic.Diagnostic`).

    The probe points are ``probe_size`` training inputs drawn once from ``seed`` and projected onto the
    subspace (P x: the clean points when the training inputs carry noise across it). U is the
    DataModule's ``embedding`` (``datamodules.synthetic.LowDimManifold``) when it exposes one, else a
    basis of the span of the training inputs (:func:`data_basis`; R^d, and a ratio of 0, for data in
    general position with n ≥ d).

    Args:
        every_n_epochs: how often to measure.
        probe_size: probe points (``None`` = the whole training set).
        seed: draws the probe subset.

    Raises:
        ConfigError: on a non-positive ``every_n_epochs`` or ``probe_size``.
    """

    def __init__(self, every_n_epochs: int = 1, probe_size: Optional[int] = 256, seed: int = 0) -> None:
        super().__init__(every_n_epochs, probe_size, seed)
        self.basis: Optional[torch.Tensor] = None  # (d, d0), CPU

    def subspace(self, data) -> torch.Tensor:
        """U: the DataModule's ``embedding`` if it has one, else :func:`data_basis` of its training inputs."""
        if self.basis is None:
            embedding = getattr(data, "embedding", None)
            if isinstance(embedding, torch.Tensor) and embedding.ndim == 2:
                self.basis = embedding.detach().cpu()
            else:
                data.prepare_splits()
                self.basis = data_basis(data.train.x).float()
        return self.basis

    def measure(self, net: nn.Module, x: torch.Tensor, basis: torch.Tensor) -> dict[str, float]:
        """The logged values for probe inputs x (no Lightning involved); x is projected onto span(basis) first."""
        start = time.perf_counter()
        u = basis.to(x.device, x.dtype)
        x = x.flatten(1) @ u @ u.T  # (n, d): P x
        along, across = gradient_split(net, x, basis)
        return {
            "sensitivity/transversal_ratio": across / along if along > 0 else float("inf"),
            "sensitivity/along": along,
            "sensitivity/across": across,
            "diag/sensitivity_seconds": time.perf_counter() - start,
        }

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        x, _ = self.probe(trainer, pl_module.device)
        return self.measure(module_net(pl_module), x, self.subspace(trainer.datamodule))
