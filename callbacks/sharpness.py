"""Sharpness: the top eigenvalues and the trace of the Hessian of the training loss.

    H = ∇²_θ L(θ),    L(θ) = loss_fn(net(x; θ), y),    θ = the trainable parameters (requires_grad)

Full-batch GD with step η is unstable along directions where λ > 2/η; in practice λ_max rises to
2/η and hovers there ("edge of stability", Cohen et al., 2021). With heavy-ball momentum β the
threshold is (2 + 2β)/η instead (see :func:`stability_threshold`), so the callback logs λ_max,
the literal 2/η and the optimizer's own threshold where one is defined.

Hessian-vector products reuse one gradient graph: g = ∇L is built once with ``create_graph=True``
and each Hv = ∇(g·v) is one backward pass through it, with no new forward pass. The top-k
eigenvalues come from Lanczos in torch on the model's device (:mod:`callbacks.lanczos`: full
reorthogonalization, stopped when the Ritz residuals reach ``tol``), the trace from Hutchinson's
estimator tr H = E[vᵀHv], v Rademacher (Hutchinson, 1989), the eigenvalue density from stochastic
Lanczos quadrature (Ghorbani et al., 2019). ARPACK (``scipy eigsh``, ``which="LA"``, on the host in
float64) and PyHessian's power iteration stay available as methods, for comparison.

Through a net converted by a learning rule (FA, DFA, ...) the products are those of exact backprop:
the Hessian of the loss does not depend on how the rule trains the net.

Mode: the loss is evaluated in *training* mode, i.e. the loss the optimizer descends (BatchNorm
normalizes with batch statistics). Everything a call touches is restored afterwards: each
module's train/eval flag, every buffer (BatchNorm running statistics), the parameters' ``.grad``
and the torch RNG state. A dropout mask is drawn once per call, so the operator is one fixed
symmetric matrix. Products run in the net's dtype; the small projected problems are solved in float64.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Literal, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from threadpoolctl import threadpool_limits
from torch import nn
from typing_extensions import override

from callbacks.diagnostic import ProbeCallback, module_loss, module_net
from callbacks.lanczos import Eigenpairs, lanczos_quadrature, lanczos_top_eigs
from callbacks.net_state import LossFn, exact_backprop, preserved_state, trainable_parameters
from lightning_modules.checks import ConfigError, check_bool, check_choice, check_int, check_number, check_positive_int, is_integer
from lightning_modules.optimizers import OPTIMIZERS

# ---- Hessian-vector products --------------------------------------------------------------------
Method = Literal["lanczos", "arpack", "power"]
METHODS = ("lanczos", "arpack", "power")


def _gradient_graph(
    net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor
) -> tuple[list[tuple[str, nn.Parameter]], tuple[torch.Tensor, ...]]:
    """The trainable ``(name, parameter)`` pairs and g = ∇L with its graph (``create_graph=True``)."""
    named = trainable_parameters(net)
    return named, torch.autograd.grad(loss_fn(net(x), y), [p for _, p in named], create_graph=True)


def _products(params: list[nn.Parameter], grads: tuple[torch.Tensor, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ ∇_params (g · v) on flat vectors over ``params``: the Hessian block of ``params``, one backward each."""
    sizes = [p.numel() for p in params]
    live = [i for i, g in enumerate(grads) if g.requires_grad]  # a gradient without a graph is constant: its rows of H are 0

    def hvp(v: torch.Tensor) -> torch.Tensor:
        if not live:
            return torch.zeros_like(v)
        vs = [c.view_as(p) for c, p in zip(v.split(sizes), params)]
        hv = torch.autograd.grad(
            [grads[i] for i in live],
            params,
            grad_outputs=[vs[i] for i in live],
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        return torch.cat([h.reshape(-1) for h in hv])

    return hvp


def hvp_operator(net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ Hv on flat vectors over the trainable parameters (in ``net.named_parameters()`` order), in the
    net's dtype and on its device. The gradient graph is built here once and reused by every product, so
    call it inside :func:`preserved_state` (and :func:`exact_backprop` for nets a learning rule converted)."""
    named, grads = _gradient_graph(net, loss_fn, x, y)
    return _products([p for _, p in named], grads)


def _n_params(net: nn.Module) -> tuple[int, torch.dtype, torch.device]:
    params = [p for _, p in trainable_parameters(net)]
    return sum(p.numel() for p in params), params[0].dtype, params[0].device


def _start(rows: int, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(rows, n) Gaussian start vectors drawn on the host from seed 0, so a call gives the same on every device."""
    return torch.randn(rows, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device, dtype)


def hessian_top_eigs(
    net: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int = 1,
    tol: float = 1e-3,
    method: Method = "lanczos",
    max_iter: Optional[int] = None,
) -> tuple[torch.Tensor, int]:
    """The k largest (algebraic) eigenvalues of H = ∇²_θ loss_fn(net(x), y), from Hessian-vector products.

    ``method``:

    - ``lanczos`` (default): :func:`callbacks.lanczos.lanczos_top_eigs` on the model's device, block size k,
      stopped after the first product at which each of the top k Ritz pairs has ‖Hy − θy‖ ≤ tol·|θ|. Then
      each θ is within tol·|θ| of an eigenvalue of H (and within (tol·θ)²/gap when the rest of the spectrum
      is ``gap`` away), so the error is usually far below ``tol``. 1 ≤ k ≤ P (k = P: the whole spectrum).
    - ``arpack``: scipy's ``eigsh`` (implicitly restarted Lanczos, ``which="LA"``) on the host in float64;
      ``tol`` is ARPACK's relative accuracy (0 = machine precision); its Krylov subspace
      ncv = max(2k + 1, 20) costs at least about ncv + 1 products. 1 ≤ k < P.
    - ``power``: :func:`hessian_power_iteration` (PyHessian's rule; the top-*magnitude* eigenvalue). k = 1.

    Every method starts from the same vectors (Gaussian, seed 0), so a call is deterministic.

    Args:
        max_iter: lanczos: most products (default max(1000, 10k); on reaching it, a warning and the current
            estimate); power: most products (default 1000); arpack: ARPACK's restart count ``maxiter``.

    Returns:
        ``(eigs, n_hvp)``: eigenvalues (k,) in float64, descending, and the number of HVPs used.

    Raises:
        ConfigError: on an unknown method, k outside the range above, or a negative ``tol``.
    """
    check_choice("method", method, METHODS)
    n, dtype, device = _n_params(net)
    high = {"lanczos": n, "arpack": n - 1, "power": 1}[method]
    if not is_integer(k) or not 1 <= k <= high:
        what = {
            "lanczos": "the number of trainable parameters",
            "arpack": "the parameter count - 1, for ARPACK",
            "power": "power iteration finds one eigenvalue",
        }[method]
        raise ConfigError(f"Expected argument `k` to be an integer in [1, {high}] ({what}) but got {k!r}")
    check_number("tol", tol, minimum=0)
    if method == "power":
        eig, n_hvp = hessian_power_iteration(net, loss_fn, x, y, tol, 1000 if max_iter is None else max_iter)
        return torch.tensor([eig], dtype=torch.float64), n_hvp
    if method == "lanczos":
        result = hessian_top_eigenpairs(net, loss_fn, x, y, k, tol, max_iter)
        return result.values, result.n_matvec
    with preserved_state(net, train=True), exact_backprop(net):
        hvp = hvp_operator(net, loss_fn, x, y)
        n_hvp = 0

        def matvec(v: np.ndarray) -> np.ndarray:
            nonlocal n_hvp
            n_hvp += 1
            hv = hvp(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1)).to(device, dtype))
            return hv.detach().to("cpu", torch.float64).numpy()

        op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
        v0 = _start(1, n, torch.float64, torch.device("cpu"))[0].numpy()
        with threadpool_limits(1, "blas"):  # scipy's small dense work is faster single-threaded
            eigs = eigsh(op, k=k, which="LA", tol=tol, v0=v0, maxiter=max_iter, return_eigenvectors=False)
    return torch.from_numpy(np.sort(eigs)[::-1].copy()), n_hvp


