"""Hessian eigenvalues and trace against the dense float64 Hessian (torch.autograd.functional.hessian)."""

import copy
import math
from pathlib import Path
from pydoc import locate

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from quiet_trainer import quiet_trainer

from callbacks.net_state import probe_indices
from callbacks.sharpness import (
    HessianSharpness,
    hessian_layer_top_eigs,
    hessian_power_iteration,
    hessian_spectral_density,
    hessian_top_eigs,
    hessian_trace,
    layer_name,
    optimizer_stability_threshold,
    stability_threshold,
)
from datamodules.synthetic import GaussianMixture
from lightning_modules.learning_rules import apply_rule
from lightning_modules.module import SupervisedModule
from lightning_modules.nets.mlp import TwoLayerMLP
from lightning_modules.optimizers import build_optimizer
from overparam import report
from tests.diag_cases import CASES, dense_hessian

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=sorted(CASES))
def case(request):
    return CASES[request.param]()


@pytest.mark.parametrize("method", ["lanczos", "arpack"])
def test_top_eigs_match_dense_hessian(case, method):
    net, loss_fn, x, y = case
    dense = torch.linalg.eigvalsh(dense_hessian(net, loss_fn, x, y)).flip(0)
    eigs, n_hvp = hessian_top_eigs(net, loss_fn, x, y, k=3, tol=1e-10, method=method)
    assert eigs.shape == (3,) and eigs.dtype == torch.float64 and n_hvp > 0
    assert torch.all(eigs[:-1] >= eigs[1:])
    torch.testing.assert_close(eigs, dense[:3], rtol=1e-8, atol=0)  # stated: 1e-8 relative at tol 1e-10
    lam, _ = hessian_top_eigs(net, loss_fn, x, y, method=method)  # default k=1, tol=1e-3
    assert abs(float(lam[0]) - float(dense[0])) <= 1e-3 * abs(float(dense[0]))


def test_lanczos_default_needs_fewer_products_than_arpack(case):
    net, loss_fn, x, y = case
    assert hessian_top_eigs(net, loss_fn, x, y)[1] < hessian_top_eigs(net, loss_fn, x, y, method="arpack")[1]


def test_k_up_to_the_parameter_count_and_a_one_line_error_above():
    net, loss_fn, x, y = CASES["mlp"]()  # 66 parameters
    dense = torch.linalg.eigvalsh(dense_hessian(net, loss_fn, x, y)).flip(0)
    eigs, n_hvp = hessian_top_eigs(net, loss_fn, x, y, k=66, tol=1e-10)
    torch.testing.assert_close(eigs, dense, rtol=0, atol=1e-12)  # the whole spectrum, from one block of 66 products
    assert n_hvp == 66
    with pytest.raises(
        ValueError, match=r"^Expected argument `k` to be an integer in \[1, 66\] \(the number of trainable parameters\) but got 67$"
    ):
        hessian_top_eigs(net, loss_fn, x, y, k=67)
    with pytest.raises(ValueError, match=r"\[1, 65\].*ARPACK"):
        hessian_top_eigs(net, loss_fn, x, y, k=66, method="arpack")
    with pytest.raises(ValueError, match="power iteration finds one eigenvalue"):
        hessian_top_eigs(net, loss_fn, x, y, k=2, method="power")
    with pytest.raises(ValueError, match="`method`"):
        hessian_top_eigs(net, loss_fn, x, y, method="eigh")


def test_float32_net_matches_the_float64_dense_hessian():
    net64, loss_fn, x, y = CASES["mlp"]()
    dense = torch.linalg.eigvalsh(dense_hessian(net64, loss_fn, x, y)).flip(0)
    net32 = copy.deepcopy(net64).float()
    for method in ("lanczos", "arpack"):
        eigs, _ = hessian_top_eigs(net32, loss_fn, x.float(), y.float(), k=2, tol=1e-5, method=method)
        assert eigs.dtype == torch.float64
        torch.testing.assert_close(eigs, dense[:2], rtol=1e-5, atol=0)  # float32 products: about 1e-7 relative


def negative_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -((output - target) ** 2).mean()


def inner_product(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output * target).mean()


