"""Sharpness: the top eigenvalues and the trace of the Hessian of the training loss.

    H = ∇²_θ L(θ),    L(θ) = loss_fn(net(x; θ), y),    θ = the trainable parameters (requires_grad)

Full-batch GD with step η is unstable along directions where λ > 2/η; in practice λ_max rises to
2/η and hovers there ("edge of stability", Cohen et al., 2021), so the callback logs both.

Hessian-vector products reuse one gradient graph: g = ∇L is built once with ``create_graph=True``
and each Hv = ∇(g·v) is one backward pass through it, with no new forward pass. The top-k
eigenvalues come from Lanczos (ARPACK's implicitly restarted Lanczos, ``scipy eigsh``,
``which="LA"``), the trace from Hutchinson's estimator tr H = E[vᵀHv], v Rademacher
(Hutchinson, 1989). ``hessian_power_iteration`` is PyHessian's method, kept as a reference.

Through a net converted by a learning rule (FA, DFA, ...) the products are those of exact backprop:
the Hessian of the loss does not depend on how the rule trains the net.

Mode: the loss is evaluated in *training* mode, i.e. the loss the optimizer descends (BatchNorm
normalizes with batch statistics). Everything a call touches is restored afterwards: each
module's train/eval flag, every buffer (BatchNorm running statistics), the parameters' ``.grad``
and the torch RNG state. A dropout mask is drawn once per call, so the operator is one fixed
symmetric matrix. Products run in the net's dtype; scipy works in float64.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from threadpoolctl import threadpool_limits
from torch import nn
from typing_extensions import override

from lightning_modules.checks import check_positive_int

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---- shared by the diagnostics (kernel.py, alignment.py, teacher.py import these) ---------------
@contextmanager
def preserved_state(net: nn.Module, train: bool) -> Iterator[None]:
    """Run the body with ``net`` in train (or eval) mode; restore modes, buffers, ``.grad`` and RNG after.

    ``.grad`` is set to ``None`` on entry, so a ``backward()`` in the body cannot add into the saved one.
    """
    modes = [(m, m.training) for m in net.modules()]
    buffers = [(b, b.detach().clone()) for b in net.buffers()]
    grads = [(p, p.grad) for p in net.parameters()]
    cuda = sorted({t.device.index or 0 for t in net.parameters() if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        for p, _ in grads:
            p.grad = None
        net.train(train)
        try:
            yield
        finally:
            for module, mode in modes:
                module.training = mode
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            for p, grad in grads:
                p.grad = grad


@contextmanager
def exact_backprop(net: nn.Module) -> Iterator[None]:
    """Exact backprop through layers a learning rule converted (lightning_modules.learning_rules),
    so Hessians and Jacobians are those of the loss and the net, whatever rule trains them."""
    try:
        from lightning_modules.learning_rules import backprop_mode
    except ImportError:  # rules without converted layers
        yield
        return
    with backprop_mode(net):
        yield


def trainable_parameters(net: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` for every parameter with ``requires_grad``.

    Raises:
        ValueError: when there is none.
    """
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"Expected argument `net` to have trainable parameters (requires_grad) but got none in {type(net).__name__}")
    return named


def probe_indices(n: int, size: Optional[int], seed: int) -> torch.Tensor:
    """``size`` distinct indices of ``range(n)`` drawn from ``seed`` alone (all of them when ``size`` is None or ≥ n).

    >>> probe_indices(5, None, 0).tolist()
    [0, 1, 2, 3, 4]
    """
    if size is None or size >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


