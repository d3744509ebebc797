"""Empirical neural tangent kernel: drift from initialization, smallest eigenvalue, target alignment.

    K(x, x') = Σ_k ⟨∂f_k(x)/∂θ, ∂f_k(x')/∂θ⟩      (θ = trainable parameters, summed over outputs k)

In the NTK regime K stays at K_0 during training and λ_min(K) > 0 drives the training loss to zero
(Jacot et al., 2018; Du et al., 2019); the logged drift ‖K_t − K_0‖_F / ‖K_0‖_F measures how far
a run is from it. The kernel is the Jacobian Gram matrix of the net in *eval* mode (a per-sample
function: BatchNorm uses running statistics, dropout is off) with exact backprop through layers a
learning rule converted; modes, buffers, grads and RNG are restored after each call.

Several outputs: ``kernel/lambda_min`` is the smallest eigenvalue of this output-summed (n, n)
kernel, not of the (nk, nk) Gram G = J Jᵀ of all k outputs (J: (nk, p) Jacobian) that convergence
proofs for multi-output nets use. K = Σ_c G_cc (the diagonal blocks of G), so
vᵀKv = Σ_c (E_c v)ᵀ G (E_c v) ≥ k λ_min(G) ‖v‖², i.e. λ_min(K) ≥ k λ_min(G): a positive λ_min(G)
implies a positive λ_min(K), not conversely (two identical outputs give a singular G and K = 2 G_11).

For a :class:`TwoLayerMLP`, f = c2 W2 σ(z) + b2 with z = c1 W1 x + b1, the kernel is closed form
(:func:`two_layer_ntk`); any other net goes through per-sample Jacobians (:func:`jacobian_ntk`), in chunks
planned to fit a memory budget (:mod:`callbacks.memory`).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap
from typing_extensions import override

from callbacks.diagnostic import ProbeCallback, module_net
from callbacks.memory import DEFAULT_BUDGET, JacobianPlan, MemoryBudget, parse_bytes, plan_jacobian_gram, saved_activation_bytes
from callbacks.net_state import exact_backprop, preserved_state, trainable_parameters
from lightning_modules.checks import check_positive_int
from lightning_modules.nets.mlp import ACTIVATIONS, TwoLayerMLP

#: σ'(z) of each activation of TwoLayerMLP (relu' (0) = 0, as autograd has it; gelu is the exact erf form).
DERIVATIVES = {
    "relu": lambda z: (z > 0).to(z.dtype),
    "tanh": lambda z: 1.0 - torch.tanh(z) ** 2,
    "erf": lambda z: (2.0 / math.sqrt(math.pi)) * torch.exp(-(z**2)),
    "quadratic": lambda z: 2.0 * z,
    "gelu": lambda z: 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0))) + z * torch.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi),
    "linear": torch.ones_like,
}


def has_closed_form(net: nn.Module) -> bool:
    """Whether :func:`two_layer_ntk` applies: a TwoLayerMLP with one of its own activations."""
    return type(net) is TwoLayerMLP and net.activation in DERIVATIVES and net.sigma is ACTIVATIONS[net.activation]


@torch.no_grad()
def two_layer_ntk(net: TwoLayerMLP, x: torch.Tensor) -> torch.Tensor:
    """Closed-form NTK of f(x) = c2 W2 σ(c1 W1 x + b1) + b2 with k outputs and hidden width m:

        K = [W2] k c2² σ(Z) σ(Z)ᵀ + [b2] k + c2² ([W1] c1² X Xᵀ + [b1]) ∘ (σ'(Z) diag(a) σ'(Z)ᵀ),

    Z = c1 X W1ᵀ + b1 (n, m), a_j = Σ_k W2[k, j]², and [·] is 1 when that parameter is trainable.
    Costs O(n m (d + n)), against O(n² P) for Jacobians.
    """
    x = x.flatten(1)  # (n, d)
    fc1, fc2, c1, c2 = net.fc1, net.fc2, net.c1, net.c2
    trainable = lambda p: p is not None and p.requires_grad  # noqa: E731
    z = fc1(x * c1)  # (n, m) pre-activations
    out = fc2.weight.shape[0]
    kernel = x.new_zeros(len(x), len(x))
    if trainable(fc2.weight):
        h = net.sigma(z)
        kernel += out * c2**2 * (h @ h.T)
    if trainable(fc2.bias):
        kernel += out
    if trainable(fc1.weight) or trainable(fc1.bias):
        inputs = (c1**2) * (x @ x.T) if trainable(fc1.weight) else x.new_zeros(len(x), len(x))
        if trainable(fc1.bias):
            inputs += 1.0
        d = DERIVATIVES[net.activation](z) * fc2.weight.pow(2).sum(0).sqrt()  # (n, m): σ'(z_j) √a_j
        kernel += c2**2 * inputs * (d @ d.T)
    return kernel


Output = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


def per_sample_output(net: nn.Module) -> tuple[dict[str, torch.Tensor], Output]:
    """``(θ, f)``: the trainable parameters (detached, by name) and f(θ, x_i) = net(x_i) flattened to (k,)."""
    names = [n for n, _ in trainable_parameters(net)]
    params = {n: p.detach() for n, p in net.named_parameters() if n in names}
    constants = {n: p.detach() for n, p in net.named_parameters() if n not in names}
    constants.update({n: b.detach() for n, b in net.named_buffers()})

    def output(theta: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(net, {**theta, **constants}, (xi.unsqueeze(0),)).reshape(-1)  # (k,)

    return params, output


def jacobian_plan(
    net: nn.Module, x: torch.Tensor, chunk_size: Optional[int] = None, memory_budget: MemoryBudget = DEFAULT_BUDGET
) -> JacobianPlan:
    """The chunks :func:`jacobian_ntk` uses on ``x``: k and P from the net, the activations A from one
    forward pass of one sample (eval mode), then :func:`callbacks.memory.plan_jacobian_gram`.

    Raises:
        ValueError: as :func:`jacobian_ntk`.
    """
    check_positive_int("chunk_size", chunk_size, allow_none=True)
    params, output = per_sample_output(net)
    with preserved_state(net, train=False), exact_backprop(net):
        leaves = {n: p.detach().requires_grad_() for n, p in params.items()}  # share memory with the net: excluded below
        activations = saved_activation_bytes(lambda: output(leaves, x[0]), exclude=(*net.parameters(), *net.buffers()))
        k = output(params, x[0]).numel()
    itemsize = next(iter(params.values())).element_size()
    return plan_jacobian_gram(len(x), k, sum(p.numel() for p in params.values()), itemsize, activations, memory_budget, chunk_size)


def jacobian_ntk(
    net: nn.Module, x: torch.Tensor, chunk_size: Optional[int] = None, memory_budget: MemoryBudget = DEFAULT_BUDGET
) -> torch.Tensor:
    """NTK from per-sample Jacobians (torch.func ``vmap(jacrev)``), in chunks that fit ``memory_budget``.

    K = Σ_G J_G J_Gᵀ over groups G of outputs, J_G the (n, |G|·P) Jacobian rows of the outputs in G,
    built from passes over chunks of samples (:func:`gram_by_chunks`). The plan (:func:`jacobian_plan`)
    keeps all of J when it fits, else splits the outputs into groups (one more forward pass each), else
    keeps r chunks of one output and recomputes the later ones once per group of r. On ResNet-20
    (P = 0.27M, k = 10) and 256 probes in float32, J is 2.8 GB; the default 1 GiB takes the outputs
    3 at a time, each sample's Jacobian computed once.

    Args:
        chunk_size: samples per pass; ``None`` = derived from the budget. An explicit value wins over
            the budget, which then only sets the outputs per pass and the chunks kept.
        memory_budget: bytes (int) or a string such as ``"1GiB"`` for the Jacobians, their working
            memory and the (n, n) kernel (modelled, not measured; the interpreter is not counted).

    Raises:
        ValueError: on a non-positive ``chunk_size``; ``ConfigError`` (a ValueError) naming ``memory_budget``
            and the bytes needed when the kernel and one sample's Jacobian do not fit.
    """
    plan = jacobian_plan(net, x, chunk_size, memory_budget)
    params, output = per_sample_output(net)
    with preserved_state(net, train=False), exact_backprop(net):
        return gram_by_chunks(output, params, x, plan)


def output_slice(output: Output, start: int, stop: int) -> Output:
    """θ, x_i ↦ output(θ, x_i)[start:stop], outputs start … stop − 1."""
    return lambda theta, xi: output(theta, xi)[start:stop]


def gram_by_chunks(output: Output, params: dict[str, torch.Tensor], x: torch.Tensor, plan: JacobianPlan) -> torch.Tensor:
    """K[a, b] = Σ_o ⟨∂output(x_a)_o/∂θ, ∂output(x_b)_o/∂θ⟩ following ``plan``: per output group, the
    Jacobian rows of r chunks go into a (R, g·P) buffer B and K gets B Bᵀ, then every later chunk's
    rows J_j (recomputed) give the blocks J_j Bᵀ."""
    chunks = list(x.split(plan.chunk_size))
    starts = [0]
    for chunk in chunks:
        starts.append(starts[-1] + len(chunk))
    first, n_params = next(iter(params.values())), sum(p.numel() for p in params.values())
    kernel = x.new_zeros(len(x), len(x))
    for out in range(0, plan.k, plan.outputs_per_pass):
        outs = range(out, min(out + plan.outputs_per_pass, plan.k))
        per_sample = vmap(jacrev(output_slice(output, outs.start, outs.stop)), in_dims=(None, 0))

        def jacobian(
            xc: torch.Tensor, rows: Optional[torch.Tensor] = None, per_sample=per_sample, width=len(outs) * n_params
        ) -> torch.Tensor:
            """The (c, g·P) Jacobian rows of the chunk ``xc``, written into ``rows`` (new after the pass when None)."""
            jac = per_sample(params, xc)  # name -> (c, g, *shape)
            rows = first.new_empty(len(xc), width) if rows is None else rows
            col = 0
            for j in jac.values():
                rows[:, col : col + j[0].numel()] = j.reshape(len(xc), -1)
                col += j[0].numel()
            return rows

        for group in range(0, len(chunks), plan.kept_chunks):
            later = min(group + plan.kept_chunks, len(chunks))
            kept = slice(starts[group], starts[later])
            buffer = None  # free the last group's before allocating
            buffer = first.new_empty(kept.stop - kept.start, len(outs) * n_params)  # (R, g·P)
            for i in range(group, later):
                jacobian(chunks[i], buffer[starts[i] - kept.start : starts[i + 1] - kept.start])
            kernel[kept, kept] += (buffer @ buffer.T).to(kernel.dtype)
            for j in range(later, len(chunks)):  # streamed past the kept chunks: recomputed once per group
                block = (jacobian(chunks[j]) @ buffer.T).to(kernel.dtype)  # (c_j, R)
                kernel[starts[j] : starts[j + 1], kept] += block
                kernel[kept, starts[j] : starts[j + 1]] += block.T
    return kernel


def empirical_ntk(
    net: nn.Module, x: torch.Tensor, chunk_size: Optional[int] = None, memory_budget: MemoryBudget = DEFAULT_BUDGET
) -> torch.Tensor:
    """The (n, n) empirical NTK of ``net`` on ``x``, summed over outputs (module docstring).

    Closed form for a TwoLayerMLP (``chunk_size`` and ``memory_budget`` unused: it holds O(n·m) numbers),
    per-sample Jacobians in chunks that fit ``memory_budget`` otherwise (:func:`jacobian_ntk`).

    Raises:
        ValueError: on a non-positive ``chunk_size``, a net without trainable parameters, or (``ConfigError``)
            a ``memory_budget`` too small for the kernel and one sample's Jacobian.
    """
    check_positive_int("chunk_size", chunk_size, allow_none=True)
    parse_bytes("memory_budget", memory_budget)
    trainable_parameters(net)
    if has_closed_form(net):
        with preserved_state(net, train=False):
            return two_layer_ntk(net, x)
    return jacobian_ntk(net, x, chunk_size, memory_budget)


def kernel_alignment(kernel: torch.Tensor, y: torch.Tensor) -> float:
    """Centered kernel-target alignment (Cortes et al., 2012): ⟨K_c, Y_c⟩_F / (‖K_c‖_F ‖Y_c‖_F),

    K_c = HKH, Y_c = HYH, H = I − 11ᵀ/n, Y = y yᵀ. Class labels become one-hot rows; for two classes
    this equals the alignment with ±1 labels (Y_±1 = 2 Y_onehot − 11ᵀ, and centering removes 11ᵀ).
    Returns nan when K_c or Y_c is zero (e.g. a single class).

    >>> y = torch.tensor([0, 1, 1, 0])
    >>> t = 2.0 * y - 1
    >>> round(kernel_alignment(torch.outer(t, t), y), 6)
    1.0
    """
    kernel = kernel.double()
    targets = F.one_hot(y.long()).double() if not torch.is_floating_point(y) else y.reshape(len(y), -1).double()
    targets = targets - targets.mean(0)  # H Y₁, so Y_c = (H Y₁)(H Y₁)ᵀ
    centered = kernel - kernel.mean(0, keepdim=True) - kernel.mean(1, keepdim=True) + kernel.mean()
    inner = torch.trace(targets.T @ centered @ targets)
    norm = torch.linalg.norm(centered) * torch.linalg.norm(targets.T @ targets)
    return float(inner / norm) if norm > 0 else math.nan


def relative_change(now: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> dict[str, float]:
    """‖W_t − W_0‖_F / ‖W_0‖_F per named tensor; tensors with ‖W_0‖ = 0 (zero-initialized biases) are left out."""
    changes = {}
    for name, w0 in start.items():
        w0 = w0.to(now[name].device, torch.float64)
        norm = torch.linalg.norm(w0)
        if norm > 0:
            changes[name] = float(torch.linalg.norm(now[name].double() - w0) / norm)
    return changes


class KernelDrift(ProbeCallback):
    """Logs ``kernel/drift`` (‖K_t − K_0‖_F / ‖K_0‖_F), ``kernel/lambda_min`` (of the kernel summed over
    outputs, see the module docstring), ``kernel/mean_eigenvalue`` (tr K / n, the scale against which
    λ_min counts as near zero or bounded away), ``kernel/alignment``,
    ``weights/rel_change/<name>`` and ``diag/kernel_seconds`` at the start of training (drift 0), after every
    ``every_n_epochs``-th epoch and at the end (see :class:`callbacks.diagnostic.Diagnostic`).

    K_0 and the initial weights are taken at the start of fit (before the first step), on a probe set
    of ``probe_size`` training samples drawn once from ``seed``; both are checkpointed, so a resumed
    run keeps measuring against the original init. ``<name>`` is each trainable parameter tensor of
    the net (``fc1.weight``, ``fc2.bias``, ...), except tensors that start at zero.

    Args:
        every_n_epochs: how often to measure.
        probe_size: probe samples (``None`` = the whole training set); K is probe_size².
        seed: draws the probe subset.
        chunk_size: samples per Jacobian pass for nets without a closed form (``None`` = derived from
            ``memory_budget``; an explicit value wins over the budget).
        memory_budget: bytes (or a string such as ``"512MiB"``, ``"2GB"``) that the Jacobians, their working
            memory and the kernel may take; see :func:`jacobian_ntk`.

    Raises:
        ValueError: on a non-positive ``every_n_epochs``, ``probe_size``, ``chunk_size`` or ``memory_budget``;
            at the first measurement, ``ConfigError`` (one line) when the budget cannot hold the kernel
            and one sample's Jacobian.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        probe_size: Optional[int] = 256,
        seed: int = 0,
        chunk_size: Optional[int] = None,
        memory_budget: MemoryBudget = DEFAULT_BUDGET,
    ) -> None:
        super().__init__(every_n_epochs, probe_size, seed)
        check_positive_int("chunk_size", chunk_size, allow_none=True)
        parse_bytes("memory_budget", memory_budget)
        self.chunk_size, self.memory_budget = chunk_size, memory_budget
        self.kernel_0: Optional[torch.Tensor] = None  # (n, n), CPU
        self.weights_0: Optional[dict[str, torch.Tensor]] = None  # name -> tensor, CPU

    def measure(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The logged values for one call (no Lightning involved); the first call sets K_0 and W_0."""
        start = time.perf_counter()
        kernel = empirical_ntk(net, x, self.chunk_size, self.memory_budget).double()
        weights = {n: p.detach() for n, p in trainable_parameters(net)}
        if self.kernel_0 is None:
            self.kernel_0, self.weights_0 = kernel.cpu(), {n: w.to("cpu", copy=True) for n, w in weights.items()}
        kernel_0 = self.kernel_0.to(kernel.device)
        values = {
            "kernel/drift": float(torch.linalg.norm(kernel - kernel_0) / torch.linalg.norm(kernel_0)),
            "kernel/lambda_min": float(torch.linalg.eigvalsh(kernel)[0]),
            "kernel/mean_eigenvalue": float(torch.trace(kernel)) / len(kernel),
            "kernel/alignment": kernel_alignment(kernel, y),
        }
        values.update({f"weights/rel_change/{n}": v for n, v in relative_change(weights, self.weights_0).items()})
        values["diag/kernel_seconds"] = time.perf_counter() - start
        return values

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        x, y = self.probe(trainer, pl_module.device)
        return self.measure(module_net(pl_module), x, y)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)  # a fresh run: K_0 and W_0, logged at step 0
        if self.kernel_0 is None:  # resumed from a checkpoint that holds no K_0: measure from here on
            self.compute(trainer, pl_module)

    @override
    def state_dict(self) -> dict:
        return {**super().state_dict(), "kernel_0": self.kernel_0, "weights_0": self.weights_0}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.kernel_0, self.weights_0 = state_dict.get("kernel_0"), state_dict.get("weights_0")


#: The infinite-width kernels live in callbacks/infinite_width.py; ``callbacks.kernel.analytic_ntk`` etc. name them too.
INFINITE_WIDTH = ("analytic_ntk", "analytic_nngp", "kernel_ridge", "polynomial_ridge", "truncated_ntk", "analytic_distance")


def __getattr__(name: str):
    if name in INFINITE_WIDTH:
        from callbacks import infinite_width  # noqa: PLC0415  (it imports this module)

        return getattr(infinite_width, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
