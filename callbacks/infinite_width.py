"""The infinite-width limit (Jacot et al., 2018; as neural-tangents computes it in JAX): the analytic NNGP and
NT kernels of the two-layer net, kernel ridge regression on them, and the polynomial ridge regression that
approximates NT ridge regression (Montanari & Zhong, 2020).

TwoLayerMLP(d, m, k, σ, bias, parameterization="ntk"): f(x) = W2 σ(W1 x/√d + b1)/√m + b2, W ~ N(0, 1),
b = 0 at init. Each hidden pre-activation at init is u(x) = w·x/√d with w ~ N(0, I_d), so for two inputs
(u, v) = (u(x), u(x')) is centred Gaussian with
    a = E u² = |x|²/d,    b = E v² = |x'|²/d,    c = E uv = x·x'/d,
and, the m neurons being i.i.d. (also in pairs under symmetric_init), the empirical kernel of
:func:`two_layer_ntk` averages m i.i.d. terms. Its mean (one output; k outputs give k times it):
    NNGP  Σ(x, x') = E[f(x) f(x')]  = E[σ(u) σ(v)]                                  (W2 term)
    NTK   Θ(x, x')                  = E[σ(u) σ(v)] + (c + [bias]) E[σ'(u) σ'(v)] + [bias]
(W1 term: c2² c1² x·x' Σ_j W2_j² σ'σ' → c E[σ'σ']; trainable zero-initialized biases add 1 (b2) and
1·E[σ'σ'] (b1) without changing (u, v)). A width-m kernel deviates from Θ by O(m^(−1/2)).
"""

from __future__ import annotations

import math
import time
from typing import Optional, Union

import pytorch_lightning as pl
import torch
from typing_extensions import override

from callbacks.diagnostic import Moment, ProbeCallback, module_loss, module_net
from callbacks.kernel import DERIVATIVES, empirical_ntk
from callbacks.net_state import LossFn
from lightning_modules.checks import ConfigError, check_choice, check_number
from lightning_modules.nets.mlp import ACTIVATIONS, TwoLayerMLP

#: Activations whose Gaussian moments E[σ(u)σ(v)] and E[σ'(u)σ'(v)] :func:`closed_form_moments` knows.
CLOSED_FORMS = ("relu", "erf", "quadratic", "linear")
#: Trapezoidal rule for the Gaussian integrals of the other activations: nodes per axis on [−span, span].
QUADRATURE_NODES, QUADRATURE_SPAN = 81, 9.0


def gaussian_moments(x: torch.Tensor, x2: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a, b, c)``: variances and covariance of the pre-activations (u(x_i), u(x2_j)) = (w·x_i, w·x2_j)/√d,
    w ~ N(0, I_d): a = |x_i|²/d (n, 1), b = |x2_j|²/d (1, n2), c = x_i·x2_j/d (n, n2), in float64 (x2 = x if None)."""
    x = x.flatten(1).double()
    x2 = x if x2 is None else x2.flatten(1).double()
    d = x.shape[1]
    return (x * x).sum(1, keepdim=True) / d, (x2 * x2).sum(1)[None, :] / d, x @ x2.T / d


def correlation(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """ρ = c/√(ab) clipped to [−1, 1] (rounding puts the diagonal just above 1); 0 where a or b is 0."""
    norm = torch.sqrt(a * b)
    return torch.where(norm > 0, c / norm.clamp_min(torch.finfo(c.dtype).tiny), torch.zeros_like(c)).clamp(-1.0, 1.0)


def closed_form_moments(activation: str, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[σ(u)σ(v)], E[σ'(u)σ'(v)])`` for (u, v) centred Gaussian with E u² = a, E v² = b, E uv = c
    (broadcastable tensors), in closed form:

    * relu, the arc-cosine kernels of degree 1 and 0 (Cho & Saul, 2009), ρ = cos θ = c/√(ab):
      √(ab) (sin θ + (π − θ) cos θ)/(2π) and (π − θ)/(2π) (relu'(0) = 0);
    * erf (Williams, 1998): (2/π) arcsin(2c/√((1 + 2a)(1 + 2b))) and (4/π)/√((1 + 2a)(1 + 2b) − 4c²);
    * quadratic (Isserlis): ab + 2c² and 4c;  linear: c and 1.

    >>> one = torch.ones(())
    >>> [round(float(m), 6) for m in closed_form_moments("relu", one, one, one)]  # E relu(g)² = E 1{g > 0} = 1/2
    [0.5, 0.5]

    Raises:
        ConfigError: for an activation without a closed form here.
    """
    if activation == "relu":
        rho = correlation(a, b, c)
        gap = torch.arccos(-rho)  # π − θ, accurate near ρ = −1 (as sin θ = √(1 − ρ²) is), where the kernel is 0
        return torch.sqrt(a * b) * (torch.sqrt(1 - rho**2) + gap * rho) / (2 * math.pi), gap / (2 * math.pi)
    if activation == "erf":
        spread = (1 + 2 * a) * (1 + 2 * b)
        return (2 / math.pi) * torch.arcsin((2 * c / torch.sqrt(spread)).clamp(-1.0, 1.0)), (4 / math.pi) / torch.sqrt(spread - 4 * c**2)
    if activation == "quadratic":
        return a * b + 2 * c**2, 4 * c
    if activation == "linear":
        return c.clone(), torch.ones_like(c)
    raise ConfigError(f"Expected argument `activation` to be one of {', '.join(CLOSED_FORMS)} but got {activation!r}")