def test_negative_definite_hessian_gives_the_largest_algebraic_eigenvalues():
    """Loss −MSE on a linear net: H = −(2/n) XᵀX ⊗ I, every eigenvalue < 0; the top one is the smallest in magnitude."""
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 2).double()
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64)
    loss_fn = negative_mse
    dense = torch.linalg.eigvalsh(dense_hessian(net, loss_fn, x, y)).flip(0)
    assert dense[0] < 0
    for method in ("lanczos", "arpack"):
        torch.testing.assert_close(hessian_top_eigs(net, loss_fn, x, y, k=3, tol=1e-10, method=method)[0], dense[:3], rtol=1e-8, atol=0)


def test_zero_hessian_gives_zeros_in_k_products():
    """A loss linear in the parameters (⟨net(x), y⟩ for a linear net) has H = 0."""
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 2).double()
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64)
    loss_fn = inner_product
    eigs, n_hvp = hessian_top_eigs(net, loss_fn, x, y, k=3)
    assert eigs.tolist() == [0.0, 0.0, 0.0] and n_hvp == 3
    assert set(hessian_layer_top_eigs(net, loss_fn, x, y).values()) == {0.0}
    grid, density = hessian_spectral_density(net, loss_fn, x, y, n_steps=5)
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0) and float(grid[density.argmax()]) == pytest.approx(0.0, abs=1e-4)


def dense_layer_blocks(net, loss_fn, x, y) -> dict[str, float]:
    """Top eigenvalue of each layer's diagonal block of the dense Hessian."""
    hessian = dense_hessian(net, loss_fn, x, y)
    blocks, start = {}, 0
    for name, p in net.named_parameters():
        if p.requires_grad:
            blocks.setdefault(layer_name(name), []).extend(range(start, start + p.numel()))
            start += p.numel()
    return {layer: float(torch.linalg.eigvalsh(hessian[idx][:, idx])[-1]) for layer, idx in blocks.items()}


def test_per_layer_values_are_the_top_eigenvalues_of_the_dense_diagonal_blocks(case):
    net, loss_fn, x, y = case
    expected = dense_layer_blocks(net, loss_fn, x, y)
    got = hessian_layer_top_eigs(net, loss_fn, x, y, tol=1e-10)
    assert list(got) == list(expected) and len(got) >= 2
    for layer in expected:
        assert got[layer] == pytest.approx(expected[layer], rel=1e-8), layer


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_converted_net_gives_the_plain_nets_eigenvalues_and_blocks(rule):
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    converted = apply_rule(copy.deepcopy(plain), rule)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    converted(x.clone().requires_grad_()).sum().backward()  # dfa draws its B at the first pass with gradients
    loss_fn = CASES["mlp"]()[1]
    dense = torch.linalg.eigvalsh(dense_hessian(plain, loss_fn, x, y)).flip(0)
    torch.testing.assert_close(hessian_top_eigs(converted, loss_fn, x, y, k=2, tol=1e-10)[0], dense[:2], rtol=1e-8, atol=0)
    expected = dense_layer_blocks(plain, loss_fn, x, y)
    assert hessian_layer_top_eigs(converted, loss_fn, x, y, tol=1e-10) == pytest.approx(expected, rel=1e-8)


def test_density_integrates_to_one_and_its_mean_is_hutchinsons_estimate_with_the_same_probes():
    net, loss_fn, x, y = CASES["cnn"]()
    n = sum(p.numel() for p in net.parameters())
    grid, density = hessian_spectral_density(net, loss_fn, x, y, n_probes=7, n_steps=15)
    assert grid.shape == density.shape == (1000,) and torch.all(density >= 0)
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-12)
    # the same 7 Rademacher probes (seed 0): quadrature is exact for degree 1, so the mean is vᵀHv/P averaged
    assert float(torch.trapezoid(grid * density, grid)) == pytest.approx(hessian_trace(net, loss_fn, x, y, n_probes=7) / n, rel=1e-6)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_density_moments_match_the_dense_hessian_within_the_stated_error(name):
    """Mean → tr(H)/P, second moment − σ² → tr(H²)/P, each within 4 of the standard deviations the docstring states."""
    net, loss_fn, x, y = CASES[name]()
    hessian = dense_hessian(net, loss_fn, x, y)
    n, n_probes, sigma = hessian.shape[0], 200, 0.01
    grid, density = hessian_spectral_density(net, loss_fn, x, y, n_probes=n_probes, n_steps=10, sigma=sigma)
    for m, a, shift in ((1, hessian, 0.0), (2, hessian @ hessian, sigma**2)):
        moment = float(torch.trapezoid(grid**m * density, grid)) - shift
        std = math.sqrt(2 * (float((a**2).sum()) - float((a.diagonal() ** 2).sum())) / n_probes) / n
        assert abs(moment - float(torch.trace(a)) / n) <= 4 * std, (m, moment, float(torch.trace(a)) / n, std)