def hessian_top_eigenpairs(
    net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, k: int = 1, tol: float = 1e-3, max_iter: Optional[int] = None
) -> Eigenpairs:
    """The k top eigenpairs of H by Lanczos (the ``lanczos`` method of :func:`hessian_top_eigs`, same start
    vectors): values (k,) descending in float64, vectors (P, k) orthonormal, over the trainable parameters
    flattened in ``net.named_parameters()`` order, in the net's dtype and on its device."""
    n, dtype, device = _n_params(net)
    with preserved_state(net, train=True), exact_backprop(net):
        hvp = hvp_operator(net, loss_fn, x, y)
        with torch.no_grad():
            return lanczos_top_eigs(lambda v: hvp(v).detach(), _start(k, n, dtype, device), k, tol, max_iter)


def hessian_power_iteration(
    net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, tol: float = 1e-3, max_iter: int = 1000
) -> tuple[float, int]:
    """The top-magnitude Hessian eigenvalue by power iteration, stopped as PyHessian does (Yao et al., 2020):
    when two successive Rayleigh quotients differ by less than ``tol`` relative. A reference for benchmarks;
    it starts from the first of :func:`hessian_top_eigs`'s start vectors.

    Returns:
        ``(eigenvalue, n_hvp)``.
    """
    n, dtype, device = _n_params(net)
    with preserved_state(net, train=True), exact_backprop(net):
        hvp = hvp_operator(net, loss_fn, x, y)
        v = _start(1, n, dtype, device)[0]
        v = v / v.norm()
        eig = None
        for i in range(1, max_iter + 1):
            hv = hvp(v).detach()
            rayleigh = float(torch.dot(hv.double(), v.double()))
            v = hv / hv.norm()
            if eig is not None and abs(eig - rayleigh) / (abs(eig) + 1e-6) < tol:
                return rayleigh, i
            eig = rayleigh
    return eig, max_iter


