"""Memory budgets of the diagnostics that build per-sample Jacobians: parse a budget, measure a net's
activations, and plan the chunks of a Jacobian Gram matrix so that its work fits the budget.

The Gram matrix K = Σ_o J_o J_oᵀ of n samples (J_o: the (n, P) Jacobian of output o, k outputs) is
built from passes of ``vmap(jacrev)`` over a chunk of c samples and a group of g outputs, whose rows
are copied into a buffer of R samples (R = n when every chunk is kept). With s = the bytes of one
number (the net's dtype), s₁ = P·s (one sample's Jacobian row of one output) and A = the bytes
autograd saves in a forward pass of one sample, the model of memory is

    peak = n²s (the kernel) + R²s (a block of it) + R·g·s₁ (the buffer) + c·(2g·s₁ + 2A) (a pass)

where a pass holds its result, a transient copy of it, the activations and their gradients
(measured on ResNet-20 on CPU, peak RSS per sample of a pass is 0–20 % below 2g·s₁ + 2A for g = 1,
3, 10). The plan prefers, in order: every chunk of all k outputs kept (each sample's Jacobian computed
once, K = J Jᵀ in one product); the outputs split into groups of g < k, each kept in turn (one more
forward pass per group, nothing recomputed); one output at a time with r chunks kept while the later
chunks stream past, recomputed once per group of r (about n/(2rc) passes over the samples).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from lightning_modules.checks import ConfigError

#: A budget in bytes: an integer, or a string with a unit, e.g. ``"1GiB"``, ``"512MiB"``, ``"2GB"``.
MemoryBudget = Union[int, str]
DEFAULT_BUDGET = "1GiB"
#: Fewer samples per ``vmap`` pass waste time on per-pass overhead; below this the plan splits outputs further.
MIN_CHUNK = 8
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(name: str, value: MemoryBudget) -> int:
    """Bytes of a budget given as a positive integer or a string ``"<number><unit>"`` (B, KB, MB, GB, TB
    in powers of 1000; KiB, MiB, GiB, TiB in powers of 1024; case and spaces ignored).

    >>> parse_bytes("memory_budget", "1GiB"), parse_bytes("memory_budget", "1.5 kb"), parse_bytes("memory_budget", 64)
    (1073741824, 1500, 64)

    Raises:
        ConfigError: naming ``name``, on anything else or a budget below one byte.
    """
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]*)\s*", value)
        if match and match.group(2).lower() in UNITS:
            number = int(float(match.group(1)) * UNITS[match.group(2).lower()])
    if number is None or number < 1:
        raise ConfigError(
            f"Expected argument `{name}` to be a positive number of bytes (an integer or a string such as '1GiB', '512MB') but got {value!r}"
        )
    return number


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it ≥ 1, e.g. ``'2.5 GiB'``.

    >>> format_bytes(2.5 * 2**30), format_bytes(100)
    ('2.5 GiB', '100 B')
    """
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def saved_activation_bytes(fn: Callable[[], torch.Tensor], exclude: tuple[torch.Tensor, ...] = ()) -> int:
    """Bytes of the distinct tensors autograd saves for backward while ``fn()`` runs (its activations),
    leaving out tensors that share memory with ``exclude`` (the parameters and buffers)."""
    skip = {t.data_ptr() for t in exclude}
    saved: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in skip:
            saved[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(saved.values())


@dataclass(frozen=True)
class JacobianPlan:
    """Chunks of a Jacobian Gram matrix (module docstring).

    Attributes:
        n: samples; k: outputs; row_bytes: s₁ = P·s; activation_bytes: A; itemsize: s.
        chunk_size: c, samples per ``vmap(jacrev)`` pass.
        outputs_per_pass: g, outputs per pass (k = all at once; fewer costs one forward pass per group).
        kept_chunks: r, chunks whose Jacobians are kept in the buffer; ≥ the number of chunks = none recomputed.
    """

    n: int
    k: int
    row_bytes: int
    activation_bytes: int
    itemsize: int
    chunk_size: int
    outputs_per_pass: int
    kept_chunks: int

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n / self.chunk_size)

    @property
    def kept_samples(self) -> int:
        """R, the rows of the buffer."""
        return min(self.n, self.kept_chunks * self.chunk_size)

    @property
    def n_passes(self) -> int:
        """``vmap(jacrev)`` passes: per output group, the kept group starting at chunk a passes over chunks a … end."""
        groups = math.ceil(self.k / self.outputs_per_pass)
        return groups * sum(self.n_chunks - a for a in range(0, self.n_chunks, self.kept_chunks))

    @property
    def peak_bytes(self) -> int:
        """The modelled peak (module docstring)."""
        c, g, kept = self.chunk_size, self.outputs_per_pass, self.kept_samples
        return (self.n**2 + kept**2) * self.itemsize + kept * g * self.row_bytes + c * (2 * g * self.row_bytes + 2 * self.activation_bytes)