# Probes per case so that 5% is >= 3.5 standard deviations √(2(‖H‖_F² − Σ H_jj²)/N) of the estimate.
@pytest.mark.parametrize("name, n_probes", [("mlp", 3000), ("cnn", 4000), ("resnet", 300)])
def test_trace_matches_dense_hessian(name, n_probes):
    net, loss_fn, x, y = CASES[name]()
    exact = float(torch.trace(dense_hessian(net, loss_fn, x, y)))
    assert hessian_trace(net, loss_fn, x, y, n_probes=n_probes) == pytest.approx(exact, rel=0.05)


def test_power_iteration_finds_top_magnitude_eigenvalue():
    net, loss_fn, x, y = CASES["mlp"]()
    dense = torch.linalg.eigvalsh(dense_hessian(net, loss_fn, x, y))
    top = float(dense[dense.abs().argmax()])
    eig, n_hvp = hessian_power_iteration(net, loss_fn, x, y, tol=1e-9)
    assert eig == pytest.approx(top, rel=1e-4) and n_hvp > 1


def test_state_is_restored_batchnorm_mode_grads_rng():
    net, loss_fn, x, y = CASES["resnet"]()
    net.eval()
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.5)
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    rng = torch.get_rng_state()
    hessian_top_eigs(net, loss_fn, x, y, k=2)
    hessian_trace(net, loss_fn, x, y, n_probes=3)
    assert not any(m.training for m in net.modules())
    assert all(torch.equal(b, buffers[n]) for n, b in net.named_buffers())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_frozen_parameters_are_left_out():
    net, loss_fn, x, y = CASES["mlp"]()
    net.fc1.requires_grad_(False)
    dense = torch.linalg.eigvalsh(dense_hessian(net, loss_fn, x, y))
    assert dense.numel() == net.fc2.weight.numel() + net.fc2.bias.numel()
    eigs, _ = hessian_top_eigs(net, loss_fn, x, y, k=2, tol=1e-10)
    torch.testing.assert_close(eigs, dense.flip(0)[:2], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"probe_size": -3}, "probe_size"),
        ({"k": 0}, "`k`"),
        ({"tol": -1.0}, "tol"),
        ({"trace": "yes"}, "trace"),
        ({"method": "eigh"}, "`method`"),
        ({"method": "power", "k": 2}, "`k`"),
        ({"per_layer": 1}, "per_layer"),
        ({"density": "no"}, "density"),
    ],
)
def test_callback_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HessianSharpness(**kwargs)


def test_callback_measure_logs_names():
    net, loss_fn, x, y = CASES["mlp"]()
    values = HessianSharpness(k=2, trace=True).measure(net, loss_fn, x, y, lr=0.5)
    assert set(values) == {
        "sharpness/lambda_max",
        "sharpness/lambda_2",
        "sharpness/two_over_lr",
        "sharpness/trace",
        "diag/sharpness_seconds",
    }
    assert values["sharpness/two_over_lr"] == 4.0
    values = HessianSharpness(per_layer=True).measure(net, loss_fn, x, y, lr=0.5)
    assert {"sharpness/lambda_max/fc1", "sharpness/lambda_max/fc2"} <= set(values)
    assert values["sharpness/lambda_max"] >= max(values["sharpness/lambda_max/fc1"], values["sharpness/lambda_max/fc2"]) * (1 - 1e-3)


