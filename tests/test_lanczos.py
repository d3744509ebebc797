"""Lanczos on symmetric matrices with known spectra (callbacks/lanczos.py), against the exact eigenvalues."""

import warnings

import pytest
import torch

from callbacks.lanczos import lanczos_quadrature, lanczos_top_eigs

pytestmark = pytest.mark.usefixtures("one_thread")
DIM = 200


def spectrum(name: str) -> torch.Tensor:
    """Eigenvalues (DIM,) of the test matrices: the top few stated, the rest uniform in a bulk."""
    bulk = torch.rand(DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    top = {
        "isolated": [1.0, 0.06],  # λ₂/λ₁ of the default model (scripts/bench_diagnostics.py)
        "clustered": [1.0, 0.994, 0.99, 0.985],  # λ₂/λ₁ of the clustered benchmark problem
        "repeated": [5.0, 5.0, 5.0, 2.0],
        "indefinite": [4.0, 3.9],  # with a bulk down to −3.5
        "negative": [],  # every eigenvalue in [−2, −1]: the top one is the smallest in magnitude
    }[name]
    rest = {"isolated": 0.05 * bulk, "clustered": 0.9 * bulk, "repeated": bulk, "indefinite": -3.5 * bulk, "negative": -1 - bulk}[name]
    return torch.cat([torch.tensor(top, dtype=torch.float64), rest[len(top) :]])


def matrix(eigs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Q diag(eigs) Qᵀ with Q a random orthogonal matrix."""
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q @ torch.diag(eigs) @ q.T


def start(k: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(k, DIM, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("name", ["isolated", "clustered", "repeated", "indefinite", "negative"])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("tol", [1e-2, 1e-5, 1e-9])
def test_stopping_rule_guarantees_the_stated_accuracy(name, k, tol):
    """Stated: ‖A y − θ y‖ ≤ tol·|θ| for each returned pair, so θ is within tol·|θ| of an eigenvalue (Weyl)
    and within r²/γ of it (Kato–Temple; γ: the distance from θ to the next distinct eigenvalue)."""
    eigs = spectrum(name)
    a = matrix(eigs)
    exact = eigs.sort(descending=True).values
    result = lanczos_top_eigs(lambda v: a @ v, start(k), k, tol)
    assert result.converged and result.values.shape == (k,) and torch.all(result.values[:-1] >= result.values[1:])
    true_residuals = (a @ result.vectors - result.vectors * result.values).norm(dim=0)
    torch.testing.assert_close(result.residuals, true_residuals, rtol=1e-6, atol=1e-13)  # the residuals it stops on are real
    torch.testing.assert_close(result.vectors.T @ result.vectors, torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.all(true_residuals <= tol * result.values.abs() + 1e-13)
    for theta, r in zip(result.values.tolist(), true_residuals.tolist()):
        distance = (exact - theta).abs()
        nearest = float(exact[distance.argmin()])
        assert distance.min() <= tol * abs(theta) + 1e-13  # Weyl
        others = distance[(exact - nearest).abs() > 1e-12]
        assert abs(theta - nearest) <= r**2 / float(others.min()) + 1e-13  # Kato–Temple
    if name != "clustered" or tol < 1e-3:  # unless eigenvalues closer than tol cluster, θ_i approximates λ_i
        torch.testing.assert_close(result.values, exact[:k], rtol=tol, atol=0)


def power_iteration_products(a: torch.Tensor, v: torch.Tensor, target: float, max_iter: int = 20_000) -> float:
    """Products until power iteration's Rayleigh quotient from ``v`` is within ``target`` of λ₁ (oracle stop)."""
    lam1 = float(torch.linalg.eigvalsh(a)[-1])
    v = v / v.norm()
    for i in range(1, max_iter + 1):
        av = a @ v
        if abs(float(av @ v) - lam1) <= target:
            return i
        v = av / av.norm()
    return float("inf")


@pytest.mark.parametrize("name", ["isolated", "clustered", "repeated", "indefinite"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_never_more_products_than_power_iteration_at_the_same_error(name, seed):
    """From the same start vector, power iteration needs at least as many products as our Lanczos took to
    reach the error Lanczos stopped at (floored at the rounding level 100 ε λ₁, below which neither is reliable)."""
    eigs = spectrum(name)
    a = matrix(eigs)
    lam1 = float(eigs.max())
    for tol in (1e-2, 1e-4, 1e-6, 1e-8):
        result = lanczos_top_eigs(lambda v: a @ v, start(1, seed), 1, tol)
        error = abs(float(result.values[0]) - lam1)
        power = power_iteration_products(a, start(1, seed)[0], max(error, 100 * 2.2e-16 * lam1))
        assert result.n_matvec <= power, (tol, result.n_matvec, power, error)


def test_repeated_eigenvalues_come_with_their_multiplicity():
    """A single start vector sees one vector of each eigenspace; the block of k start vectors sees k."""
    a = matrix(spectrum("repeated"))
    assert lanczos_top_eigs(lambda v: a @ v, start(3), 3, 1e-10).values.tolist() == pytest.approx([5.0, 5.0, 5.0], rel=1e-10)
    assert lanczos_top_eigs(lambda v: a @ v, start(4), 4, 1e-10).values.tolist() == pytest.approx([5.0, 5.0, 5.0, 2.0], rel=1e-10)


@pytest.mark.parametrize("k", [1, 3])
def test_zero_operator_stops_at_once_with_zeros(k):
    result = lanczos_top_eigs(lambda v: torch.zeros_like(v), start(k), k, 1e-3)
    assert result.values.tolist() == [0.0] * k and result.n_matvec == k and result.converged


def test_k_equal_to_the_dimension_gives_the_whole_spectrum():
    eigs = torch.linspace(-1, 2, 7, dtype=torch.float64)
    a = matrix(eigs)
    result = lanczos_top_eigs(lambda v: a @ v, torch.randn(7, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 7, 0.0)
    torch.testing.assert_close(result.values, eigs.flip(0), rtol=0, atol=1e-13)
    assert result.n_matvec == 7


@pytest.mark.parametrize("k, max_basis", [(1, 5), (2, 8)])
def test_thick_restarts_keep_the_accuracy(k, max_basis):
    eigs = spectrum("clustered")
    a = matrix(eigs)
    result = lanczos_top_eigs(lambda v: a @ v, start(k), k, 1e-8, max_basis=max_basis)
    assert result.converged and result.n_matvec > 4 * max_basis  # it restarted several times
    torch.testing.assert_close(result.values, eigs[:k], rtol=1e-8, atol=0)


def test_max_iter_warns_and_returns_the_current_estimate():
    a = matrix(spectrum("clustered"))
    with pytest.warns(UserWarning, match="max_iter=5"):
        result = lanczos_top_eigs(lambda v: a @ v, start(1), 1, 1e-10, max_iter=5)
    assert not result.converged and result.n_matvec == 5 and 0.9 < float(result.values[0]) <= 1.0


def test_float32_operator_stays_float32_and_converges():
    eigs = spectrum("isolated")
    a = matrix(eigs).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = lanczos_top_eigs(lambda v: a @ v, start(2, dtype=torch.float32), 2, 0.0)  # tol 0: to the rounding level
    assert result.vectors.dtype == torch.float32 and result.values.dtype == torch.float64
    torch.testing.assert_close(result.values, eigs[:2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "`k`"),
        ({"k": DIM + 1}, "`k`"),
        ({"k": 2}, "`start`"),
        ({"tol": -1.0}, "`tol`"),
        ({"max_iter": 0}, "`max_iter`"),
        ({"max_basis": 2}, "`max_basis`"),
    ],
)
def test_arguments_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lanczos_top_eigs(lambda v: v, kwargs.pop("start", start(1)), **kwargs)


def test_dependent_start_block_and_nan_products_are_errors():
    with pytest.raises(ValueError, match="linearly independent"):
        lanczos_top_eigs(lambda v: v, torch.ones(2, DIM, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="finite"):
        lanczos_top_eigs(lambda v: v * float("nan"), start(1), 1)


def test_quadrature_is_exact_for_polynomials_below_twice_the_steps():
    """Σ_j w_j θ_j^m = vᵀ A^m v / ‖v‖² for m < 2·n_steps (Golub & Meurant), for each probe."""
    a = matrix(spectrum("indefinite")) / 4
    probes = torch.randn(3, DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    n_steps = 6
    nodes, weights = lanczos_quadrature(lambda v: a @ v, probes, n_steps)
    assert nodes.shape == weights.shape == (3, n_steps)
    torch.testing.assert_close(weights.sum(1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-13)
    for m in range(2 * n_steps):
        exact = torch.einsum("pi,ij,pj->p", probes, torch.linalg.matrix_power(a, m), probes) / (probes**2).sum(1)
        torch.testing.assert_close((weights * nodes**m).sum(1), exact, rtol=1e-9, atol=1e-12)
    # one step past the exact degree the quadrature is only an approximation
    exact = torch.einsum("pi,ij,pj->p", probes, torch.linalg.matrix_power(a, 2 * n_steps), probes) / (probes**2).sum(1)
    assert not torch.allclose((weights * nodes ** (2 * n_steps)).sum(1), exact, rtol=1e-6)


def test_quadrature_stops_when_the_krylov_space_closes():
    a = torch.diag(torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0], dtype=torch.float64))  # 3 distinct eigenvalues
    nodes, weights = lanczos_quadrature(lambda v: a @ v, torch.ones(1, 5, dtype=torch.float64), 10)
    torch.testing.assert_close(nodes[0, :3], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(weights[0], torch.tensor([0.4, 0.4, 0.2] + [0.0] * 7, dtype=torch.float64))
