"""Replicas trained in lockstep, and independent-subnetwork training (IST)."""

import pytest
import torch
from quiet_trainer import quiet_trainer

from callbacks.replica import ReplicaDistance, replica_distance
from datamodules.synthetic import GaussianMixture
from lightning_modules.checks import ConfigError
from lightning_modules.ist import average_shared_gradients, ist_loss
from lightning_modules.module import SupervisedModule
from lightning_modules.nets.mlp import TwoLayerMLP


def fit(model, data, epochs=2, callbacks=(), loader=None):
    trainer = quiet_trainer(max_epochs=epochs, limit_val_batches=0, callbacks=list(callbacks))
    trainer.fit(model, datamodule=data, train_dataloaders=loader)
    return trainer


def data(batch_size=16):
    return GaussianMixture(dim=5, n_train=64, n_test=16, batch_size=batch_size, seed=3)


def test_replicas_with_the_same_seed_stay_identical_and_with_other_seeds_drift_apart():
    same = SupervisedModule(TwoLayerMLP(5, 16, 1), lr=0.2, replicas=2, replica_seeds=[3])  # 3 = the data seed
    callback = ReplicaDistance(probe_size=32)
    trainer = fit(same, data(), callbacks=[callback])
    assert all(torch.equal(p, q) for p, q in zip(same.net.parameters(), same.replica_nets[0].parameters()))
    assert trainer.callback_metrics["replica/distance"].item() == 0.0
    assert trainer.callback_metrics["replica/output_distance"].item() == 0.0

    other = SupervisedModule(TwoLayerMLP(5, 16, 1), lr=0.2, replicas=3)
    trainer = fit(other, data(), callbacks=[ReplicaDistance(probe_size=32)])
    nets = [other.net, *other.replica_nets]
    assert trainer.callback_metrics["replica/distance"].item() == pytest.approx(replica_distance(nets))
    assert replica_distance(nets) > 1e-6
    # Each replica equals a plain single run of its own minibatch order: replica 0 is the ordinary run.
    single = SupervisedModule(TwoLayerMLP(5, 16, 1), lr=0.2)
    fit(single, data())
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(single.net.parameters(), other.net.parameters()))


def test_ist_with_one_part_equals_ordinary_training():
    ist = SupervisedModule(TwoLayerMLP(5, 16, 1), lr=0.2, rule="ist", ist_parts=1)
    plain = SupervisedModule(TwoLayerMLP(5, 16, 1), lr=0.2)
    fit(ist, data())
    fit(plain, data())
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(ist.net.parameters(), plain.net.parameters()))


def test_ist_subnetworks_are_disjoint_and_each_sees_its_own_chunk():
    torch.manual_seed(0)
    net = TwoLayerMLP(3, 8, 1).double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    loss_fn = lambda out, target: 0.5 * ((out - target) ** 2).mean()  # noqa: E731
    loss = ist_loss(net, loss_fn, x, y, parts=2, generator=torch.Generator().manual_seed(1))
    loss.backward()
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    for units, rows in ((perm[:4], slice(0, 2)), (perm[4:], slice(2, 4))):
        # Brute force: subnetwork of these units, doubled, on its own half of the batch.
        h = net.features(x[rows])[:, units] * 2
        out = h @ net.fc2.weight[:, units].T * net.c2 + net.fc2.bias
        sub_loss = loss_fn(out, y[rows])
        (grad,) = torch.autograd.grad(sub_loss, net.fc2.weight)
        assert torch.allclose(net.fc2.weight.grad[:, units], grad[:, units])


def test_ist_needs_a_two_layer_net_and_replica_seed_count_is_checked():
    with pytest.raises(ValueError, match="TwoLayerMLP"):
        SupervisedModule(torch.nn.Sequential(torch.nn.Linear(2, 1)), rule="ist")
    with pytest.raises(ValueError, match="`replica_seeds`"):
        SupervisedModule(TwoLayerMLP(2, 4), replicas=3, replica_seeds=[1])