def config_problem(config: str):
    """The model, prepared data and HessianSharpness arguments a config names (as the CLI builds them)."""
    cfg = yaml.safe_load((ROOT / config).read_text())
    data = locate(cfg["data"]["class_path"])(**cfg["data"].get("init_args", {}))
    data.prepare_splits()
    model_args = dict(cfg["model"]["init_args"])
    net_cfg = model_args.pop("net")
    net = locate(net_cfg["class_path"])(input_dim=data.input_dim, output_dim=data.output_dim, **net_cfg.get("init_args", {}))
    (args,) = [c.get("init_args", {}) for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("HessianSharpness")]
    return SupervisedModule(net, **model_args), data, args


@pytest.mark.parametrize("config", ["configs/default.yaml", "configs/ci/edge_of_stability.yaml", "configs/ci/flat_minima.yaml"])
def test_logged_values_unchanged_within_tol_on_the_experiments(config):
    """The Lanczos default logs what ARPACK logged, within the callback's tol, at the initialization and after 30 GD steps."""
    model, data, args = config_problem(config)
    lanczos, arpack = HessianSharpness(**args), HessianSharpness(**args, method="arpack")
    assert lanczos.method == "lanczos"
    idx = probe_indices(len(data.train.x), lanczos.probe_size, lanczos.seed)
    x, y = data.train.x[idx], data.train.y[idx]
    optimizer = model.configure_optimizers_now()
    for _ in range(2):
        new = lanczos.measure(model.net, model.loss_fn, x, y, lr=0.1)
        old = arpack.measure(model.net, model.loss_fn, x, y, lr=0.1)
        assert set(new) == set(old)
        for tag in (t for t in old if not t.startswith("diag/")):
            assert new[tag] == pytest.approx(old[tag], rel=lanczos.tol), tag
        for _ in range(30):
            optimizer.zero_grad()
            model.loss_fn(model.net(data.train.x), data.train.y).backward()
            optimizer.step()


def test_callback_logs_per_layer_scalars_and_the_density_histogram(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = SupervisedModule(TwoLayerMLP(4, 8), lr=0.2)
    data = GaussianMixture(dim=4, n_train=32, n_test=8, batch_size=None, seed=0)
    logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="", version=0)
    trainer = quiet_trainer(
        max_epochs=2, logger=logger, limit_val_batches=0, callbacks=[HessianSharpness(probe_size=16, per_layer=True, density=True)]
    )
    trainer.fit(model, datamodule=data)
    events = EventAccumulator(logger.log_dir, size_guidance={"histograms": 0, "scalars": 0}).Reload()
    assert {"sharpness/lambda_max/fc1", "sharpness/lambda_max/fc2"} <= set(events.Tags()["scalars"])
    histograms = events.Histograms("sharpness/density")
    assert [h.step for h in histograms] == [s.step for s in events.Scalars("sharpness/lambda_max")]  # with every measurement
    last = histograms[-1].histogram_value
    assert sum(last.bucket) == pytest.approx(1.0, abs=1e-6) and len(last.bucket) == 1000  # masses: density × grid step
    densities = report.read_densities(Path(logger.log_dir))
    assert sorted(densities) == [h.step for h in histograms]
    grid, density = densities[histograms[-1].step]
    assert float(np.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-6)
    assert report.main([str(tmp_path), "--out", str(tmp_path / "figures")]) == 0
    (png,) = (tmp_path / "figures").glob("*_density.png")
    assert png.stat().st_size > 10_000


# ---- stability threshold: closed form against the spectral radius of torch's own SGD step --------
def sgd_step_matrix(optimizer: torch.optim.SGD, w: torch.Tensor, lam: float) -> torch.Tensor:
    """M with (w, b)_{t+1} = M (w, b)_t for one step of ``optimizer`` on L = ½ λ w² (b: momentum buffer),
    read off by stepping torch's SGD from the basis states; the 1×1 map of w without momentum."""
    momentum = optimizer.param_groups[0]["momentum"]
    basis = ((1.0, 0.0), (0.0, 1.0)) if momentum > 0 else ((1.0, 0.0),)
    columns = []
    for w0, b0 in basis:
        with torch.no_grad():
            w.fill_(w0)
        optimizer.state.clear()
        if momentum > 0:
            optimizer.state[w]["momentum_buffer"] = torch.full_like(w, b0)
        w.grad = None
        (0.5 * lam * w**2).sum().backward()
        optimizer.step()
        columns.append([float(w.detach())] + ([float(optimizer.state[w]["momentum_buffer"])] if momentum > 0 else []))
    return torch.tensor(columns, dtype=torch.float64).T


