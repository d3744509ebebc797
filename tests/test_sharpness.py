"""Hessian eigenvalues and trace against the dense float64 Hessian (torch.autograd.functional.hessian)."""

import pytest
import torch

from callbacks.sharpness import HessianSharpness, hessian_power_iteration, hessian_top_eigs, hessian_trace
from tests.diag_cases import CASES, dense_hessian

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(params=sorted(CASES))
def case(request):
    return CASES[request.param]()


def test_top_eigs_match_dense_hessian(case):
    net, loss_fn, x, y = case
    dense = torch.linalg.eigvalsh(dense_hessian(net, loss_fn, x, y)).flip(0)
    eigs, n_hvp = hessian_top_eigs(net, loss_fn, x, y, k=3, tol=1e-10)
    assert eigs.shape == (3,) and n_hvp > 0
    assert torch.all(eigs[:-1] >= eigs[1:])
    torch.testing.assert_close(eigs, dense[:3], rtol=1e-4, atol=0)  # stated: 1e-4 relative
    lam, _ = hessian_top_eigs(net, loss_fn, x, y)  # default k=1, tol=1e-3
    assert abs(float(lam[0]) - float(dense[0])) <= 1e-3 * abs(float(dense[0]))


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
    ],
)
def test_callback_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HessianSharpness(**kwargs)


def test_k_must_be_below_parameter_count():
    net, loss_fn, x, y = CASES["mlp"]()
    with pytest.raises(ValueError, match="`k`"):
        hessian_top_eigs(net, loss_fn, x, y, k=66)


def test_callback_measure_logs_names():
    net, loss_fn, x, y = CASES["mlp"]()
    values = HessianSharpness(k=2, trace=True).measure(net, loss_fn, x, y, lr=0.5)
    assert set(values) == {"sharpness/lambda_max", "sharpness/lambda_2", "sharpness/two_over_lr", "sharpness/trace", "diag/sharpness_seconds"}
    assert values["sharpness/two_over_lr"] == 4.0
