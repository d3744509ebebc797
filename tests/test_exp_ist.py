"""Training through randomly masked subnetworks (lightning_modules/ist.py): the round of τ local steps and
its merge against explicit per-subnetwork training, and ist_local_steps at CI size (configs/ci/ist_local_steps.yaml)."""

import statistics

import pytest
import torch
from experiment_runner import run_config, scalars
from quiet_trainer import quiet_trainer

from datamodules.synthetic import TeacherStudent
from lightning_modules.checks import ConfigError
from lightning_modules.ist import average_shared_gradients, ist_loss, ist_masks, local_round_loss, step_generator
from lightning_modules.module import SupervisedModule
from lightning_modules.nets.mlp import TwoLayerMLP


def half_mse(out, target):
    return 0.5 * ((out - target) ** 2).mean()


def reference_round(net, masks, scale, chunks, lr, steps):
    """Brute force: surrogate l is a net of its own, built from the units where M_l = 1 (their outputs
    times ``scale``) and a copy of b2; τ GD steps each; then every unit becomes the mean of its copies in
    the surrogates holding it (unchanged when none does) and b2 the mean of its p copies."""
    w1, b1, w2, b2 = (t.detach().clone() for t in (net.fc1.weight, net.fc1.bias, net.fc2.weight, net.fc2.bias))
    sums = [torch.zeros_like(t) for t in (w1, b1, w2)]
    b2_sum = torch.zeros_like(b2)
    for mask, (x, y) in zip(masks, chunks):
        units = mask.nonzero().flatten()
        local = [w1[units].clone().requires_grad_(), b1[units].clone().requires_grad_(), w2[:, units].clone().requires_grad_()]
        local_b2 = b2.clone().requires_grad_()
        for _ in range(steps):
            h = net.sigma(x * net.c1 @ local[0].T + local[1]) * scale  # (n, |S_l|)
            loss = half_mse(h @ local[2].T * net.c2 + local_b2, y)
            grads = torch.autograd.grad(loss, [*local, local_b2])
            with torch.no_grad():
                for p, g in zip([*local, local_b2], grads):
                    p -= lr * g
        sums[0][units] += local[0].detach()
        sums[1][units] += local[1].detach()
        sums[2][:, units] += local[2].detach()
        b2_sum += local_b2.detach()
    counts = masks.sum(0)
    held = counts > 0
    merged = [w1.clone(), b1.clone(), w2.clone()]
    merged[0][held] = sums[0][held] / counts[held, None]
    merged[1][held] = sums[1][held] / counts[held]
    merged[2][:, held] = sums[2][:, held] / counts[held]
    return [*merged, b2_sum / len(masks)]


def sgd_step(net, loss, lr):
    """The weights after one plain SGD step of size ``lr`` on ``loss`` (the net is left as it was)."""
    params = [net.fc1.weight, net.fc1.bias, net.fc2.weight, net.fc2.bias]
    grads = torch.autograd.grad(loss, params)
    return [(p - lr * g).detach() for p, g in zip(params, grads)]


def tiny_case():
    torch.manual_seed(0)
    net = TwoLayerMLP(3, 6, 2).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    return net, x, y