def quadrature_moments(
    activation: str, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, budget: int = 2**22
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`closed_form_moments` for any activation of TwoLayerMLP, by the trapezoidal rule in two
    independent standard Gaussians: u = √a t, v = √b (ρ t + √(1 − ρ²) s),

        E[φ(u) ψ(v)] ≈ Σ_{p,q} w_p w_q φ(√a t_p) ψ(√b (ρ t_p + √(1 − ρ²) t_q)),  w_p = h e^(−t_p²/2)/√(2π),

    on ``QUADRATURE_NODES`` equally spaced nodes t_p in [−9, 9] per axis (h = 0.225). For integrands
    analytic in a strip the rule converges geometrically (Trefethen & Weideman, 2014); here it beats
    Gauss–Hermite with as many nodes (erf, |x|²/d ≤ 2.8: error 6e-10 with 65 nodes against 2e-5 for
    Gauss–Hermite) and is exact to rounding for quadratic and linear. Kinks (relu, whose σ' jumps) converge
    only like h: relu uses its closed form. ``budget`` bounds the (pairs, nodes²) work array.
    """
    t = torch.linspace(-QUADRATURE_SPAN, QUADRATURE_SPAN, QUADRATURE_NODES, dtype=torch.float64, device=c.device)
    w = (t[1] - t[0]) * torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    a, b, c = torch.broadcast_tensors(a, b, c)
    shape, (a, b, c) = c.shape, (v.reshape(-1) for v in (a, b, c))
    rho = correlation(a, b, c)
    sigma, dsigma = ACTIVATIONS[activation], DERIVATIVES[activation]
    moments, derivative = torch.empty_like(c), torch.empty_like(c)
    rows = max(1, budget // len(t) ** 2)
    for i in range(0, len(c), rows):
        s = slice(i, i + rows)
        u = a[s].sqrt()[:, None] * t  # (r, q)
        r = rho[s][:, None, None]
        v = b[s].sqrt()[:, None, None] * (r * t[:, None] + torch.sqrt(1 - r**2) * t)  # (r, q, q): [pair, t_p, t_q]
        moments[s] = torch.einsum("rp,rpq,p,q->r", sigma(u), sigma(v), w, w)
        derivative[s] = torch.einsum("rp,rpq,p,q->r", dsigma(u), dsigma(v), w, w)
    return moments.reshape(shape), derivative.reshape(shape)


def dual_moments(x: torch.Tensor, x2: Optional[torch.Tensor], activation: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(c, E[σ(u)σ(v)], E[σ'(u)σ'(v)])`` on all pairs (x_i, x2_j), each (n, n2): closed form where
    :func:`closed_form_moments` has one, else :func:`quadrature_moments`."""
    a, b, c = gaussian_moments(x, x2)
    if activation in CLOSED_FORMS:
        return (c, *closed_form_moments(activation, a, b, c))
    return (c, *quadrature_moments(activation, a, b, c))


def analytic_nngp(x: torch.Tensor, activation: str = "relu", x2: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Σ(x, x') = E[f(x) f(x')] = E[σ(u)σ(v)] (n, n2), the output covariance at init of a one-output
    TwoLayerMLP in the NTK parameterization, at any width (section comment; Neal, 1996; Lee et al., 2018).
    ``x2 = None`` gives the (n, n) kernel on ``x``; float64.

    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> analytic_nngp(x, "linear")  # x·x'/d
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]], dtype=torch.float64)
    """
    check_choice("activation", activation, ACTIVATIONS)
    return dual_moments(x, x2, activation)[1]


def analytic_ntk(x: torch.Tensor, activation: str = "relu", bias: bool = False, x2: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The infinite-width NTK of a one-output TwoLayerMLP in the NTK parameterization, both layers trained
    (n, n2; float64; ``x2 = None``: (n, n) on ``x``):

        Θ(x, x') = E[σ(u)σ(v)] + (x·x'/d + [bias]) E[σ'(u)σ'(v)] + [bias],

    (u, v) as in :func:`gaussian_moments`, i.e. E over inits of :func:`empirical_ntk` of
    ``TwoLayerMLP(d, m, 1, activation, bias=bias, parameterization="ntk")`` at every width m (k outputs:
    k Θ). Closed forms for relu (arc-cosine kernels), erf, quadratic, linear; the trapezoidal rule of
    :func:`quadrature_moments` for tanh and gelu.

    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> analytic_ntk(x)  # relu, |x|²/d = 1/2: diagonal 1/4 + 1/4, orthogonal pair (1/2)(1/(2π))
    tensor([[0.5000, 0.0796],
            [0.0796, 0.5000]], dtype=torch.float64)

    Raises:
        ConfigError: for an activation TwoLayerMLP does not have.
    """
    check_choice("activation", activation, ACTIVATIONS)
    c, moments, derivative = dual_moments(x, x2, activation)
    if bias:
        return moments + 1.0 + (c + 1.0) * derivative
    return moments + c * derivative


