"""Seed ensembles (``SupervisedModule(ensemble=E)``): member k of the stacked model ends where a run of its
own with ``seed + k`` on the same data ends, its metrics are logged per member, the plain tags are the
members' mean, and what cannot be trained exactly is refused."""

import pytest
import torch
from quiet_trainer import quiet_trainer

from callbacks.sharpness import HessianSharpness
from datamodules.synthetic import GaussianMixture
from lightning_modules.checks import ConfigError
from lightning_modules.module import SupervisedModule
from lightning_modules.nets.ensemble import StackedEnsemble
from lightning_modules.nets.mlp import TwoLayerMLP
from lightning_modules.nets.random_features import RandomFeatures

TOL = {"rtol": 1e-5, "atol": 1e-6}  # float32, a few dozen steps


def fit(model, batch_size=16, epochs=3, **trainer_kwargs):
    data = GaussianMixture(dim=5, n_train=64, n_test=32, batch_size=batch_size, seed=3, cluster_std=0.5)
    trainer = quiet_trainer(max_epochs=epochs, **trainer_kwargs)
    trainer.fit(model, datamodule=data)
    return trainer


def assert_members_match_single_runs(make_net, seed=7, members=3, **settings):
    ensemble = SupervisedModule(make_net(), ensemble=members, seed=seed, **settings)
    assert isinstance(ensemble.net, StackedEnsemble)
    metrics = fit(ensemble).callback_metrics
    losses = []
    for k in range(members):
        single = SupervisedModule(make_net(), seed=seed + k, **settings)
        single_metrics = fit(single).callback_metrics
        state = ensemble.net.member_state(k)
        for name, tensor in single.net.state_dict().items():  # parameters and FA feedback buffers
            torch.testing.assert_close(state[name], tensor, **TOL, msg=f"member {k}, {name}")
        for tag in ("train/loss", "test/loss", "train/acc", "test/acc"):
            torch.testing.assert_close(metrics[f"ensemble/{k}/{tag}"], single_metrics[tag], **TOL)
        losses.append(metrics[f"ensemble/{k}/train/loss"])
    torch.testing.assert_close(metrics["train/loss"], torch.stack(losses).mean(), **TOL)
    return ensemble


def test_mlp_members_equal_single_runs_under_minibatch_sgd_with_momentum():
    ensemble = assert_members_match_single_runs(lambda: TwoLayerMLP(5, 32, 1), lr=0.2, momentum=0.9, weight_decay=1e-3)
    weights = [ensemble.net.member_state(k)["fc1.weight"] for k in range(3)]
    assert not torch.allclose(weights[0], weights[1])  # independently initialized


def test_random_features_members_equal_single_runs_under_adam():
    assert_members_match_single_runs(lambda: RandomFeatures(5, 24, 1), optimizer="adam", lr=0.01)


def test_fa_members_equal_single_fa_runs_with_their_own_feedback():
    ensemble = assert_members_match_single_runs(lambda: TwoLayerMLP(5, 32, 1), rule="fa", lr=0.2, momentum=0.5)
    feedback = [ensemble.net.member_state(k)["fc2.feedback_weight"] for k in range(3)]
    assert not torch.allclose(feedback[0], feedback[1])
    backprop = SupervisedModule(TwoLayerMLP(5, 32, 1), seed=7, lr=0.2, momentum=0.5)
    fit(backprop)  # FA is really in use: member 0 leaves the backprop trajectory
    assert not torch.allclose(ensemble.net.member_state(0)["fc1.weight"], backprop.net.fc1.weight.detach(), atol=1e-4)


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"rule": "dfa"}, "`rule`"),
        ({"rule": "ist"}, "`rule`"),
        ({"optimizer": "sam"}, "`optimizer`"),
        ({"optimizer": "entropy_sgd"}, "`optimizer`"),
        ({"layer_lr": {"fc2": 0.5}}, "`layer_lr`"),
        ({"replicas": 2}, "`replicas`"),
        ({"seed": None}, "`seed`"),
        ({"ensemble": 0}, "`ensemble`"),
    ],
)
def test_unsupported_settings_are_refused_in_one_line(settings, field):
    with pytest.raises(ConfigError, match=field) as err:
        SupervisedModule(TwoLayerMLP(5, 8, 1), **{"ensemble": 2, **settings})
    assert "\n" not in str(err.value)


def test_dropout_diagnostics_and_gradient_clipping_are_refused():
    with pytest.raises(ConfigError, match="dropout"):
        SupervisedModule(TwoLayerMLP(5, 8, 1, dropout=0.1), ensemble=2)
    with pytest.raises(ConfigError, match="HessianSharpness"):
        fit(SupervisedModule(TwoLayerMLP(5, 8, 1), ensemble=2), callbacks=[HessianSharpness()])
    with pytest.raises(ConfigError, match="gradient_clip_val"):
        fit(SupervisedModule(TwoLayerMLP(5, 8, 1), ensemble=2), gradient_clip_val=1.0)