@pytest.mark.parametrize(
    "settings",
    [
        {"rule": "ist", "ist_parts": 3},
        {"optimizer": "sam", "sam_rho": 0.2, "momentum": 0.5},
        {"rule": "ist", "ist_parts": 2, "optimizer": "sam", "sam_rho": 0.2},
    ],
)
def test_replicas_on_equal_orders_take_the_single_run_steps_of_their_rule_and_optimizer(settings):
    # Full batch: every replica sees the same data, so nothing but a coupling could tell them apart.
    runs = {}
    for replicas in (1, 3):
        model = SupervisedModule(TwoLayerMLP(5, 16, 1), lr=0.2, replicas=replicas, **settings)
        init = model.net.fc1.weight.detach().clone()
        fit(model, data(batch_size=None), epochs=3)
        runs[replicas] = model
    single, replicated = runs[1].net, runs[3]
    assert not torch.equal(single.fc1.weight, init)  # it trained
    for net in (replicated.net, *replicated.replica_nets):
        assert all(torch.equal(p, q) for p, q in zip(single.parameters(), net.parameters()))


def test_ist_needs_k_units_and_k_samples_and_splits_uneven_sizes_into_exactly_k_pieces():
    with pytest.raises(ValueError, match="^Expected argument `ist_parts` to be <= the net's width 3 .* but got 4$"):
        SupervisedModule(TwoLayerMLP(5, 3, 1), rule="ist", ist_parts=4)
    torch.manual_seed(0)
    net = TwoLayerMLP(3, 6, 1).double()
    loss_fn = lambda out, target: 0.5 * ((out - target) ** 2).mean()  # noqa: E731
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="^Expected argument `ist_parts` to be <= the batch size 3 .* but got 4$"):
        ist_loss(net, loss_fn, x[:3], y[:3], parts=4, generator=torch.Generator().manual_seed(1))

    # m = 6 units, n = 5 samples, K = 4: groups of 2, 2, 1, 1 units on chunks of 2, 1, 1, 1 samples.
    ist_loss(net, loss_fn, x, y, parts=4, generator=torch.Generator().manual_seed(1)).backward()
    average_shared_gradients(net, 4)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    groups = [(perm[0:2], slice(0, 2)), (perm[2:4], slice(2, 3)), (perm[4:5], slice(3, 4)), (perm[5:6], slice(4, 5))]
    reference = 0.0
    for units, rows in groups:  # brute force: each subnetwork, its units scaled by K = 4, on its own rows
        h = net.features(x[rows])[:, units] * 4
        reference = reference + loss_fn(h @ net.fc2.weight[:, units].T * net.c2 + net.fc2.bias, y[rows])
    params = list(net.parameters())
    expected = dict(zip(params, torch.autograd.grad(reference, params)))
    expected[net.fc2.bias] = expected[net.fc2.bias] / 4  # the shared bias: mean of the K subnetwork gradients
    for p in params:
        torch.testing.assert_close(p.grad, expected[p], rtol=1e-12, atol=1e-14)


def test_ist_sam_replicas_resume_bit_exactly(tmp_path):
    settings = dict(lr=0.2, rule="ist", ist_parts=2, optimizer="sam", sam_rho=0.2, momentum=0.5, replicas=2)
    straight = SupervisedModule(TwoLayerMLP(5, 16, 1), **settings)
    fit(straight, data(), epochs=4)
    first = SupervisedModule(TwoLayerMLP(5, 16, 1), **settings)
    trainer = fit(first, data(), epochs=2)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = SupervisedModule(TwoLayerMLP(5, 16, 1), **settings)
    trainer = quiet_trainer(max_epochs=4, limit_val_batches=0)
    trainer.fit(resumed, datamodule=data(), ckpt_path=tmp_path / "half.ckpt")
    assert [g["block"] for g in trainer.optimizers[0].param_groups] == [0, 1]
    assert not torch.equal(straight.net.fc1.weight, first.net.fc1.weight)  # the last two epochs moved it
    assert all(torch.equal(p, q) for p, q in zip(straight.parameters(), resumed.parameters()))