def layer_name(parameter_name: str) -> str:
    """The layer a parameter belongs to: its module's name, as ``layer_lr`` keys name layers.

    >>> layer_name("fc1.weight"), layer_name("blocks.0.conv.bias"), layer_name("scale")
    ('fc1', 'blocks.0.conv', 'scale')
    """
    return parameter_name.rsplit(".", 1)[0]


def hessian_layer_top_eigs(net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, tol: float = 1e-3) -> dict[str, float]:
    """λ_max(H_ll) for each layer l: the top eigenvalue of the diagonal Hessian block ∂²L/∂θ_l² of the
    layer's trainable parameters (:func:`layer_name`), by Lanczos as in :func:`hessian_top_eigs`, all
    blocks from one gradient graph. Full-batch GD on that layer alone is stable iff λ_max(H_ll) < 2/η;
    the blocks' values bound λ_max(H) from below.

    Returns:
        ``{layer: λ_max}`` in parameter order.
    """
    with preserved_state(net, train=True), exact_backprop(net):
        named, grads = _gradient_graph(net, loss_fn, x, y)
        layers: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(named):
            layers.setdefault(layer_name(name), []).append(i)
        out = {}
        for layer, idx in layers.items():
            params = [named[i][1] for i in idx]
            hvp = _products(params, tuple(grads[i] for i in idx))
            start = _start(1, sum(p.numel() for p in params), params[0].dtype, params[0].device)
            with torch.no_grad():
                out[layer] = float(lanczos_top_eigs(lambda v, hvp=hvp: hvp(v).detach(), start, 1, tol).values[0])
    return out


def hessian_trace(net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, n_probes: int = 100) -> float:
    """Hutchinson's estimate tr H ≈ (1/N) Σ vᵢᵀ H vᵢ with N = ``n_probes`` Rademacher vectors (seed 0).

    Its standard deviation is √(2(‖H‖_F² − Σ H_jj²)/N).

    Raises:
        ConfigError: on a non-positive ``n_probes``.
    """
    check_positive_int("n_probes", n_probes)
    n, dtype, device = _n_params(net)
    generator = torch.Generator().manual_seed(0)
    total = 0.0
    with preserved_state(net, train=True), exact_backprop(net):
        hvp = hvp_operator(net, loss_fn, x, y)
        for _ in range(n_probes):
            v = (2 * torch.randint(0, 2, (n,), generator=generator) - 1).to(device, dtype)
            total += float(torch.dot(hvp(v).detach().double(), v.double()))
    return total / n_probes


