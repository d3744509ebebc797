"""Lanczos on a symmetric operator given only as ``matvec: v ↦ A v``: the top-k eigenpairs, and
stochastic Lanczos quadrature of the spectral density. Shared by the Hessian diagnostics
(callbacks/sharpness.py); nothing here knows about nets.

After j products the Krylov space K_j(A, V₀) = span{V₀, A V₀, …, A^{j−1} V₀} holds the power
iterate A^{j−1} v₀, so the largest Ritz value θ₁ = max_{u ∈ K_j} uᵀAu/uᵀu is never below power
iteration's Rayleigh quotient after as many products: Lanczos needs at most as many products as
power iteration for the same error in λ_max, and far fewer when the top eigenvalues cluster.

The basis V (rows orthonormal) is kept whole and every new product is orthogonalized against
all of it, twice (classical Gram–Schmidt with reorthogonalization), so the projected matrix
T = V A Vᵀ is the Rayleigh–Ritz matrix of the subspace to rounding. T is built and solved in
float64 on the host (it is at most ``max_basis`` square); the basis and the products stay in
the operator's dtype on its device. With block size b the recurrence reads

    A Vᵀ = Vᵀ T + Qᵀ R Eᵀ        (Q: the next block, R: its b × b coefficients, E: the last block's rows)

so the Ritz pair (θ, y = Vᵀs) has the residual ‖A y − θ y‖ = ‖R s_last‖ (s_last: the entries of s
on the last block), known without another product.
"""

from __future__ import annotations

import warnings
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch

from lightning_modules.checks import ConfigError, check_int, check_number, is_integer

Matvec = Callable[[torch.Tensor], torch.Tensor]


class Eigenpairs(NamedTuple):
    """Result of :func:`lanczos_top_eigs`."""

    values: torch.Tensor  # (k,) float64, descending
    vectors: torch.Tensor  # (dim, k) orthonormal columns, the start vector's dtype and device
    n_matvec: int  # products A v used
    residuals: torch.Tensor  # (k,) float64: ‖A y_i − θ_i y_i‖
    converged: bool  # every residual within the stopping rule