def analytic_ntk_diagonal(x: torch.Tensor, activation: str = "relu", bias: bool = False) -> torch.Tensor:
    """Θ(x_i, x_i) (n,), the diagonal of :func:`analytic_ntk` without the (n, n) kernel."""
    a = gaussian_moments(x)[0][:, 0]
    moments, derivative = (closed_form_moments if activation in CLOSED_FORMS else quadrature_moments)(activation, a, a, a)
    return moments + (a + 1.0) * derivative + 1.0 if bias else moments + a * derivative


def kernel_ridge(
    kernel_train: torch.Tensor, y: torch.Tensor, kernel_test_train: torch.Tensor, ridge: Union[float, torch.Tensor] = 0.0
) -> torch.Tensor:
    """Kernel ridge regression predictions f̂(X*) = K(X*, X) (K(X, X) + Λ)⁻¹ Y (n*, k), float64.

    Λ = λ I for a number λ = ``ridge``, diag(λ) for a tensor (n,). λ = 0 (ridgeless) gives the minimum-RKHS-norm
    interpolant K(X*, X) K⁺ Y (pseudo-inverse), the limit λ → 0⁺ and, in the NTK regime, where gradient descent
    from f = 0 on the squared loss converges (Jacot et al., 2018). Targets ``y`` (n,) or (n, k).

    Raises:
        ConfigError: on a negative or non-finite ridge, or shapes that do not match.
    """
    n = kernel_train.shape[0]
    if kernel_train.shape != (n, n) or kernel_test_train.shape[1:] != (n,) or len(y) != n:
        raise ConfigError(
            f"Expected kernel_train (n, n), y (n, ...) and kernel_test_train (n*, n) but got {tuple(kernel_train.shape)}, "
            f"{tuple(y.shape)} and {tuple(kernel_test_train.shape)}"
        )
    ridge = torch.as_tensor(ridge, dtype=torch.float64, device=kernel_train.device).expand(n)
    if not (torch.isfinite(ridge).all() and (ridge >= 0).all()):
        raise ConfigError(f"Expected argument `ridge` to be finite and >= 0 but got {ridge.min().item():g}")
    kernel, targets = kernel_train.double(), y.reshape(n, -1).double()
    if (ridge > 0).all():
        factor = torch.linalg.cholesky(kernel + torch.diag(ridge))
        return kernel_test_train.double() @ torch.cholesky_solve(targets, factor)
    return kernel_test_train.double() @ (torch.linalg.pinv(kernel + torch.diag(ridge), hermitian=True) @ targets)


