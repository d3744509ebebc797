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

Three nets share this readout through :class:`ClosedFormReadout` (a net supplies the features z(x) the
readout sees; the base holds ``closed_form``, ``ridge``, ``forward`` and ``fit_readout``):

- :class:`RandomFeatures`: one kind of frozen random features (above);
- :class:`MixedRandomFeatures`: several kinds side by side, f(x) = 1/√m · a · [s₁σ₁(F₁x/√d); …; s_Kσ_K(F_Kx/√d)]
  (triple descent: one test-error peak per kind, Adlam & Pennington 2020);
- :class:`LinearModel`: the features are the inputs themselves, f(x) = θ·x (linear regression: the
  min-norm interpolator and ridge, incl. negative ridge, of Bartlett et al. 2020 and Tsigler & Bartlett 2023).
"""

from __future__ import annotations

import math
from typing import Sequence

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


class ClosedFormReadout(nn.Module):
    """Base of the nets f(x) = a z(x) with fixed features z (n, m) and a linear readout a ∈ R^(k×m) (``readout``,
    from a = 0), solvable in closed form: subclasses set up ``readout`` and write :meth:`readout_inputs`.

    Args:
        closed_form: solve the readout before the first step (:meth:`fit_readout`, MSE loss only)
            instead of training it from zero.
        ridge: λ of the closed-form readout (0: minimum norm; negative allowed, see :func:`ridge_readout`).

    Raises:
        ConfigError: on a non-boolean ``closed_form`` or a ridge that is no finite number.
    """

    readout: nn.Linear

    def __init__(self, closed_form: bool = False, ridge: float = 0.0) -> None:
        super().__init__()
        check_bool("closed_form", closed_form)
        check_number("ridge", ridge)
        self.closed_form, self.ridge = closed_form, ridge

    def readout_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """z(x), the (n, m) features the readout multiplies, scaling factors included."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.readout_inputs(x))  # (n, k)

    @torch.no_grad()
    def fit_readout(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """a ← :func:`ridge_readout` (z(x), y, ``ridge``): the readout that fits targets y (n, k)."""
        self.readout.weight.copy_(ridge_readout(self.readout_inputs(x), y, self.ridge))

    def readout_repr(self) -> str:
        return f", closed_form=True, ridge={self.ridge}" if self.closed_form else ""


class RandomFeatures(ClosedFormReadout):
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
        super().__init__(closed_form, ridge)
        check_sizes(input_dim=input_dim, width=width, output_dim=output_dim)
        check_choice("activation", activation, ACTIVATIONS)
        check_bool("double", double)
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

    def readout_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) / math.sqrt(self.width)  # (n, m)

    def extra_repr(self) -> str:
        return f"activation={self.activation}, double={self.two_random_layers}{self.readout_repr()}"


#: One kind of random features of :class:`MixedRandomFeatures`: (activation σ, output scale s, fraction of the width).
FeatureKind = tuple[Activation, float, float]


def kind_widths(width: int, fractions: Sequence[float]) -> list[int]:
    """Widths m_k of the kinds, m_k = round(m·c_k) − round(m·c_{k−1}) with c_k = f₁ + … + f_k: they sum to m
    exactly, and each is within one of m·f_k (a kind may get 0 features at a small width).

    >>> kind_widths(10, [0.25, 0.75])
    [2, 8]
    """
    cumulative = [round(width * sum(fractions[: k + 1])) for k in range(len(fractions))]
    return [b - a for a, b in zip([0, *cumulative[:-1]], cumulative)]