def _orthonormalize(w: torch.Tensor, scale: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Orthonormal rows Q spanning the rows of ``w`` (b, dim), and R (r, b) upper triangular with w = Rᵀ Q
    (Gram–Schmidt, each row twice: Giraud et al., 2005). A row whose remainder is ≤ 100 ε ``scale[j]``
    (ε: the dtype's unit roundoff) lies in the span of what came before and adds none (deflation: r < b)."""
    floor = 100 * torch.finfo(w.dtype).eps * scale
    if len(w) == 1:  # the common case, in as few tensor operations as possible
        norm = float(w.norm())
        return (w / norm, np.array([[norm]])) if norm > floor[0] and norm > 0 else (w[:0], np.zeros((0, 1)))
    rows: list[torch.Tensor] = []
    coef = np.zeros((len(w), len(w)))
    for j, v in enumerate(w):
        if rows:
            q = torch.stack(rows)
            for _ in range(2):
                c = q @ v
                v = v - c @ q
                coef[: len(rows), j] += c.double().cpu().numpy()
        norm = float(v.norm())
        if norm > floor[j] and norm > 0:
            coef[len(rows), j] = norm
            rows.append(v / norm)
    return (torch.stack(rows) if rows else w[:0]), coef[: len(rows)]


def _extend(matvec: Matvec, basis: torch.Tensor, lo: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Apply A to the last block ``basis[lo:]`` (rows orthonormal) and orthogonalize the products against
    the whole basis, twice: their column of T (n, b) in float64, the next block Q and its R."""
    w = matvec(basis[lo])[None] if lo == len(basis) - 1 else torch.stack([matvec(v) for v in basis[lo:]])  # (b, dim)
    c = basis @ w.T  # (n, b)
    w = torch.addmm(w, c.T, basis, alpha=-1)
    c2 = basis @ w.T
    w = torch.addmm(w, c2.T, basis, alpha=-1)
    column = c.add_(c2).double().cpu().numpy()  # one small copy to the host
    if not np.isfinite(column).all():
        raise ValueError("Expected the operator to return finite products but got nan or inf (is the loss finite?)")
    q, r = _orthonormalize(w, np.linalg.norm(column, axis=0))  # rounding in w is relative to ‖A v‖ ≥ ‖column‖
    return column, q, r


def lanczos_top_eigs(
    matvec: Matvec, start: torch.Tensor, k: int = 1, tol: float = 1e-3, max_iter: Optional[int] = None, max_basis: Optional[int] = None
) -> Eigenpairs:
    """The k largest (algebraic) eigenvalues λ₁ ≥ … ≥ λ_k of a symmetric A, and their vectors, by block
    Lanczos with full reorthogonalization and thick restarts (Wu & Simon, 2000).

    Block size b = k, so an eigenvalue repeated up to k times is found with its multiplicity (a single
    start vector sees one vector of each eigenspace). The stopping rule is checked after every block of
    b products: stop when each of the top k Ritz pairs (θ_i, y_i), ‖y_i‖ = 1, has

        ‖A y_i − θ_i y_i‖ ≤ max(tol · |θ_i|, 100 ε ‖T‖)          (ε: the dtype's unit roundoff)

    Then each θ_i lies within tol·|θ_i| of an eigenvalue of A (the residual bound) and, where the rest
    of the spectrum is a gap γ away, within (tol·θ_i)²/γ (Kato–Temple; both in Parlett, "The Symmetric
    Eigenvalue Problem", 1998), so the eigenvalue error is usually far below ``tol``. Eigenvalues
    closer together than tol·|θ| are resolved only to their spread. ``tol = 0`` runs to the rounding level. When the
    Krylov space becomes invariant (e.g. A = 0, or every eigenvalue found) the answer is exact and the
    iteration stops. When the basis would pass ``max_basis`` vectors, it restarts from the top
    ``≈ max_basis/2`` Ritz vectors.

    >>> A = torch.diag(torch.tensor([3.0, -5.0, 1.0, 2.0], dtype=torch.float64))
    >>> start = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    >>> lanczos_top_eigs(lambda v: A @ v, start, k=2).values.round(decimals=12).tolist()
    [3.0, 2.0]

    Args:
        matvec: v ↦ A v on vectors of the start's shape (dim,), dtype and device.
        start: (k, dim) start block (for k = 1 also (dim,)); fixes dim, dtype and device.
        k: how many eigenvalues, 1 ≤ k ≤ dim (k = dim gives the whole spectrum).
        tol: relative residual of the stopping rule above.
        max_iter: most products (default max(1000, 10k)); on reaching it a warning is issued and the
            current Ritz pairs are returned with ``converged=False``.
        max_basis: most basis vectors kept (default max(30, 3k), at least 3k unless ≥ dim).

    Returns:
        :class:`Eigenpairs` ``(values, vectors, n_matvec, residuals, converged)``.

    Raises:
        ConfigError: on a bad argument or a start block of rank < k. ValueError: on a non-finite product.
    """
    block = start.reshape(1, -1) if start.dim() == 1 else start
    dim = block.shape[-1]
    if not is_integer(k) or not 1 <= k <= dim:
        raise ConfigError(f"Expected argument `k` to be an integer in [1, {dim}] (the operator's dimension) but got {k!r}")
    if block.dim() != 2 or block.shape[0] != k:
        raise ConfigError(f"Expected argument `start` to have shape ({k}, {dim}) (k start vectors) but got {tuple(start.shape)}")
    check_number("tol", tol, minimum=0)
    max_iter = max(1000, 10 * k) if max_iter is None else max_iter
    check_int("max_iter", max_iter, minimum=k)
    max_basis = max(30, 3 * k) if max_basis is None else max_basis
    check_int("max_basis", max_basis, minimum=min(dim, 3 * k))
    max_basis = min(dim, max_basis)

    eps = torch.finfo(block.dtype).eps
    basis = block.new_empty(max_basis, dim)
    q, _ = _orthonormalize(block, block.norm(dim=1).double().cpu().numpy())
    if len(q) < k:
        raise ConfigError(f"Expected argument `start` to hold {k} linearly independent vectors but got rank {len(q)}")
    T = np.zeros((max_basis, max_basis))  # the projected matrix V A Vᵀ, float64 on the host
    basis[:k], lo, n, n_matvec = q, 0, k, 0
    while True:
        column, q, r = _extend(matvec, basis[:n], lo)
        n_matvec += n - lo
        T[:n, lo:n], T[lo:n, :n] = column, column.T
        T[lo:n, lo:n] = (column[lo:n] + column[lo:n].T) / 2
        theta, s = np.linalg.eigh(T[:n, :n])
        theta, s = theta[::-1], s[:, ::-1]  # descending
        residuals = np.linalg.norm(r @ s[lo:n, :k], axis=0)  # ‖R s_last‖ for the top k
        converged = bool((residuals <= np.maximum(tol * np.abs(theta[:k]), 100 * eps * np.abs(theta).max())).all())
        if converged or len(q) == 0 or n_matvec + len(q) > max_iter:
            break
        if n + len(q) > max_basis:  # thick restart from the top Ritz vectors Y; T[Y, Y] = diag θ, and T[Y, q] = (R s_last)ᵀ
            keep = min(n, max(k, (max_basis - len(q)) // 2), max_basis - 2 * len(q))  # comes with the next column
            basis[:keep] = torch.from_numpy(s[:, :keep].T.copy()).to(basis) @ basis[:n]
            T[:] = 0
            T[:keep, :keep] = np.diag(theta[:keep])
            n = keep
        basis[n : n + len(q)] = q
        lo, n = n, n + len(q)
    if not converged and len(q) > 0:
        warnings.warn(
            f"Lanczos stopped after max_iter={max_iter} products before the top {k} Ritz residuals fell below "
            f"tol={tol:g} relative (largest: {(residuals / np.maximum(np.abs(theta[:k]), 1e-300)).max():.2g})",
            stacklevel=2,
        )
    vectors = basis[:n].T @ torch.from_numpy(s[:, :k].copy()).to(basis)
    return Eigenpairs(torch.from_numpy(theta[:k].copy()), vectors, n_matvec, torch.from_numpy(residuals), converged or len(q) == 0)


def lanczos_quadrature(matvec: Matvec, probes: torch.Tensor, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stochastic Lanczos quadrature (Golub & Meurant, 2010; Ubaru, Chen & Saad, 2017): for each probe v,
    n_steps Lanczos steps from v/‖v‖ give T with eigenpairs (θ_j, s_j); nodes θ_j and weights s_{1j}²
    (summing to 1) make a quadrature exact for polynomials of degree ≤ 2·n_steps − 1:

        Σ_j s_{1j}² p(θ_j) = vᵀ p(A) v / ‖v‖²

    so with Rademacher probes the mean over probes of Σ_j s_{1j}² θ_j^m estimates tr(A^m)/dim (Hutchinson).
    A probe whose Krylov space closes early (invariant) has fewer nodes: the rest get weight 0.

    Returns:
        ``(nodes, weights)``, each (n_probes, n_steps) float64.
    """
    n_probes, dim = probes.shape
    nodes = torch.zeros(n_probes, n_steps, dtype=torch.float64)
    weights = torch.zeros(n_probes, n_steps, dtype=torch.float64)
    for p, v in enumerate(probes):
        basis = v.new_empty(min(n_steps, dim), dim)
        basis[0] = v / v.norm()
        T = np.zeros((len(basis), len(basis)))
        n = 1
        while True:
            column, q, _ = _extend(matvec, basis[:n], n - 1)
            T[:n, n - 1], T[n - 1, :n] = column[:, 0], column[:, 0]
            if len(q) == 0 or n == len(basis):
                break
            basis[n] = q[0]
            n += 1
        theta, s = np.linalg.eigh(T[:n, :n])
        nodes[p, :n], weights[p, :n] = torch.from_numpy(theta), torch.from_numpy(s[0] ** 2)
    return nodes, weights