def gaussian_derivative_moments(activation: str, a: torch.Tensor, degree: int) -> torch.Tensor:
    """μ_k(a) = E[σ^(k)(√a g)] = a^(−k/2) E[σ(√a g) He_k(g)], g ~ N(0, 1), k = 0 … degree: (len(a), degree + 1).

    He_k are the probabilists' Hermite polynomials (the second form is Gaussian integration by parts, so σ
    need not be differentiable). relu in closed form, μ_0 = √(a/(2π)), μ_1 = ½, μ_k = a^((1−k)/2) He_(k−2)(0)/√(2π);
    the others by the trapezoidal rule (801 nodes on [−14, 14]).
    """
    a = a.double().reshape(-1)
    k = torch.arange(degree + 1, dtype=torch.float64, device=a.device)
    if activation == "relu":  # relu'' = δ: E[δ^(k−2)(g)] = He_(k−2)(0) φ(0), He_(j+1)(0) = −j He_(j−1)(0)
        he_at_zero = [1.0, 0.0]
        for j in range(1, degree - 2):
            he_at_zero.append(-j * he_at_zero[j - 1])
        coefficients = [1.0 / math.sqrt(2 * math.pi), 0.5] + [h / math.sqrt(2 * math.pi) for h in he_at_zero[: degree - 1]]
        return torch.tensor(coefficients[: degree + 1], dtype=torch.float64, device=a.device) * a[:, None] ** ((1 - k) / 2)
    t = torch.linspace(-14.0, 14.0, 801, dtype=torch.float64, device=a.device)
    w = (t[1] - t[0]) * torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    hermite = [torch.ones_like(t), t]
    for j in range(1, degree):
        hermite.append(t * hermite[j] - j * hermite[j - 1])
    hermite = torch.stack(hermite[: degree + 1], 1)  # (q, degree + 1)
    return (ACTIVATIONS[activation](a.sqrt()[:, None] * t) * w) @ hermite * a[:, None] ** (-k / 2)


def truncated_ntk(x: torch.Tensor, x2: Optional[torch.Tensor], activation: str, degree: int, bias: bool = False) -> torch.Tensor:
    """Θ_≤ℓ: :func:`analytic_ntk` expanded in powers of c = x·x'/d at fixed norms and cut after c^ℓ (n, n2).

    Price's theorem / Mehler's formula, E[φ(u) ψ(v)] = Σ_k c^k/k! E[φ^(k)(u)] E[ψ^(k)(v)] with μ_k from
    :func:`gaussian_derivative_moments`, gives Θ = Σ_k c^k θ_k(a, b),

        θ_k = μ_k(a) μ_k(b) (1 + k)/k! + [bias] μ_(k+1)(a) μ_(k+1)(b)/k! + [bias][k = 0],

    so Θ_≤ℓ is a kernel of polynomials of degree ≤ ℓ in x (times functions of |x|). On the sphere |x|² = d
    (a = b = 1) θ_k are the constant weights of the degree-k part, Σ_k θ_k = Θ(x, x).
    """
    a, b, c = gaussian_moments(x, x2)
    mu_a, mu_b = (gaussian_derivative_moments(activation, s, degree + 1) for s in (a, b))
    kernel = torch.full_like(c, 1.0 if bias else 0.0)
    for k in range(degree + 1):
        weight = torch.outer(mu_a[:, k], mu_b[:, k]) * (1 + k)
        if bias:
            weight = weight + torch.outer(mu_a[:, k + 1], mu_b[:, k + 1])
        kernel += c**k * weight / float(math.factorial(k))
    return kernel