def hessian_spectral_density(
    net: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    n_probes: int = 1,
    n_steps: int = 100,
    n_grid: int = 1000,
    sigma: Optional[float] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Hessian eigenvalue density φ(t) = (1/P) Σ_i δ(t − λ_i), smoothed by a Gaussian of width σ, by
    stochastic Lanczos quadrature as PyHessian computes it (Ghorbani, Krishnan & Xiao, 2019):

        φ_σ(t) ≈ (1/N) Σ_{probes} Σ_j w_j N(t; θ_j, σ²)

    with nodes θ_j and weights w_j (Σ_j w_j = 1) of ``n_steps`` Lanczos steps from each of N = ``n_probes``
    Rademacher probes (seed 0; :func:`callbacks.lanczos.lanczos_quadrature`). The quadrature is exact for
    polynomials of degree < 2·n_steps, so the density's mean Σ w θ / N is Hutchinson's estimate of tr(H)/P,
    with standard deviation √(2(‖H‖_F² − Σ_i H_ii²)/N)/P, and its second moment is the estimate of tr(H²)/P
    (standard deviation √(2(‖H²‖_F² − Σ_i (H²)_ii²)/N)/P) plus σ², the smoothing's variance. The outliers
    show as separate peaks of mass about 1/P each; a log scale shows them beside the bulk.

    Args:
        n_probes: random probes N (n_probes · n_steps Hessian-vector products in all).
        n_steps: Lanczos steps per probe (fewer when the Krylov space closes, e.g. n_steps > P).
        n_grid: grid points, evenly over [min θ − 5σ, max θ + 5σ].
        sigma: width of the Gaussian; default 1% of max θ − min θ (of max |θ|, or 1, if that is 0).

    Returns:
        ``(grid, density)``, each (n_grid,) float64 on the host; the density integrates to 1 on the grid
        (trapezoid rule), which moves the mean and second moment by less than 1e-6 of (max |t|)^m.

    Raises:
        ConfigError: on a non-positive ``n_probes``, ``n_steps``, ``n_grid`` < 2 or ``sigma``.
    """
    check_positive_int("n_probes", n_probes)
    check_positive_int("n_steps", n_steps)
    check_int("n_grid", n_grid, minimum=2)
    check_number("sigma", sigma, minimum=0, strict_minimum=True, allow_none=True)
    n, dtype, device = _n_params(net)
    probes = (2 * torch.randint(0, 2, (n_probes, n), generator=torch.Generator().manual_seed(0)) - 1).to(device, dtype)
    with preserved_state(net, train=True), exact_backprop(net):
        hvp = hvp_operator(net, loss_fn, x, y)
        with torch.no_grad():
            nodes, weights = lanczos_quadrature(lambda v: hvp(v).detach(), probes, n_steps)
    weights = weights / n_probes
    low, high = float(nodes[weights > 0].min()), float(nodes[weights > 0].max())
    sigma = sigma or 0.01 * ((high - low) or max(abs(low), abs(high)) or 1.0)
    grid = torch.linspace(low - 5 * sigma, high + 5 * sigma, n_grid, dtype=torch.float64)
    kernel = torch.exp(-0.5 * ((grid[:, None] - nodes.reshape(1, -1)) / sigma) ** 2)  # (n_grid, N·n_steps)
    density = kernel @ weights.reshape(-1)
    return grid, density / torch.trapezoid(density, grid)


# ---- stability threshold of the optimizer -------------------------------------------------------
def stability_threshold(
    optimizer: str, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
) -> Optional[float]:
    """The largest sharpness λ = λ_max(∇²L) at which full-batch ``optimizer`` is stable on a quadratic.

    Along one Hessian eigendirection, L = ½ λ w². SGD with step η, coupled weight decay δ and
    heavy-ball momentum β (torch: b ← βb + ∇L + δw, w ← w − ηb) is the recurrence
    w_{t+1} = (1 + β − ηλ') w_t − β w_{t−1} with λ' = λ + δ; both roots of
    z² − (1 + β − ηλ') z + β lie inside the unit circle iff 0 < ηλ' < 2 + 2β. Nesterov (torch:
    w ← w − η(∇L + δw + βb)) gives z² − (1 + β)(1 − ηλ') z + β(1 − ηλ'), stable iff
    0 < ηλ' < (2 + 2β)/(1 + 2β). Hence (Cohen et al., 2021, "Gradient Descent on Neural Networks
    Typically Occurs at the Edge of Stability", appendix on momentum)::

        heavy ball:  λ < (2 + 2β)/η − δ                (2/η for plain GD)
        Nesterov:    λ < (2 + 2β)/(η(1 + 2β)) − δ

    η = 0 gives +inf (every sharpness is stable). ``adam``, ``sam`` and ``entropy_sgd`` have no such
    threshold on λ_max of the loss (Adam's is on the preconditioned Hessian, Cohen et al., 2022): None.

    >>> stability_threshold("sgd", lr=0.5, momentum=0.9)
    7.6
    >>> stability_threshold("adam", lr=0.5) is None
    True

    Raises:
        ConfigError: on an unknown optimizer, a negative ``lr`` or ``weight_decay``, or β outside [0, 1).
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_number("lr", lr, minimum=0)
    check_number("weight_decay", weight_decay, minimum=0)
    check_number("momentum", momentum, minimum=0, maximum=1, strict_maximum=True)
    if optimizer != "sgd":
        return None
    if lr == 0:
        return math.inf
    bound = (2 + 2 * momentum) / (1 + 2 * momentum) if nesterov else 2 + 2 * momentum  # on η(λ + δ)
    return bound / lr - weight_decay


def optimizer_stability_threshold(optimizer: Optional[torch.optim.Optimizer]) -> Optional[float]:
    """:func:`stability_threshold` of a torch optimizer, read from its param groups' current settings.

    Only ``torch.optim.SGD`` has one (SAM, Entropy-SGD, Adam: None). Dampening d scales each step
    to η(1 − d). Groups with different lr, momentum, Nesterov flag, weight decay or dampening (e.g.
    ``layer_lr``) have no common threshold on λ_max (the bound is then on the preconditioned Hessian): None.
    """
    if not isinstance(optimizer, torch.optim.SGD):
        return None
    settings = {
        (g["lr"] * (1 - g.get("dampening", 0.0)), g.get("momentum", 0.0), bool(g.get("nesterov", False)), g.get("weight_decay", 0.0))
        for g in optimizer.param_groups
    }
    if len(settings) != 1:
        return None
    lr, momentum, nesterov, weight_decay = settings.pop()
    return stability_threshold("sgd", lr, momentum, nesterov, weight_decay)


# ---- Lightning shell ----------------------------------------------------------------------------
class HessianSharpness(ProbeCallback):
    """Logs ``sharpness/lambda_max``, ``sharpness/two_over_lr`` (the literal 2/η of the first optimizer
    param group), ``sharpness/stability_threshold`` (the optimizer's largest stable sharpness, e.g.
    (2 + 2β)/η for SGD with momentum β; only where one is defined, see :func:`stability_threshold`),
    optionally ``sharpness/trace``, ``sharpness/lambda_max/<layer>`` and the eigenvalue density (a TensorBoard
    histogram ``sharpness/density``, drawn by scripts/report.py), and ``diag/sharpness_seconds``, at the
    start of training, after every ``every_n_epochs``-th training epoch and at the end (see
    :class:`callbacks.diagnostic.Diagnostic`).

    Args:
        every_n_epochs: how often to measure.
        probe_size: size of the fixed random subset of the training set the loss is evaluated on;
            ``None`` = the whole training set (the loss full-batch GD descends; the edge-of-stability
            configs use it). Memory and time grow with it: the products keep the graph of a gradient
            over the probe set, about 6× the activations of a forward pass (ResNet-20 on CIFAR-10:
            ~8.6 MB per sample, so the default 128 stays near 1 GiB; the whole 50,000 would need 430 GB).
        k: number of top eigenvalues; all k are logged, as ``sharpness/lambda_<i>`` for i ≥ 2.
        tol: relative accuracy of the eigenvalues: the Ritz residual bound of :func:`hessian_top_eigs`.
        trace: also log the Hutchinson trace (100 Rademacher probes).
        seed: draws the probe subset.
        method: ``lanczos`` (torch, on the model's device), ``arpack`` (scipy, host) or ``power``
            (PyHessian's power iteration, k = 1), see :func:`hessian_top_eigs`.
        per_layer: also log ``sharpness/lambda_max/<layer>``, the top eigenvalue of each layer's diagonal
            Hessian block (:func:`hessian_layer_top_eigs`; Lanczos at ``tol``).
        density: also log the eigenvalue density by stochastic Lanczos quadrature
            (:func:`hessian_spectral_density` with its defaults: 1 probe, 100 steps).

    Raises:
        ConfigError: on a non-positive ``every_n_epochs``, ``probe_size`` or ``k``, a negative ``tol``, an
            unknown ``method``, or k > 1 with ``power``.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        probe_size: Optional[int] = 128,
        k: int = 1,
        tol: float = 1e-3,
        trace: bool = False,
        seed: int = 0,
        method: Method = "lanczos",
        per_layer: bool = False,
        density: bool = False,
    ) -> None:
        super().__init__(every_n_epochs, probe_size, seed)
        check_positive_int("k", k)
        check_number("tol", tol, minimum=0)
        for name, flag in (("trace", trace), ("per_layer", per_layer), ("density", density)):
            check_bool(name, flag)
        check_choice("method", method, METHODS)
        if method == "power" and k != 1:
            raise ConfigError(f"Expected argument `k` to be 1 with method='power' (power iteration finds one eigenvalue) but got {k!r}")
        self.k, self.tol, self.trace, self.method, self.per_layer, self.density = k, tol, trace, method, per_layer, density

    def measure(
        self, net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, lr: float, threshold: Optional[float] = None
    ) -> dict[str, float]:
        """The logged values for one call (no Lightning involved); ``threshold`` (the optimizer's
        stability threshold, :func:`optimizer_stability_threshold`) is logged unless None."""
        start = time.perf_counter()
        eigs, _ = hessian_top_eigs(net, loss_fn, x, y, self.k, self.tol, self.method)
        values = {"sharpness/lambda_max": float(eigs[0]), "sharpness/two_over_lr": 2.0 / lr if lr > 0 else math.inf}
        if threshold is not None:
            values["sharpness/stability_threshold"] = threshold
        values.update({f"sharpness/lambda_{i + 1}": float(e) for i, e in enumerate(eigs[1:], start=1)})
        if self.trace:
            values["sharpness/trace"] = hessian_trace(net, loss_fn, x, y)
        if self.per_layer:
            values.update(
                {f"sharpness/lambda_max/{layer}": lam for layer, lam in hessian_layer_top_eigs(net, loss_fn, x, y, self.tol).items()}
            )
        values["diag/sharpness_seconds"] = time.perf_counter() - start
        return values

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        x, y = self.probe(trainer, pl_module.device)
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else math.nan
        net, loss_fn = module_net(pl_module), module_loss(pl_module)
        values = self.measure(net, loss_fn, x, y, lr, optimizer_stability_threshold(optimizer))
        if self.density:
            start = time.perf_counter()
            log_density(trainer, "sharpness/density", *hessian_spectral_density(net, loss_fn, x, y))
            values["diag/sharpness_seconds"] += time.perf_counter() - start
        return values


def log_density(trainer: pl.Trainer, tag: str, grid: torch.Tensor, density: torch.Tensor) -> None:
    """Write a density on an even grid to every TensorBoard logger as a histogram at ``trainer.global_step``:
    bucket i ends at grid[i] + h/2 and holds the mass density[i]·h (h: the grid step), so the masses sum to 1."""
    if not trainer.is_global_zero or trainer.sanity_checking:
        return
    step = float(grid[1] - grid[0])
    mass = density * step
    for logger in trainer.loggers:
        writer = getattr(logger, "experiment", None)
        if hasattr(writer, "add_histogram_raw"):
            writer.add_histogram_raw(
                tag,
                min=float(grid[0]),
                max=float(grid[-1]),
                num=float(mass.sum()),
                sum=float(mass @ grid),
                sum_squares=float(mass @ grid**2),
                bucket_limits=(grid + step / 2).tolist(),
                bucket_counts=mass.tolist(),
                global_step=trainer.global_step,
            )
