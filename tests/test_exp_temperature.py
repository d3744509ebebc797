"""SGD's effective temperature (Mignacco & Urbani 2022, arXiv:2112.10852): ``sgd/fdt_temperature`` against
closed forms and a brute-force SGD simulation, the effective_temperature experiment at CI size, and the claim
figures of overparam/claim_figures/temperature.py."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from experiment_runner import run_config
from torch import nn

from callbacks.sgd_noise import GradientNoise, fdt_temperature, gradient_noise_trace
from lightning_modules.checks import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fdt_temperature_is_lr_times_the_noise_trace_over_twice_the_parameter_count():
    assert fdt_temperature(0.5, lr=0.1, n_params=10) == pytest.approx(0.0025, rel=1e-15)
    assert fdt_temperature(0.0, lr=0.1, n_params=3) == 0.0
    assert math.isnan(fdt_temperature(float("nan"), lr=0.1, n_params=3))
    with pytest.raises(ConfigError, match="n_params"):
        fdt_temperature(0.5, lr=0.1, n_params=0)


def stationary_covariance(h: torch.Tensor, sigma: torch.Tensor, lr: float) -> torch.Tensor:
    """S of θ_{k+1} = (I − ηH)θ_k + η ξ_k, Cov ξ = Σ, H = diag(h): S_ij = η² Σ_ij / (1 − a_i a_j), a = 1 − ηh."""
    a = 1 - lr * h
    return lr**2 * sigma / (1 - a[:, None] * a[None, :])


def test_equals_the_fdt_ratio_and_the_equipartition_temperature_of_sgd_on_a_quadratic():
    """Closed form: SGD on ½θᵀHθ with additive gradient noise of covariance Σ (anisotropic, correlated). At
    stationarity C(k) = Tr(AᵏS)/P and the integrated response to a field h switched on at lag 0 is
    χ(k) = η Σ_{j<k} Tr(Aʲ)/P, so the FDT ratio (C(0) − C(1))/χ(1) = Tr(HS)/P, the equipartition temperature.
    It equals η tr Σ / (2P) up to a relative η Tr(HΣ)/(2 tr Σ) ≤ η h_max / 2, which vanishes with η."""
    gen = torch.Generator().manual_seed(0)
    h = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    root = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    sigma = root @ root.T
    errors = []
    for lr in (0.04, 0.004):
        s = stationary_covariance(h, sigma, lr)
        a = torch.diag(1 - lr * h)
        torch.testing.assert_close(a @ s @ a + lr**2 * sigma, s, rtol=1e-12, atol=0)  # the fixed point
        if lr == 0.04:
            brute = torch.zeros_like(s)
            for _ in range(2000):  # S ↦ ASA + η²Σ from 0 converges to it (contraction ≤ 0.98² per step)
                brute = a @ brute @ a + lr**2 * sigma
            torch.testing.assert_close(brute, s, rtol=1e-10, atol=0)
        fdt_ratio = (torch.trace(s) - torch.trace(a @ s)) / 4 / lr
        equipartition = torch.trace(torch.diag(h) @ s) / 4
        torch.testing.assert_close(fdt_ratio, equipartition, rtol=1e-12, atol=0)
        estimate = fdt_temperature(float(torch.trace(sigma)), lr, 4)
        errors.append(abs(float(equipartition) / estimate - 1))
        assert errors[-1] <= lr * float(h.max()) / 2, (lr, errors[-1])
    assert errors[1] < errors[0] / 5  # first order in η: 10x smaller η, ~10x smaller error


def test_matches_the_equipartition_temperature_of_minibatch_sgd_on_linear_regression():
    """Brute force with the real, state-dependent minibatch noise: chains of SGD (B = 4 of n = 32, drawn
    without replacement, η = 0.05) on least squares with noisy labels, run to stationarity around the minimizer
    θ*. ⟨(θ − θ*)ᵀH(θ − θ*)⟩/P over 1000 chains and 200 steps is the equipartition (= FDT) temperature; the logged
    estimate η tr Σ_B(θ*)/(2P) uses gradient_noise_trace at θ* (mean over 100 draws of its batches). They
    differ at O(η) (here ≈ 3 %; the chains' statistical error is ≈ 1 %)."""
    n, d, b, lr = 32, 4, 4, 0.05
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(d, generator=gen, dtype=torch.float64) + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    hessian = x.T @ x / n  # of the loss ½ mean (xᵀθ − y)²
    optimum = torch.linalg.solve(x.T @ x, x.T @ y)
    net = nn.Linear(d, 1, bias=False).double()
    net.weight.data.copy_(optimum[None])
    loss_fn = lambda out, t: 0.5 * ((out.squeeze(-1) - t) ** 2).mean()  # noqa: E731
    trace = sum(gradient_noise_trace(net, loss_fn, x, y, b, generator=torch.Generator().manual_seed(s)) for s in range(100)) / 100
    estimate = fdt_temperature(trace, lr, d)

    chains = optimum.repeat(1000, 1)  # (M, d)
    energies = []
    for step in range(400):
        idx = torch.rand(len(chains), n, generator=gen).argsort(1)[:, :b]  # (M, B): one batch per chain
        residual = (x[idx] @ chains[:, :, None]).squeeze(-1) - y[idx]  # (M, B)
        chains = chains - lr * (x[idx] * residual[:, :, None]).mean(1)
        if step >= 200:  # relaxation time 1/(η λ_min(H)) ≈ 30 steps
            delta = chains - optimum
            energies.append(float(torch.einsum("mi,ij,mj->m", delta, hessian, delta).mean()) / d)
    equipartition = sum(energies) / len(energies)
    assert equipartition == pytest.approx(estimate, rel=0.08), (equipartition, estimate)


def test_gradient_noise_logs_the_fdt_temperature_of_its_noise_trace():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()  # 26 parameters
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    loss_fn = nn.MSELoss()
    values = GradientNoise(n_batches=3).measure(net, loss_fn, x, y, lr=0.2, batch_size=4, n_train=20)
    assert values["sgd/noise_trace"] > 0
    assert values["sgd/fdt_temperature"] == pytest.approx(0.2 * values["sgd/noise_trace"] / (2 * 26), rel=1e-12)
    assert GradientNoise().measure(net, loss_fn, x, y, 0.2, 20, 20)["sgd/fdt_temperature"] == 0.0  # full batch


def test_fdt_temperature_and_replica_distance_both_grow_with_eta_over_b(tmp_path):
    """configs/ci/effective_temperature.yaml at width 8 (282 parameters for 512 samples: the flipped labels are
    not fitted, train accuracy 0.84-0.90) and 256 (8.7 k parameters, train accuracy 0.89-0.96 after 20 epochs),
    at η = 0.1 and 0.4 (B = 32). Seeds 0-4, hot/cold: FDT temperature 6.5-9.7x at width 8 and 3.6-4.4x at width
    256 (there tr Σ_B barely moves, so T_FDT follows η), replica distance 8-62x and 44-246x. Seeds 0 and 1 at
    width 8 and seed 0 at width 256 here; bounds well below the smallest ratios seen."""
    config = "configs/ci/effective_temperature.yaml"
    for seed, width in ((0, 8), (1, 8), (0, 256)):
        seeds = ["--model.seed", str(seed), "--data.seed", str(seed), "--seed_everything", str(seed)]
        runs = {
            lr: run_config(config, tmp_path / f"s{seed}_w{width}_lr{lr}", "--model.net.width", str(width), "--model.lr", str(lr), *seeds)[
                "metrics"
            ]
            for lr in (0.1, 0.4)
        }
        cold, hot = runs[0.1], runs[0.4]
        assert hot["sgd/temperature"] == pytest.approx(4 * cold["sgd/temperature"])
        assert cold["sgd/fdt_temperature"] > 0 and cold["replica/distance"] > 0, (seed, width, cold)
        assert hot["sgd/fdt_temperature"] > 2 * cold["sgd/fdt_temperature"], (seed, width, cold, hot)
        assert hot["replica/distance"] > 3 * cold["replica/distance"], (seed, width, cold, hot)


def write_csv(path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_the_claim_figures_draw_from_a_sweep_csv(tmp_path):
    from overparam.report import sweep_figures

    rows = [
        {
            "config": "configs/ci/effective_temperature.yaml",
            "config_hash": "a",
            "model.net.width": w,
            "model.lr": lr,
            "seed": s,
            "status": "completed",
            "sgd/temperature": lr / 32,
            "sgd/fdt_temperature": lr * 1e-4 * (1 + s),
            "replica/distance": lr**2 * 1e-3,
        }
        for w in (8, 256)
        for lr in (0.1, 0.4)
        for s in (0, 1)
    ]
    write_csv(tmp_path / "effective.csv", rows)
    paths = sweep_figures(tmp_path / "effective.csv", tmp_path)
    assert tmp_path / "effective_temperature.png" in paths
    rows = [
        {
            "config": "configs/experiments/sgd_temperature.yaml",
            "config_hash": "b",
            "model.lr": lr,
            "data.batch_size": bs,
            "seed": 0,
            "status": "completed",
            "sgd/temperature": lr / bs,
            "replica/distance": (lr / bs) ** 2,
        }
        for lr in (0.1, 0.2)
        for bs in (16, 64)
    ]
    write_csv(tmp_path / "sgd.csv", rows)
    assert tmp_path / "sgd_temperature.png" in sweep_figures(tmp_path / "sgd.csv", tmp_path)