def polynomial_degree(n: int, d: int) -> int:
    """ℓ = ⌊log n / log d⌋: with d^ℓ ≤ n < d^(ℓ+1), NT ridge learns the degree-≤ℓ part of the target (Montanari & Zhong, 2020).

    >>> polynomial_degree(512, 16)
    2
    """
    if d < 2:
        raise ConfigError(f"Expected an input dimension d >= 2 for log n / log d but got {d}")
    return int(math.floor(math.log(n) / math.log(d) + 1e-9))


def polynomial_ridge(
    x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, activation: str, degree: int, ridge: float = 0.0, bias: bool = False
) -> torch.Tensor:
    """Polynomial ridge regression of degree ℓ = ``degree`` with the self-induced ridge of the NT kernel
    (Montanari & Zhong, 2020; Ghorbani et al., 2021): kernel ridge regression with the truncated kernel
    Θ_≤ℓ of :func:`truncated_ntk` and the ridge λ + γ_i,

        f̂(X*) = Θ_≤ℓ(X*, X) (Θ_≤ℓ(X, X) + diag(λ + γ))⁻¹ Y,      γ_i = Θ(x_i, x_i) − Θ_≤ℓ(x_i, x_i) ≥ 0:

    the parts of Θ of degree > ℓ, with d^(ℓ+1) ≫ n, act on the training set as the multiple γ of the
    identity (on the sphere γ = Σ_{k>ℓ} θ_k). Returns the (n*, k) predictions, float64.
    """
    check_number("ridge", ridge, 0.0)
    kernel = truncated_ntk(x, x, activation, degree, bias)
    gamma = (analytic_ntk_diagonal(x, activation, bias) - torch.diagonal(kernel)).clamp_min(0.0)  # rounding only
    return kernel_ridge(kernel, y, truncated_ntk(x_test, x, activation, degree, bias), ridge + gamma)


def ridge_baselines(
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    loss_fn: LossFn,
    activation: str = "relu",
    bias: bool = False,
    ridge: float = 0.0,
) -> dict[str, float]:
    """Test losses of the infinite-width predictors trained on (x, y), each scored by ``loss_fn(f̂(x_test), y_test)``:

    ``baseline/nt_ridge_test_loss`` (:func:`kernel_ridge` on :func:`analytic_ntk`), ``baseline/poly_ridge_test_loss``
    (:func:`polynomial_ridge` of degree ℓ = :func:`polynomial_degree` (n, d)), ``baseline/poly_degree`` (ℓ), and
    ``baseline/poly_ridge_test_loss/degree_<k>`` for k = 0 … ℓ + 1.
    """
    n, d = len(x), x.flatten(1).shape[1]
    y_test = y_test.double()
    kernel, kernel_test = analytic_ntk(x, activation, bias), analytic_ntk(x_test, activation, bias, x2=x)
    values = {"baseline/nt_ridge_test_loss": float(loss_fn(kernel_ridge(kernel, y, kernel_test, ridge), y_test))}
    degree = polynomial_degree(n, d)
    for k in range(degree + 2):
        predictions = polynomial_ridge(x, y, x_test, activation, k, ridge, bias)
        values[f"baseline/poly_ridge_test_loss/degree_{k}"] = float(loss_fn(predictions, y_test))
    values["baseline/poly_ridge_test_loss"] = values[f"baseline/poly_ridge_test_loss/degree_{degree}"]
    values["baseline/poly_degree"] = float(degree)
    return values


def analytic_distance(net: TwoLayerMLP, x: torch.Tensor) -> float:
    """‖K − k Θ‖_F / ‖k Θ‖_F: the net's :func:`empirical_ntk` K (summed over its k outputs) against the analytic
    kernel on ``x``; at init O(m^(−1/2)) in the width m (m/2 independent neurons under symmetric_init)."""
    analytic = net.output_dim * analytic_ntk(x.cpu(), net.activation, net.fc1.bias is not None)  # float64 on the CPU
    return float(torch.linalg.norm(empirical_ntk(net, x).cpu().double() - analytic) / torch.linalg.norm(analytic))