def plan_jacobian_gram(
    n: int, k: int, n_params: int, itemsize: int, activation_bytes: int, memory_budget: MemoryBudget, chunk_size: Optional[int] = None
) -> JacobianPlan:
    """The fastest plan (module docstring) whose modelled peak fits ``memory_budget``.

    An explicit ``chunk_size`` wins: the budget then decides only how many outputs go in a pass and
    how many chunks are kept (at least one, even beyond the budget).

    Raises:
        ConfigError: one line naming ``memory_budget`` and the bytes needed, when the (n, n) kernel and
            the Jacobian of one sample and one output do not fit.
    """
    budget = parse_bytes("memory_budget", memory_budget)
    s, s1, a = itemsize, n_params * itemsize, activation_bytes

    def plan(c: int, g: int, r: int) -> JacobianPlan:
        return JacobianPlan(n, k, s1, a, s, c, g, r)

    smallest = plan(1, 1, 1)
    if smallest.peak_bytes > budget:
        raise ConfigError(
            f"Expected argument `memory_budget` to be at least {smallest.peak_bytes} bytes ({format_bytes(smallest.peak_bytes)}: "
            f"the ({n}, {n}) kernel and one sample's Jacobian row of {n_params} parameters) but got {budget} bytes "
            f"({format_bytes(budget)}); raise it or use fewer probe samples"
        )
    for g in range(k, 0, -1):  # every chunk kept (R = n), as many outputs per pass as fit
        room = budget - 2 * n * n * s - n * g * s1  # for c·(2g·s₁ + 2A)
        c = min(chunk_size, n) if chunk_size is not None else min(n, max(0, room) // (2 * g * s1 + 2 * a))
        if c >= 1 and plan(c, g, math.ceil(n / c)).peak_bytes <= budget and (g == 1 or chunk_size is not None or c >= min(n, MIN_CHUNK)):
            return plan(c, g, math.ceil(n / c))

    def most_kept(c: int) -> int:  # the largest r ≥ 1 with R²s + R·s₁ ≤ budget − n²s − c(2s₁ + 2A), R = r·c
        room = budget - n * n * s - c * (2 * s1 + 2 * a)
        kept = int((math.sqrt(s1 * s1 + 4 * s * max(room, 0)) - s1) / (2 * s))
        while kept > 1 and kept * kept * s + kept * s1 > room:  # float rounding
            kept -= 1
        return max(1, min(math.ceil(n / c) - 1, kept // c))

    # One output per pass, r chunks kept while later chunks stream past; a pass takes about an eighth of the budget.
    c = min(n, chunk_size or max(1, (budget - n * n * s) // (8 * (2 * s1 + 2 * a))))
    while chunk_size is None and c > 1 and plan(c, 1, most_kept(c)).peak_bytes > budget:
        c -= 1
    return plan(c, 1, most_kept(c))