class MixedRandomFeatures(ClosedFormReadout):
    """K kinds of frozen random features side by side (one layer, not stacked), one linear readout:

        f(x) = 1/√m · a · [s₁ σ₁(F₁ x/√d); …; s_K σ_K(F_K x/√d)],     F_k ∈ R^(m_k×d) i.i.d. N(0, 1),

    with m = Σ m_k = ``width`` and m_k ≈ f_k·m (:func:`kind_widths`): the kinds keep their proportions as the
    width grows. With the readout solved at a small ridge, the test error has one peak per kind when the
    kinds' scales s_k differ a lot (Adlam & Pennington 2020, "The neural tangent kernel in high dimensions:
    triple descent and a multi-scale theory of generalization"; d'Ascoli et al. 2020, "Triple descent and the
    two kinds of overfitting"): one at m = n, where the whole feature matrix becomes square, and one where the
    features of the larger scales alone number n (for two kinds, m₁ = n, i.e. m = n/f₁), since the smaller
    kinds act there only as a ridge of order s²; K kinds give K + 1 descents, and a ridge larger than the
    small scales' s² removes the later peaks.

    Args:
        input_dim: d.
        width: m, the total number of random features.
        output_dim: k.
        kinds: the kinds, each (activation σ_k, scale s_k > 0, fraction f_k > 0); the fractions sum to 1.
        closed_form, ridge: as in :class:`ClosedFormReadout`.

    Raises:
        ConfigError: on sizes that are no positive integers, an empty ``kinds``, an unknown activation, a scale
            or fraction that is no positive number, fractions that do not sum to 1, or a bad ``closed_form`` / ``ridge``.
    """

    def __init__(
        self,
        input_dim: int,
        width: int = 256,
        output_dim: int = 1,
        kinds: Sequence[FeatureKind] = (("relu", 1.0, 0.25), ("relu", 0.01, 0.75)),
        closed_form: bool = False,
        ridge: float = 0.0,
    ) -> None:
        super().__init__(closed_form, ridge)
        check_sizes(input_dim=input_dim, width=width, output_dim=output_dim)
        if not kinds:
            raise ConfigError("Expected argument `kinds` to be a non-empty list of (activation, scale, fraction) but got []")
        for activation, scale, fraction in kinds:
            check_choice("kinds.activation", activation, ACTIVATIONS)
            check_number("kinds.scale", scale, 0.0, strict_minimum=True)
            check_number("kinds.fraction", fraction, 0.0, 1.0, strict_minimum=True)
        total = sum(fraction for _, _, fraction in kinds)
        if abs(total - 1.0) > 1e-9:
            raise ConfigError(f"Expected the fractions of argument `kinds` to sum to 1 but got {total:g}")
        self.input_dim, self.width, self.output_dim = input_dim, width, output_dim
        self.kinds = [(activation, float(scale), float(fraction)) for activation, scale, fraction in kinds]
        self.widths = kind_widths(width, [fraction for _, _, fraction in kinds])
        self.random_layer = nn.Linear(input_dim, width, bias=False).requires_grad_(False)  # rows: F₁ then F₂ …
        self.readout = nn.Linear(width, output_dim, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """F ~ N(0, 1) entries; a = 0."""
        self.random_layer.weight.normal_(0.0, 1.0)
        self.readout.weight.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[s₁σ₁(F₁x/√d), …, s_Kσ_K(F_Kx/√d)], shape (n, m): kind k in columns m₁ + … + m_(k−1) onward."""
        h = self.random_layer(x.flatten(1) / math.sqrt(self.input_dim))  # (n, m)
        blocks = h.split(self.widths, dim=1)  # (n, m_k) each
        return torch.cat([scale * ACTIVATIONS[act](block) for (act, scale, _), block in zip(self.kinds, blocks)], dim=1)

    def readout_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) / math.sqrt(self.width)  # (n, m)

    def extra_repr(self) -> str:
        kinds = ", ".join(f"{m}×{s:g}·{act}" for (act, s, _), m in zip(self.kinds, self.widths))
        return f"kinds=[{kinds}]{self.readout_repr()}"


class LinearModel(ClosedFormReadout):
    """Linear regression f(x) = θ x, θ ∈ R^(k×d) (``readout.weight``, from θ = 0), no bias: the features are the
    inputs themselves, so the closed-form readout (:func:`ridge_readout` on z = x) is the estimator of Bartlett
    et al. 2020 ("Benign overfitting in linear regression") for ``ridge`` 0, θ̂ = (X⁺ y)ᵀ, the min-norm
    interpolator when d ≥ n, and the ridge estimator θ̂ = yᵀ (X Xᵀ + nλ I)⁻¹ X for λ = ``ridge`` (Tsigler &
    Bartlett 2023 write λ_TB = nλ), negative λ included down to −σ_min(X)²/n. θ is the coefficient
    vector itself (no 1/√d factor), so it compares directly with the data's target β.

    Args:
        input_dim: d.
        output_dim: k.
        closed_form, ridge: as in :class:`ClosedFormReadout`.

    Raises:
        ConfigError: on sizes that are no positive integers or a bad ``closed_form`` / ``ridge``.
    """

    def __init__(self, input_dim: int, output_dim: int = 1, closed_form: bool = False, ridge: float = 0.0) -> None:
        super().__init__(closed_form, ridge)
        check_sizes(input_dim=input_dim, output_dim=output_dim)
        self.input_dim, self.output_dim = input_dim, output_dim
        self.readout = nn.Linear(input_dim, output_dim, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """θ = 0 (gradient descent from there stays in the row space of X: the min-norm interpolator)."""
        self.readout.weight.zero_()

    def readout_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)  # (n, d)

    def extra_repr(self) -> str:
        return self.readout_repr().lstrip(", ")