class KernelRidgeBaseline(ProbeCallback):
    """The infinite-width limit of the trained net as a baseline, measured once, at the start of training (step 0):

    * ``baseline/nt_ridge_test_loss``, ``baseline/poly_ridge_test_loss`` (degree ℓ = ⌊log n / log d⌋),
      ``baseline/poly_ridge_test_loss/degree_<k>`` (k = 0 … ℓ + 1), ``baseline/poly_degree``: the module's
      loss on the whole test set of the predictors of :func:`ridge_baselines`, fitted to the whole training
      set; compare with the trained net's ``test/loss`` (Montanari & Zhong, 2020: once width·d ≫ n the
      trained net's test error is that of NT ridge regression, itself that of polynomial ridge of degree ℓ);
    * ``kernel/analytic_distance``: :func:`analytic_distance` of the net at init on ``probe_size`` training
      samples (``seed`` draws them), falling like width^(−1/2);
    * ``diag/nt_ridge_seconds``.

    The net must be a TwoLayerMLP in the NTK parameterization with both layers trained (the kernel the
    formulas describe); the targets real-valued. Kernels are built in float64 on the CPU (n² memory).

    Args:
        probe_size: samples for the distance (``None`` = the whole training set).
        seed: draws the probe subset.
        ridge: λ ≥ 0 of the ridge predictors (0: the ridgeless limit that gradient descent from f = 0 reaches).

    Raises:
        ConfigError: on a negative ``ridge``; before training, on another net, parameterization or frozen
            layer; at the measurement, on class labels.
    """

    def __init__(self, probe_size: Optional[int] = 256, seed: int = 0, ridge: float = 0.0) -> None:
        super().__init__(every_n_epochs=1, probe_size=probe_size, seed=seed)
        check_number("ridge", ridge, 0.0)
        self.ridge = ridge

    @override
    def is_due(self, trainer: pl.Trainer, moment: Moment) -> bool:
        return moment == "start" and super().is_due(trainer, moment)

    @override
    def check_fit(self, pl_module: pl.LightningModule, data) -> None:
        super().check_fit(pl_module, data)
        net = module_net(pl_module)
        if type(net) is not TwoLayerMLP or net.parameterization != "ntk":
            kind = f"{type(net).__name__}" + (f"(parameterization={net.parameterization!r})" if isinstance(net, TwoLayerMLP) else "")
            raise ConfigError(f"Expected a TwoLayerMLP with parameterization='ntk' for KernelRidgeBaseline but got {kind}")
        frozen = [name for name, layer in (("fc1", net.fc1), ("fc2", net.fc2)) if not layer.weight.requires_grad]
        if frozen:
            raise ConfigError(f"Expected both layers of the net trained for KernelRidgeBaseline but got frozen {', '.join(frozen)}")

    def measure(self, net: TwoLayerMLP, probe: torch.Tensor, train, test, loss_fn: LossFn) -> dict[str, float]:
        """The logged values (no Lightning involved): ``train`` and ``test`` hold ``x`` and ``y``.

        Raises:
            ConfigError: when the targets are class labels.
        """
        if not torch.is_floating_point(train.y):
            raise ConfigError(f"Expected real-valued targets for KernelRidgeBaseline (kernel ridge regression) but got {train.y.dtype}")
        start = time.perf_counter()
        bias = net.fc1.bias is not None
        values = ridge_baselines(train.x.cpu(), train.y.cpu(), test.x.cpu(), test.y.cpu(), loss_fn, net.activation, bias, self.ridge)
        values["kernel/analytic_distance"] = analytic_distance(net, probe)
        values["diag/nt_ridge_seconds"] = time.perf_counter() - start
        return values

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        probe, _ = self.probe(trainer, pl_module.device)
        data = trainer.datamodule
        return self.measure(module_net(pl_module), probe, data.train, data.test, module_loss(pl_module))