@pytest.mark.parametrize("keep_prob", [0.5, None])
def test_a_round_of_local_steps_equals_explicit_subnetwork_training_then_the_merge(keep_prob):
    """Overlapping Bernoulli(1/2) masks (p = 3 surrogates, each on the whole batch) and disjoint groups
    (p = 3, a chunk each): τ = 4 local steps of size η = 0.3, merged, in float64 to 1e-12."""
    net, x, y = tiny_case()
    parts, lr, steps = 3, 0.3, 4
    masks = ist_masks(6, parts, torch.Generator().manual_seed(5), keep_prob).double()
    if keep_prob is not None:  # the case exercises every branch of the merge
        assert {0, 1} < set(masks.sum(0).tolist()) and masks.sum(0).max() >= 2
        chunks, scale = [(x, y)] * parts, 1 / keep_prob
    else:
        chunks, scale = list(zip(x.tensor_split(parts), y.tensor_split(parts))), float(parts)
    expected = reference_round(net, masks, scale, chunks, lr, steps)
    loss = local_round_loss(net, half_mse, x, y, parts, torch.Generator().manual_seed(5), lr, steps, keep_prob)
    reference_loss = sum(half_mse(net.fc2(net.features(xl) * m * scale * net.c2), yl) for m, (xl, yl) in zip(masks, chunks))
    assert loss.item() == pytest.approx(reference_loss.item(), rel=1e-12)  # Σ_l L_l at the round's start
    for got, want in zip(sgd_step(net, loss, lr), expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_one_local_step_is_one_backward_pass_with_unit_gradients_over_their_holders():
    """τ = 1 with overlapping masks: the backward pass of Σ_l L_l, unit r's gradient divided by N_r and
    b2's by p (what on_after_backward does), steps onto the merge of explicit subnetwork training."""
    net, x, y = tiny_case()
    masks = ist_masks(6, 3, torch.Generator().manual_seed(5), 0.5).double()
    expected = reference_round(net, masks, 2.0, [(x, y)] * 3, 0.3, 1)
    ist_loss(net, half_mse, x, y, 3, torch.Generator().manual_seed(5), keep_prob=0.5).backward()
    average_shared_gradients(net, 3, masks.sum(0))
    params = [net.fc1.weight, net.fc1.bias, net.fc2.weight, net.fc2.bias]
    for p, want in zip(params, expected):
        torch.testing.assert_close((p - 0.3 * p.grad).detach(), want, rtol=1e-12, atol=1e-12)


def regression(n_train=8):
    return TeacherStudent(dim=3, teacher_width=2, n_train=n_train, n_test=8, batch_size=None, seed=1)


def fit(model, epochs, ckpt_path=None, trainer=None):
    trainer = trainer or quiet_trainer(max_epochs=epochs, limit_val_batches=0)
    trainer.fit(model, datamodule=regression(), ckpt_path=ckpt_path)
    return trainer


SETTINGS = dict(rule="ist", ist_parts=5, ist_keep_prob=0.5, ist_local_steps=3, lr=0.2, seed=4)


@pytest.mark.parametrize("steps", [1, 3])
def test_the_module_takes_the_rounds_step_with_masks_from_seed_and_step(steps):
    """One optimizer step of SupervisedModule (full batch; p = 5 surrogates on 4 units, allowed with
    overlapping masks) lands on the brute-force round of the masks drawn for (seed 4, step 0); float32.
    τ = 1 takes the one-backward path (on_after_backward merges), τ = 3 the local round."""
    model = SupervisedModule(TwoLayerMLP(3, 4, 1), **{**SETTINGS, "ist_local_steps": steps})
    net = TwoLayerMLP(3, 4, 1)
    net.load_state_dict(model.net.state_dict())
    data = regression()
    data.setup("fit")
    masks = ist_masks(4, 5, step_generator(4, 0), 0.5)
    expected = reference_round(net, masks, 2.0, [(data.train.x, data.train.y)] * 5, 0.2, steps)
    fit(model, 1)
    for got, want in zip((model.net.fc1.weight, model.net.fc1.bias, model.net.fc2.weight, model.net.fc2.bias), expected):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


def test_replicas_train_like_replica_0_and_a_resumed_run_ends_bit_exactly(tmp_path):
    """Full batch, so replicas see replica 0's data: they take its steps exactly; 2 + 2 epochs from a
    checkpoint end where 4 epochs straight do (the masks come from (seed, step))."""
    single = SupervisedModule(TwoLayerMLP(3, 4, 1), **SETTINGS)
    fit(single, 4)
    replicated = SupervisedModule(TwoLayerMLP(3, 4, 1), replicas=3, **SETTINGS)
    fit(replicated, 4)
    for net in (replicated.net, *replicated.replica_nets):
        assert all(torch.equal(p, q) for p, q in zip(single.net.parameters(), net.parameters()))
    first = SupervisedModule(TwoLayerMLP(3, 4, 1), **SETTINGS)
    fit(first, 2).save_checkpoint(tmp_path / "half.ckpt")
    resumed = SupervisedModule(TwoLayerMLP(3, 4, 1), **SETTINGS)
    fit(resumed, 4, ckpt_path=tmp_path / "half.ckpt")
    assert not torch.equal(first.net.fc1.weight, single.net.fc1.weight)
    assert all(torch.equal(p, q) for p, q in zip(single.net.parameters(), resumed.net.parameters()))


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"ist_keep_prob": 0.0}, "ist_keep_prob"),
        ({"ist_keep_prob": 1.5}, "ist_keep_prob"),
        ({"ist_local_steps": 0}, "ist_local_steps"),
        ({"ist_local_steps": 2, "momentum": 0.9}, "^Expected argument `momentum` to be 0 with `ist_local_steps` = 2"),
        ({"ist_local_steps": 2, "optimizer": "adam"}, "`optimizer`"),
        ({"ist_local_steps": 2, "lr_schedule": "cosine"}, "`lr_schedule`"),
        ({"ist_parts": 5}, "ist_parts"),  # disjoint groups need a unit each
    ],
)
def test_ist_options_are_checked(settings, match):
    with pytest.raises(ConfigError, match=match):
        SupervisedModule(TwoLayerMLP(3, 4, 1), rule="ist", **settings)
    SupervisedModule(TwoLayerMLP(3, 4, 1), rule="ist", ist_parts=5, ist_keep_prob=0.5)  # overlapping masks: any p


