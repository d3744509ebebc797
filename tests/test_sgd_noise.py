"""Minibatch-gradient noise against brute force: every disjoint batch, and every B-subset of a tiny set."""

import itertools
from types import SimpleNamespace

import pytest
import torch

from callbacks.sgd_noise import GradientNoise, gradient_noise_trace
from datamodules.synthetic import GaussianMixture
from tests.diag_cases import CASES

pytestmark = pytest.mark.usefixtures("one_thread")


def grad(net, loss_fn, x, y) -> torch.Tensor:
    params = [p for p in net.parameters() if p.requires_grad]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_fn(net(x), y), params)])


def test_equals_the_mean_over_the_disjoint_batches_of_the_permutation():
    net, loss_fn, x, y = CASES["mlp"]()  # 12 samples, float64
    order = torch.randperm(12, generator=torch.Generator().manual_seed(5))
    g = grad(net, loss_fn, x, y)
    sq = [float(((grad(net, loss_fn, x[i], y[i]) - g) ** 2).sum()) for i in order.split(3)]
    assert gradient_noise_trace(net, loss_fn, x, y, 3, generator=torch.Generator().manual_seed(5)) == pytest.approx(sum(sq) / 4, rel=1e-10)
    assert gradient_noise_trace(net, loss_fn, x, y, 3, 2, torch.Generator().manual_seed(5)) == pytest.approx(sum(sq[:2]) / 2, rel=1e-10)
    assert gradient_noise_trace(net, loss_fn, x[:11], y[:11], 3, 99) > 0  # remainder dropped, K clipped to 3


def test_is_unbiased_for_the_trace_over_every_minibatch():
    net, loss_fn, x, y = CASES["mlp"]()
    n, b = 12, 3
    g = grad(net, loss_fn, x, y)
    exact = torch.tensor(
        [float(((grad(net, loss_fn, x[list(s)], y[list(s)]) - g) ** 2).sum()) for s in itertools.combinations(range(n), b)],
        dtype=torch.float64,
    ).mean()  # all 220 minibatches
    per_sample = torch.stack([grad(net, loss_fn, x[i : i + 1], y[i : i + 1]) for i in range(n)])
    closed = (n - b) / (b * (n - 1)) * ((per_sample - g) ** 2).sum(1).mean()
    assert float(exact) == pytest.approx(float(closed), rel=1e-10)
    estimates = torch.tensor(
        [gradient_noise_trace(net, loss_fn, x, y, b, generator=torch.Generator().manual_seed(s)) for s in range(150)], dtype=torch.float64
    )
    # 4 standard errors; a with-replacement or 1/(K-1) estimator would be off by 20-33 %
    assert abs(float(estimates.mean() - exact)) < 4 * float(estimates.std()) / 150**0.5
    assert abs(float(estimates.mean() / exact) - 1) < 0.1


def test_is_zero_at_full_batch():
    net, loss_fn, x, y = CASES["cnn"]()
    assert gradient_noise_trace(net, loss_fn, x, y, len(x)) == 0.0


def test_callback_leaves_weights_modes_grads_buffers_and_rng_unchanged():
    net, loss_fn, x, y = CASES["resnet"]()
    net.eval()
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.5)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    values = GradientNoise(n_batches=3).measure(net, loss_fn, x, y, lr=0.2, batch_size=2, n_train=len(x))
    assert values["sgd/noise_trace"] > 0 and values["sgd/temperature"] == pytest.approx(0.1)
    assert values["diag/sgd_noise_seconds"] >= 0
    assert not any(m.training for m in net.modules())
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert GradientNoise().measure(net, loss_fn, x, y, 0.2, len(x), len(x))["sgd/noise_trace"] == 0.0


def test_bad_arguments_name_the_argument():
    net, loss_fn, x, y = CASES["mlp"]()
    with pytest.raises(ValueError, match="`batch_size` to be an integer in \\[1, 12\\]"):
        gradient_noise_trace(net, loss_fn, x, y, 13)
    with pytest.raises(ValueError, match="`n_batches`"):
        GradientNoise(n_batches=0)
    trainer = SimpleNamespace(datamodule=GaussianMixture(n_train=64, batch_size=32), world_size=1)
    assert GradientNoise().batch_size(trainer) == (32, 64)
    with pytest.raises(ValueError, match="`probe_size` to be null or larger than the batch size 32 but got 16"):
        GradientNoise(probe_size=16).batch_size(trainer)
    trainer.datamodule = GaussianMixture(n_train=64, batch_size=None)
    assert GradientNoise(probe_size=16).batch_size(trainer) == (64, 64)  # full batch: the noise is 0