class ProbeCallback(pl.Callback):
    """Base of the diagnostics callbacks: runs every ``every_n_epochs`` training epochs (epoch 0 included)
    on a fixed probe subset of the training set, drawn once from ``seed``; never during the sanity check."""

    def __init__(self, every_n_epochs: int = 1, probe_size: Optional[int] = 256, seed: int = 0) -> None:
        check_positive_int("every_n_epochs", every_n_epochs)
        check_positive_int("probe_size", probe_size, allow_none=True)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"Expected argument `seed` to be an integer but got {seed!r}")
        self.every_n_epochs, self.probe_size, self.seed = every_n_epochs, probe_size, seed
        self.indices: Optional[torch.Tensor] = None  # probe indices into the training set
        self._probe: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(every_n_epochs=self.every_n_epochs, probe_size=self.probe_size, seed=self.seed)

    def is_due(self, trainer: pl.Trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    def probe(self, trainer: pl.Trainer, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe batch ``(x, y)`` on ``device``, from the DataModule's public ``train`` split.

        Raises:
            ValueError: when the DataModule holds no ``train`` split.
        """
        if self._probe is None or self._probe[0].device != device:
            data = trainer.datamodule
            if data is not None and getattr(data, "train", None) is None and hasattr(data, "prepare_splits"):
                data.prepare_splits()
            train = getattr(data, "train", None)
            if train is None:
                raise ValueError(f"Expected the DataModule to hold a `train` split (a TensorDataModule) for {type(self).__name__} but got {type(data).__name__}")
            if self.indices is None:
                self.indices = probe_indices(len(train.x), self.probe_size, self.seed)
            self._probe = (train.x[self.indices].to(device), train.y[self.indices].to(device))
        return self._probe

    @override
    def state_dict(self) -> dict:
        return {"indices": self.indices}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.indices = state_dict.get("indices")
        self._probe = None


def module_net(pl_module: pl.LightningModule) -> nn.Module:
    """The bare network of a LightningModule (``pl_module.net`` when it has one)."""
    return getattr(pl_module, "net", pl_module)


def module_loss(pl_module: pl.LightningModule) -> LossFn:
    """``pl_module.loss_fn(output, y)``, the mean training loss.

    Raises:
        ValueError: when the module has no ``loss_fn``.
    """
    loss_fn = getattr(pl_module, "loss_fn", None)
    if not callable(loss_fn):
        raise ValueError(f"Expected the LightningModule to define `loss_fn(output, y)` but {type(pl_module).__name__} has none")
    return loss_fn


# ---- Hessian-vector products --------------------------------------------------------------------
def _hvp_operator(net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ Hv on flat vectors; the gradient graph is built here once and reused by every product."""
    params = [p for _, p in trainable_parameters(net)]
    grads = torch.autograd.grad(loss_fn(net(x), y), params, create_graph=True)
    sizes = [p.numel() for p in params]

    def hvp(v: torch.Tensor) -> torch.Tensor:
        vs = [c.view_as(p) for c, p in zip(v.split(sizes), params)]
        hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True, allow_unused=True, materialize_grads=True)
        return torch.cat([h.reshape(-1) for h in hv])

    return hvp


def _n_params(net: nn.Module) -> tuple[int, torch.dtype, torch.device]:
    params = [p for _, p in trainable_parameters(net)]
    return sum(p.numel() for p in params), params[0].dtype, params[0].device


def hessian_top_eigs(net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, k: int = 1, tol: float = 1e-3) -> tuple[torch.Tensor, int]:
    """The k largest (algebraic) eigenvalues of H = ∇²_θ loss_fn(net(x), y), by Lanczos on HVPs.

    ``tol`` is ARPACK's relative accuracy of the eigenvalues (0 = machine precision). The start
    vector is fixed (numpy seed 0), so a call is deterministic. ARPACK's default Krylov subspace
    (ncv = max(2k + 1, 20)) sets a floor of about ncv + 1 HVPs (21 for k = 1) but stays reliable
    when the top eigenvalues cluster, where smaller subspaces were seen to settle on λ₂ and power
    iteration needs hundreds of HVPs (scripts/bench_diagnostics.py).

    Returns:
        ``(eigs, n_hvp)``: eigenvalues (k,) in float64, descending, and the number of HVPs used.

    Raises:
        ValueError: unless 1 ≤ k < number of trainable parameters, or on a negative ``tol``.
    """
    n, dtype, device = _n_params(net)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"Expected argument `k` to be an integer in [1, {n - 1}] (the parameter count - 1) but got {k!r}")
    if not tol >= 0:
        raise ValueError(f"Expected argument `tol` to be >= 0 but got {tol!r}")
    n_hvp = 0
    with preserved_state(net, train=True), exact_backprop(net):
        hvp = _hvp_operator(net, loss_fn, x, y)

        def matvec(v: np.ndarray) -> np.ndarray:
            nonlocal n_hvp
            n_hvp += 1
            hv = hvp(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1)).to(device, dtype))
            return hv.detach().to("cpu", torch.float64).numpy()

        op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
        v0 = np.random.default_rng(0).standard_normal(n)
        with threadpool_limits(1, "blas"):  # scipy's small dense work is faster single-threaded
            eigs = eigsh(op, k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return torch.from_numpy(np.sort(eigs)[::-1].copy()), n_hvp


def hessian_power_iteration(
    net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, tol: float = 1e-3, max_iter: int = 1000
) -> tuple[float, int]:
    """The top-magnitude Hessian eigenvalue by power iteration, stopped as PyHessian does (Yao et al., 2020):
    when two successive Rayleigh quotients differ by less than ``tol`` relative. A reference for benchmarks.

    Returns:
        ``(eigenvalue, n_hvp)``.
    """
    n, dtype, device = _n_params(net)
    generator = torch.Generator().manual_seed(0)
    with preserved_state(net, train=True), exact_backprop(net):
        hvp = _hvp_operator(net, loss_fn, x, y)
        v = torch.randn(n, generator=generator, dtype=torch.float64).to(device, dtype)
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


def hessian_trace(net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, n_probes: int = 100) -> float:
    """Hutchinson's estimate tr H ≈ (1/N) Σ vᵢᵀ H vᵢ with N = ``n_probes`` Rademacher vectors (seed 0).

    Its standard deviation is √(2(‖H‖_F² − Σ H_jj²)/N).

    Raises:
        ValueError: on a non-positive ``n_probes``.
    """
    check_positive_int("n_probes", n_probes)
    n, dtype, device = _n_params(net)
    generator = torch.Generator().manual_seed(0)
    total = 0.0
    with preserved_state(net, train=True), exact_backprop(net):
        hvp = _hvp_operator(net, loss_fn, x, y)
        for _ in range(n_probes):
            v = (2 * torch.randint(0, 2, (n,), generator=generator) - 1).to(device, dtype)
            total += float(torch.dot(hvp(v).detach().double(), v.double()))
    return total / n_probes


# ---- Lightning shell ----------------------------------------------------------------------------
class HessianSharpness(ProbeCallback):
    """Logs ``sharpness/lambda_max``, ``sharpness/two_over_lr`` (2/η of the first optimizer param
    group), optionally ``sharpness/trace``, and ``diag/sharpness_seconds``, at the end of every
    ``every_n_epochs``-th training epoch (epoch 0 included).

    Args:
        every_n_epochs: how often to measure.
        probe_size: size of the fixed random subset of the training set the loss is evaluated on;
            ``None`` = the whole training set (the loss full-batch GD descends). Memory grows with it.
        k: number of top eigenvalues; all k are logged, as ``sharpness/lambda_<i>`` for i ≥ 2.
        tol: relative accuracy of the eigenvalues (ARPACK).
        trace: also log the Hutchinson trace (100 Rademacher probes).
        seed: draws the probe subset.

    Raises:
        ValueError: on a non-positive ``every_n_epochs``, ``probe_size`` or ``k``, or a negative ``tol``.
    """

    def __init__(self, every_n_epochs: int = 1, probe_size: Optional[int] = None, k: int = 1, tol: float = 1e-3, trace: bool = False, seed: int = 0) -> None:
        super().__init__(every_n_epochs, probe_size, seed)
        check_positive_int("k", k)
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
            raise ValueError(f"Expected argument `tol` to be a finite number >= 0 but got {tol!r}")
        if not isinstance(trace, bool):
            raise ValueError(f"Expected argument `trace` to be a boolean but got {trace!r}")
        self.k, self.tol, self.trace = k, tol, trace

    def measure(self, net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, lr: float) -> dict[str, float]:
        """The logged values for one call (no Lightning involved)."""
        start = time.perf_counter()
        eigs, _ = hessian_top_eigs(net, loss_fn, x, y, self.k, self.tol)
        values = {"sharpness/lambda_max": float(eigs[0]), "sharpness/two_over_lr": 2.0 / lr if lr > 0 else math.inf}
        values.update({f"sharpness/lambda_{i + 1}": float(e) for i, e in enumerate(eigs[1:], start=1)})
        if self.trace:
            values["sharpness/trace"] = hessian_trace(net, loss_fn, x, y)
        values["diag/sharpness_seconds"] = time.perf_counter() - start
        return values

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.is_due(trainer):
            return
        x, y = self.probe(trainer, pl_module.device)
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan
        pl_module.log_dict(self.measure(module_net(pl_module), module_loss(pl_module), x, y, lr))