class RecordingModule(SupervisedModule):
    """Records, at every step, the inputs of replica 0 (the train loader's batch) and of replicas 1..R−1."""

    def training_step(self, batch, batch_idx):
        step = [batch[0].clone()] + [self.replica_batch(r, batch_idx)[0].clone() for r in range(1, self.hparams.replicas)]
        self.seen.append((self.current_epoch, batch_idx, step))
        return super().training_step(batch, batch_idx)


def test_a_replica_with_the_data_seed_gets_exactly_replica_0s_batches_and_others_the_public_order():
    dm = data(batch_size=16)
    model = RecordingModule(TwoLayerMLP(5, 16, 1), lr=0.2, replicas=3, replica_seeds=[3, 11])  # 3 = the data seed
    model.seen = []
    fit(model, dm, epochs=2)
    assert len(model.seen) == 2 * 4
    split = dm.split_on_device("train")
    for epoch, batch_idx, (x0, x1, x2) in model.seen:
        assert torch.equal(x1, x0)  # the data seed: replica 0's batch, step by step
        assert torch.equal(x2, split.x[dm.batch_order("train", seed=11, epoch=epoch)[batch_idx]])
    assert not all(torch.equal(x0, x2) for _, _, (x0, _, x2) in model.seen)


def test_replicas_need_a_data_module_with_a_batch_order():
    x, y = torch.randn(8, 5), torch.randn(8, 1)
    with pytest.raises(ConfigError, match="`batch_order`"):
        fit(SupervisedModule(TwoLayerMLP(5, 4, 1), replicas=2), None, epochs=1, loader=[(x, y)])


def test_replica_spread_is_the_squared_distance_to_the_centre_and_pulls_each_replica_toward_it():
    from lightning_modules.module import replica_spread

    nets = [TwoLayerMLP(3, 4, 1).double() for _ in range(3)]
    for k, net in enumerate(nets):
        torch.manual_seed(k)
        net.reset_parameters()
    flat = torch.stack([torch.cat([p.reshape(-1) for p in net.parameters()]) for net in nets])  # (R, P)
    centre = flat.mean(0)
    spread = replica_spread(nets)
    assert spread.item() == pytest.approx(((flat - centre) ** 2).sum().item(), rel=1e-12)
    spread.backward()
    grads = torch.stack([torch.cat([p.grad.reshape(-1) for p in net.parameters()]) for net in nets])
    torch.testing.assert_close(grads, 2 * (flat - centre).detach(), rtol=1e-12, atol=1e-12)


def test_replica_coupling_draws_the_replicas_together_and_needs_replicas():
    """Replicated SGD: three replicas on their own minibatch orders (32 steps per epoch) end 8x closer with
    γ = 1 than without on seeds 0-1. (With a few steps per epoch the uncoupled replicas nearly meet again at
    each epoch's end, having summed the same gradients in another order, so a short epoch would not show it.)"""
    distances = {}
    for gamma in (0.0, 1.0):
        model = SupervisedModule(TwoLayerMLP(5, 16, 1), lr=0.2, replicas=3, replica_coupling=gamma, seed=0)
        many_steps = GaussianMixture(dim=5, n_train=256, n_test=16, batch_size=8, seed=3)
        trainer = fit(model, many_steps, epochs=4, callbacks=[ReplicaDistance(probe_size=32)])
        distances[gamma] = trainer.callback_metrics["replica/distance"].item()
    assert 0 < distances[1.0] < 0.5 * distances[0.0], distances
    with pytest.raises(ConfigError, match="replicas"):
        SupervisedModule(TwoLayerMLP(5, 16, 1), replica_coupling=0.5)
