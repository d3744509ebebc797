"""SAM and Entropy-SGD against hand-computed steps on a quadratic, SAM inside Lightning against a plain loop."""

import copy
import math

import pytest
import torch
from quiet_trainer import quiet_trainer

from callbacks.flatness import Flatness, perturbed_loss_increase
from callbacks.sgd_noise import GradientNoise, gradient_noise_trace
from datamodules.synthetic import GaussianMixture
from datamodules.tensor import EpochPermutation
from lightning_modules import losses
from lightning_modules.checks import ConfigError
from lightning_modules.module import SupervisedModule
from lightning_modules.nets.mlp import TwoLayerMLP
from lightning_modules.optimizers import SAM, EntropySGD, build_optimizer
from tests.diag_cases import CASES

pytestmark = pytest.mark.usefixtures("one_thread")


def quadratic(seed: int = 0):
    """L(w) = ½ wᵀAw over two parameter tensors a (3,) and b (2, 2), w = (a, vec b) ∈ R⁷, A SPD, float64."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(7, 7, generator=g, dtype=torch.float64)
    A = m @ m.T / 7 + torch.eye(7, dtype=torch.float64)
    a = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(2, 2, generator=g, dtype=torch.float64).requires_grad_()
    calls = []

    def flat():
        return torch.cat([a.reshape(-1), b.reshape(-1)])

    def closure():
        w = flat()
        loss = 0.5 * w @ A @ w
        loss.backward()
        calls.append(float(loss.detach()))
        return loss

    return A, [a, b], flat, closure, calls


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_equals_the_formula_on_a_quadratic(adaptive):
    A, params, flat, closure, calls = quadratic()
    rho, lr, wd = 0.3, 0.1, 0.01
    w = flat().detach().clone()
    g = A @ w
    t = w.abs() if adaptive else torch.ones_like(w)
    eps = rho * t * t * g / torch.linalg.vector_norm(t * g)  # global norm over both tensors
    expected = w - lr * (A @ (w + eps) + wd * w)  # SGD step with the gradient at w + ε, from w
    opt = SAM(params, rho=rho, adaptive=adaptive, lr=lr, weight_decay=wd)
    loss = opt.step(closure)
    assert len(calls) == 2 and float(loss.detach()) == pytest.approx(0.5 * float(w @ A @ w), rel=1e-14)
    torch.testing.assert_close(flat().detach(), expected, rtol=1e-13, atol=1e-13)


def test_sam_with_tiny_rho_is_sgd_with_momentum():
    net, loss_fn, x, y = CASES["mlp"]()
    ref = copy.deepcopy(net)
    sam = build_optimizer("sam", net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3, rho=1e-12)
    sgd = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    for _ in range(5):
        sam.step(lambda: loss_fn(net(x), y).backward())
        sgd.zero_grad()
        loss_fn(ref(x), y).backward()
        sgd.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-10)


def test_sam_checkpoint_keeps_the_momentum_of_the_base_optimizer():
    A, params, flat, closure, _ = quadratic()
    opt = SAM(params, lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.step(closure)
    state, saved = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in params]
    opt.step(closure)
    after = flat().detach().clone()
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
    fresh = SAM(params, lr=0.1, momentum=0.9)
    fresh.load_state_dict(state)
    assert "momentum_buffer" in fresh.base_optimizer.state[params[0]]
    fresh.step(closure)
    torch.testing.assert_close(flat().detach(), after, rtol=0, atol=0)


@pytest.mark.parametrize("noise, momentum", [(0.0, 0.0), (0.05, 0.9)])
def test_entropy_sgd_matches_a_hand_rolled_recursion(noise, momentum):
    A, params, flat, closure, calls = quadratic()
    lr, gamma, L, lr_in, alpha, wd = 0.5, 0.3, 4, 0.1, 0.75, 0.02
    gen_opt, gen_ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    opt = EntropySGD(
        params,
        lr=lr,
        gamma=gamma,
        inner_steps=L,
        inner_lr=lr_in,
        noise=noise,
        alpha=alpha,
        momentum=momentum,
        weight_decay=wd,
        generator=gen_opt,
    )
    x, buf = flat().detach().clone(), None
    shapes = [(3,), (2, 2)]
    for _ in range(3):
        xp, mu = x.clone(), x.clone()
        for _ in range(L):
            step = A @ xp + wd * xp - gamma * (x - xp)
            xi = torch.cat([torch.randn(s, generator=gen_ref, dtype=torch.float64).reshape(-1) for s in shapes])
            xp = xp - lr_in * step + math.sqrt(lr_in) * noise * xi if noise else xp - lr_in * step
            mu = (1 - alpha) * mu + alpha * xp
        d = gamma * (x - mu)
        buf = d if buf is None or momentum == 0 else momentum * buf + d
        x = x - lr * buf
        w0 = flat().detach().clone()
        loss = opt.step(closure)
        assert float(loss.detach()) == pytest.approx(0.5 * float(w0 @ A @ w0), rel=1e-14)
    assert len(calls) == 3 * L
    torch.testing.assert_close(flat().detach(), x, rtol=1e-12, atol=1e-12)


def test_bad_arguments_name_the_argument():
    params = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="Expected argument `rho` to be a finite number > 0 but got -1"):
        build_optimizer("sam", params, lr=0.1, rho=-1)
    with pytest.raises(ValueError, match="`optimizer` to be one of sgd, adam, sam, entropy_sgd but got 'lbfgs'"):
        build_optimizer("lbfgs", params, lr=0.1)
    with pytest.raises(ValueError, match="optimizer 'sgd' to be among \\(none\\) but got 'rho'"):
        build_optimizer("sgd", params, lr=0.1, rho=0.1)
    with pytest.raises(ValueError, match="`inner_steps` to be a positive integer but got 0"):
        build_optimizer("entropy_sgd", params, lr=0.1, inner_steps=0)
    with pytest.raises(ValueError, match="`alpha` to be a finite number > 0 and <= 1 but got 1.5"):
        build_optimizer("entropy_sgd", params, lr=0.1, alpha=1.5)
    with pytest.raises(ValueError, match="`momentum`"):
        build_optimizer("sam", params, lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="`closure`"):
        SAM(params).step()


class CountingSAMModule(SupervisedModule):
    """SupervisedModule(optimizer="sam") that counts its training_step calls (closure evaluations)."""

    def training_step(self, batch, batch_idx):
        self.calls = getattr(self, "calls", 0) + 1
        return super().training_step(batch, batch_idx)


def test_sam_inside_lightning_equals_a_plain_loop_and_calls_the_closure_twice():
    dm = GaussianMixture(dim=8, n_clusters=4, n_train=64, n_test=32, batch_size=16, seed=0)
    model = CountingSAMModule(TwoLayerMLP(8, 16, 1), loss="mse", optimizer="sam", sam_rho=0.1, lr=0.3, momentum=0.5, seed=1)
    net = copy.deepcopy(model.net)
    dm.prepare_splits()
    x, y = dm.train.x, dm.train.y
    loss_before = float(losses.mean_loss("mse", net(x), y).detach())
    trainer = quiet_trainer(max_epochs=3, callbacks=[GradientNoise(n_batches=2), Flatness(n_samples=2)])
    trainer.fit(model, datamodule=dm)
    assert model.calls == 2 * 3 * 4  # two closure calls per step, 4 steps per epoch
    # The diagnostics' last values are their functional cores on the final weights and the whole set
    # (probe_size None), with the batches and noise drawn from their seed 0.
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    final = model.net
    assert logged["sgd/noise_trace"] == pytest.approx(
        gradient_noise_trace(final, model.loss_fn, x, y, 16, 2, torch.Generator().manual_seed(0)), rel=1e-5
    )
    assert logged["flatness/perturbed_loss_increase"] == pytest.approx(
        perturbed_loss_increase(final, model.loss_fn, x, y, 0.01, 2, torch.Generator().manual_seed(0)), rel=1e-5
    )
    assert logged["sgd/noise_trace"] > 0 and logged["diag/sgd_noise_seconds"] >= 0
    assert logged["sgd/temperature"] == pytest.approx(0.3 / 16)

    opt = SAM(net.parameters(), rho=0.1, lr=0.3, momentum=0.5)  # the same steps without Lightning
    batches = EpochPermutation(64, 16, shuffle=True, seed=0)
    for epoch in range(3):
        batches.set_epoch(epoch)
        for idx in batches:
            opt.step(lambda: losses.mean_loss("mse", net(x[idx]), y[idx]).backward())
    for p, q in zip(model.net.parameters(), net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert float(losses.mean_loss("mse", net(x), y).detach()) < loss_before


def test_sam_blocks_take_the_steps_of_separate_sams_and_survive_a_checkpoint():
    # Two independent quadratics in one SAM, one block each, against one SAM per quadratic (float64).
    (_, params_a, flat_a, closure_a, _), (_, params_b, flat_b, closure_b, _) = quadratic(0), quadratic(1)
    ref_a, ref_b = quadratic(0), quadratic(1)
    joint = SAM([{"params": params_a, "block": 0}, {"params": params_b, "block": 1}], rho=0.3, lr=0.1, momentum=0.9)
    alone = [SAM(ref_a[1], rho=0.3, lr=0.1, momentum=0.9), SAM(ref_b[1], rho=0.3, lr=0.1, momentum=0.9)]

    def both():
        return closure_a() + closure_b()  # disjoint parameters: each block gets its own gradient

    for _ in range(2):
        joint.step(both)
        alone[0].step(ref_a[3])
        alone[1].step(ref_b[3])
    torch.testing.assert_close(flat_a().detach(), ref_a[2]().detach(), rtol=0, atol=0)
    torch.testing.assert_close(flat_b().detach(), ref_b[2]().detach(), rtol=0, atol=0)  # a joint norm would shrink both radii
    assert [g.get("block") for g in joint.state_dict()["param_groups"]] == [0, 1]
    fresh = SAM([{"params": params_a, "block": 0}, {"params": params_b, "block": 1}], rho=0.3, lr=0.1, momentum=0.9)
    fresh.load_state_dict(copy.deepcopy(joint.state_dict()))
    assert [g["block"] for g in fresh.param_groups] == [0, 1]
    saved = [p.detach().clone() for p in params_a + params_b]
    joint.step(both)
    after = torch.cat([flat_a(), flat_b()]).detach().clone()
    with torch.no_grad():
        for p, s in zip(params_a + params_b, saved):
            p.copy_(s)
    fresh.step(both)
    torch.testing.assert_close(torch.cat([flat_a(), flat_b()]).detach(), after, rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", ["sam", "entropy_sgd"])
def test_sam_and_entropy_sgd_refuse_gradient_accumulation_and_16_bit_mixed_precision(optimizer):
    """Both re-evaluate the loss on the step's batch: accumulated gradients would be thrown away by the
    closure, and a GradScaler steps without one. Refused before the first update; bf16 and plain SGD pass."""
    dm = GaussianMixture(dim=8, n_train=64, n_test=32, batch_size=16, seed=0)
    model = SupervisedModule(TwoLayerMLP(8, 16, 1), optimizer=optimizer, lr=0.1, seed=1)
    before = copy.deepcopy(model.state_dict())
    trainer = quiet_trainer(max_epochs=1, accumulate_grad_batches=2)
    with pytest.raises(ConfigError, match=rf"`trainer.accumulate_grad_batches` to be 1 for optimizer '{optimizer}' .* but got 2$"):
        trainer.fit(model, datamodule=dm)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # no update was made
    for precision in ("16-mixed", "16", 16):
        with pytest.raises(ConfigError, match=rf"`trainer.precision` to be 32-true, bf16-mixed or bf16-true for optimizer '{optimizer}'"):
            model.check_trainer(1, precision)
    for precision in ("32-true", "bf16-mixed", "bf16-true"):
        model.check_trainer(1, precision)
    SupervisedModule(TwoLayerMLP(8, 16, 1), optimizer="sgd").check_trainer(4, "16-mixed")  # plain SGD accumulates and scales fine
