"""Random-features regression: a frozen random first layer, a trained linear readout.

    single (double=False):  f(x) = 1/√m · a · σ(F₁ x / √d)
    double (double=True):   f(x) = 1/√m · a · σ(F₂ σ(F₁ x / √d) / √m)

F₁ ∈ R^(m×d), F₂ ∈ R^(m×m) have i.i.d. N(0, 1) entries and are never trained (``requires_grad``
False); only a ∈ R^(k×m) is, from a = 0, so gradient descent converges to the min-norm
interpolator and the test error peaks at m = n (double descent; Mei & Montanari 2019). ``double``
stacks a second, independent frozen random layer of the same width m (two random layers before the
readout), as in the deep random-features models of d'Ascoli et al. 2020, "Triple descent and the
two kinds of overfitting".

With ``closed_form=True`` the readout is not trained from zero but solved before the first step
(:func:`ridge_readout`): the minimum-norm least-squares readout (``ridge = 0``, the limit gradient
descent from a = 0 reaches) or the ridge readout with penalty λ = ``ridge`` (the limit of gradient
descent with weight decay λ on the MSE loss). The training loop still runs from there (e.g. with
``lr: 0`` it only evaluates).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lightning_modules.checks import ConfigError, check_bool, check_choice, check_number, check_sizes
from lightning_modules.nets.mlp import ACTIVATIONS, Activation


def ridge_readout(z: torch.Tensor, y: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
    """The readout a ∈ R^(k×m) of the linear model f = z aᵀ on features z (n, m), targets y (n, k).

    ridge λ = 0: a = (z⁺ y)ᵀ, the minimum-norm minimizer of ‖z aᵀ − y‖² (the interpolator of least
    norm when m ≥ n and z has rank n; least squares when m < n). It is the limit of gradient descent
    on the MSE loss from a = 0.

    ridge λ ≠ 0: the minimizer of 1/(2n) ‖z aᵀ − y‖² + λ/2 ‖a‖² (the suite's MSE loss plus weight
    decay λ), in the form that inverts the smaller Gram matrix:

        m ≥ n:  a = yᵀ (z zᵀ + nλ I_n)⁻¹ z        m < n:  a = ((zᵀz + nλ I_m)⁻¹ zᵀ y)ᵀ

    A negative λ is allowed while the matrix inverted stays positive definite, λ > −σ_min(z)²/n
    (Tsigler & Bartlett 2023, "Benign overfitting in ridge regression": the best ridge can be
    negative). For m < n that is a strictly convex problem with this minimizer; for m ≥ n the
    objective is unbounded below and a is its stationary point within the row space of z, the span
    that gradient descent from a = 0 never leaves. Computed in float64, returned in z's dtype.

    Raises:
        ConfigError: when λ is not a finite number, or λ < 0 makes the matrix singular or indefinite.
    """
    check_number("ridge", ridge)
    z64, y64 = z.double(), y.double().reshape(len(z), -1)  # (n, m), (n, k)
    n, m = z64.shape
    if ridge == 0:
        return (torch.linalg.pinv(z64) @ y64).T.to(z.dtype)  # (k, m)
    wide = m >= n
    gram = z64 @ z64.T if wide else z64.T @ z64  # (n, n) or (m, m)
    factor, info = torch.linalg.cholesky_ex(gram + n * ridge * torch.eye(len(gram), dtype=gram.dtype, device=gram.device))
    if info.item() != 0:
        bound = -torch.linalg.eigvalsh(gram)[0].item() / n
        raise ConfigError(
            f"Expected argument `ridge` to be > {bound:.4g} (−σ_min(features)²/n, where the ridge problem stays well posed) but got {ridge!r}"
        )
    if wide:
        return (y64.T @ torch.cholesky_solve(z64, factor)).to(z.dtype)  # yᵀ (z zᵀ + nλ I)⁻¹ z
    return torch.cholesky_solve(z64.T @ y64, factor).T.to(z.dtype)


class RandomFeatures(nn.Module):
    """f(x) = 1/√m · a · φ(x) with frozen random features φ (formulas in the module docstring).

    Args:
        input_dim: d.
        width: m, the number of random features.
        output_dim: k.
        activation: σ.
        double: two frozen random layers F₁, F₂ instead of one.
        closed_form: solve the readout before the first step (:meth:`fit_readout`, MSE loss only)
            instead of training it from zero.
        ridge: λ of the closed-form readout (0: minimum norm; negative allowed, see :func:`ridge_readout`).

    Raises:
        ConfigError: on sizes that are no positive integers, an unknown activation, a non-boolean
            ``double`` or ``closed_form``, or a ridge that is no finite number.
    """

    def __init__(
        self,
        input_dim: int,
        width: int = 256,
        output_dim: int = 1,
        activation: Activation = "relu",
        double: bool = False,
        closed_form: bool = False,
        ridge: float = 0.0,
    ) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, width=width, output_dim=output_dim)
        check_choice("activation", activation, ACTIVATIONS)
        check_bool("double", double)
        check_bool("closed_form", closed_form)
        check_number("ridge", ridge)
        self.closed_form, self.ridge = closed_form, ridge
        self.input_dim, self.width, self.output_dim, self.activation = input_dim, width, output_dim, activation
        self.two_random_layers = double  # not `self.double`: that would hide nn.Module.double()
        self.sigma = ACTIVATIONS[activation]
        layers = [nn.Linear(input_dim, width, bias=False)] + ([nn.Linear(width, width, bias=False)] if double else [])
        self.random_layers = nn.ModuleList(layers).requires_grad_(False)
        self.readout = nn.Linear(width, output_dim, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """F ~ N(0, 1) entries; a = 0."""
        for layer in self.random_layers:
            layer.weight.normal_(0.0, 1.0)
        self.readout.weight.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): σ(F₁ x / √d), then σ(F₂ φ / √m) with ``double``; shape (n, m)."""
        h = x.flatten(1)  # (n, d)
        for layer in self.random_layers:
            h = self.sigma(layer(h / math.sqrt(layer.in_features)))  # (n, m)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x) / math.sqrt(self.width))  # (n, k)

    @torch.no_grad()
    def fit_readout(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """a ← :func:`ridge_readout` (φ(x)/√m, y, ``ridge``): the readout that fits targets y (n, k)."""
        self.readout.weight.copy_(ridge_readout(self.features(x) / math.sqrt(self.width), y, self.ridge))

    def extra_repr(self) -> str:
        solved = f", closed_form=True, ridge={self.ridge}" if self.closed_form else ""
        return f"activation={self.activation}, double={self.two_random_layers}{solved}"