def plateau(root):
    """Mean whole-set train/loss over the second half of the run's evaluations."""
    values = [v for _, v in scalars(root, "train/loss")]
    return statistics.mean(values[len(values) // 2 :])


def test_ist_plateau_falls_with_surrogates_and_rises_with_local_steps(tmp_path):
    """ξ = 1/2, n = 16, width 64, 300 rounds, η = 4. Plateau (mean train/loss over rounds 150-300) with
    seeds 0-3 (data and net): p = 4 surrogates at 0.31-0.51x p = 1 (τ = 1); τ = 32 local steps at
    1.2-2.3x τ = 1 (p = 1). The test runs seed 0 (~12 s)."""
    runs = {}
    for parts, steps in ((1, 1), (4, 1), (1, 32)):
        root = tmp_path / f"p{parts}_t{steps}"
        run_config("configs/ci/ist_local_steps.yaml", root, "--model.ist_parts", str(parts), "--model.ist_local_steps", str(steps))
        runs[parts, steps] = plateau(root)
    assert runs[4, 1] < 0.8 * runs[1, 1], runs  # more surrogates: a lower plateau
    assert runs[1, 32] > runs[1, 1], runs  # more local steps: a higher one


def test_ist_claim_figure_draws_from_sweep_rows(tmp_path):
    """The claim figure from CSV-like rows (strings; no logs, so the final train/loss stands in for the plateau)."""
    from overparam.claim_figures import REGISTRY
    from overparam.claim_figures.ist import plateau_figure as draw

    rows = [
        {
            "model.ist_parts": str(p),
            "model.ist_local_steps": str(t),
            "seed": str(s),
            "train/loss": str(0.01 * t**0.2 / p**0.5),
            "log_dir": "",
        }
        for p in (1, 2, 4)
        for t in (1, 8)
        for s in (0, 1)
    ]
    (path,) = draw(rows, tmp_path / "results.csv", tmp_path)
    assert path.name == "ist_local_steps.png" and path.stat().st_size > 0
    assert draw in REGISTRY["ist_local_steps"]


@pytest.mark.parametrize("setting", [{"gradient_clip_val": 1.0}, {"accumulate_grad_batches": 2}])
def test_ist_rounds_refuse_trainer_settings_that_would_move_the_merged_step(setting):
    """With ``ist_local_steps`` > 1 one SGD step lands on the merged weights; clipping or accumulating it would not."""
    from quiet_trainer import quiet_trainer

    from datamodules.synthetic import GaussianMixture
    from lightning_modules.checks import ConfigError
    from lightning_modules.module import SupervisedModule
    from lightning_modules.nets.mlp import TwoLayerMLP

    data = GaussianMixture(dim=4, n_train=32, n_test=16, seed=0)
    model = SupervisedModule(TwoLayerMLP(4, 8, data.output_dim), rule="ist", ist_local_steps=2, lr=0.1)
    with pytest.raises(ConfigError, match="ist_local_steps"):
        quiet_trainer(max_epochs=1, **setting).fit(model, datamodule=data)