def spectral_radius(m: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(m).abs().max())


@pytest.mark.parametrize(
    "settings",
    [
        {"lr": 0.5},
        {"lr": 0.5, "momentum": 0.9},
        {"lr": 0.2, "momentum": 0.5, "weight_decay": 0.3},
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
        {"lr": 0.3, "momentum": 0.6, "nesterov": True, "weight_decay": 0.1},
        {"lr": 0.25, "momentum": 0.8, "dampening": 0.4},
    ],
)
def test_stability_threshold_is_where_torch_sgd_on_a_quadratic_turns_unstable(settings):
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([w], **settings)
    threshold = optimizer_stability_threshold(optimizer)
    for factor in (0.05, 0.5, 0.9, 1 - 1e-6):
        assert spectral_radius(sgd_step_matrix(optimizer, w, factor * threshold)) < 1, factor
    for factor in (1 + 1e-6, 1.1, 2.0):
        assert spectral_radius(sgd_step_matrix(optimizer, w, factor * threshold)) > 1, factor
    if "dampening" not in settings:
        assert threshold == stability_threshold("sgd", **settings)
    beta, lr = settings.get("momentum", 0.0), settings["lr"]
    bound = (2 + 2 * beta) / (1 + 2 * beta) if settings.get("nesterov") else 2 + 2 * beta
    assert threshold == pytest.approx(bound / (lr * (1 - settings.get("dampening", 0.0))) - settings.get("weight_decay", 0.0), rel=1e-12)


def test_the_default_run_has_threshold_2_plus_2_beta_over_lr_not_2_over_lr():
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "default.yaml").read_text())
    model_args = dict(config["model"]["init_args"])
    net_args = model_args.pop("net")["init_args"]
    net = TwoLayerMLP(input_dim=config["data"]["init_args"]["dim"], **net_args)
    optimizer = SupervisedModule(net, **model_args).configure_optimizers_now()
    assert optimizer_stability_threshold(optimizer) == pytest.approx((2 + 2 * 0.9) / 0.5, rel=1e-12)  # 7.6, where 2/η = 4


def test_threshold_is_absent_where_none_is_defined():
    params = [torch.zeros(2, requires_grad=True)]
    for name in ("adam", "sam", "entropy_sgd"):
        assert optimizer_stability_threshold(build_optimizer(name, params, lr=0.1)) is None
        assert stability_threshold(name, lr=0.1, momentum=0.9) is None
    layer_lr = SupervisedModule(TwoLayerMLP(3, 4), layer_lr={"fc2": 0.5}).configure_optimizers_now()
    assert optimizer_stability_threshold(layer_lr) is None  # two step sizes: no common bound on λ_max
    assert stability_threshold("sgd", lr=0.0) == math.inf
    with pytest.raises(ValueError, match="Expected argument `momentum` to be a finite number >= 0 and < 1 but got 1.0"):
        stability_threshold("sgd", lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="`optimizer`"):
        stability_threshold("lbfgs", lr=0.1)


@pytest.mark.parametrize("optimizer, expected", [("sgd", (2 + 2 * 0.5) / 0.2), ("adam", None)])
def test_callback_logs_the_threshold_only_where_defined(optimizer, expected):
    model = SupervisedModule(TwoLayerMLP(4, 8), optimizer=optimizer, lr=0.2, momentum=0.5)
    data = GaussianMixture(dim=4, n_train=32, n_test=8, batch_size=None, seed=0)
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[HessianSharpness(probe_size=16)])
    trainer.fit(model, datamodule=data)
    logged = trainer.callback_metrics
    assert float(logged["sharpness/two_over_lr"]) == pytest.approx(2 / 0.2)
    if expected is None:
        assert "sharpness/stability_threshold" not in logged
    else:
        assert float(logged["sharpness/stability_threshold"]) == pytest.approx(expected)
