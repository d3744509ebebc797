"""SupervisedModule: losses against closed forms, per-layer learning rates, seeded init, and the
logged whole-set metrics against a direct computation."""

import math

import pytest
import torch
import torch.nn.functional as F
from quiet_trainer import quiet_trainer

from lightning_modules import losses
from lightning_modules.module import SupervisedModule, param_groups
from lightning_modules.nets.mlp import TwoLayerMLP


def test_binary_losses_match_closed_forms():
    f = torch.tensor([[2.0], [-0.5], [0.3]])
    y = torch.tensor([1, 1, 0])  # t = +1, +1, -1
    t = torch.tensor([1.0, 1.0, -1.0])
    margin = t * f[:, 0]
    assert torch.allclose(losses.per_sample_loss("hinge", f, y), torch.clamp(1 - margin, min=0))
    assert torch.allclose(losses.per_sample_loss("logistic", f, y), torch.log1p(torch.exp(-margin)))
    assert torch.allclose(losses.per_sample_loss("mse", f, y), 0.5 * (f[:, 0] - t) ** 2)
    assert torch.equal(losses.correct(f, y), torch.tensor([1.0, 0.0, 0.0]))


def test_multiclass_and_regression_losses_match_closed_forms():
    f = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 1, 2, 2, 0])
    assert torch.allclose(losses.per_sample_loss("cross_entropy", f, y), -f.log_softmax(1)[torch.arange(6), y])
    assert torch.allclose(losses.per_sample_loss("mse", f, y), 0.5 * ((f - F.one_hot(y, 4)) ** 2).sum(1))
    assert torch.equal(losses.correct(f, y), (f.argmax(1) == y).float())
    target = torch.randn(6, 4)
    assert torch.allclose(losses.mean_loss("mse", f, target), ((f - target) ** 2).sum() / (2 * 6))
    with pytest.raises(ValueError, match="`loss`"):
        losses.per_sample_loss("hinge", f, target)


def test_layer_lr_multiplies_the_named_layer_and_rejects_unknown_names():
    net = TwoLayerMLP(3, 5)
    groups = {g["name"]: g for g in param_groups(net, 0.1, {"fc2": 0.5})}
    assert groups["fc2"]["lr"] == pytest.approx(0.05) and groups["default"]["lr"] == pytest.approx(0.1)
    assert {id(p) for p in groups["fc2"]["params"]} == {id(net.fc2.weight), id(net.fc2.bias)}
    with pytest.raises(ValueError, match="fc1, fc2"):
        SupervisedModule(TwoLayerMLP(3, 5), layer_lr={"fc3": 2.0})


def test_seed_fixes_the_initial_weights_whatever_the_global_rng():
    def init(seed, global_seed):
        torch.manual_seed(global_seed)
        return SupervisedModule(TwoLayerMLP(3, 5), seed=seed).net.fc1.weight.detach().clone()

    assert torch.equal(init(7, 0), init(7, 1))
    assert not torch.equal(init(7, 0), init(8, 0))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"rule": "hebb"}, "rule"),
        ({"loss": "l1"}, "loss"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"lr": -1.0}, "lr"),
        ({"lr": math.nan}, "lr"),
    ],
)
def test_bad_module_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        SupervisedModule(TwoLayerMLP(3, 5), **kwargs)


def test_logged_metrics_are_whole_set_values_not_minibatch_averages(tmp_path):

    from callbacks.gaps import TrainTestGap
    from datamodules.synthetic import GaussianMixture
    from overparam.summary import SummaryLogger

    data = GaussianMixture(dim=6, n_train=96, n_test=80, batch_size=16, seed=3, cluster_std=0.5)
    model = SupervisedModule(TwoLayerMLP(6, 32, 1), loss="hinge", lr=0.5, lr_schedule="cosine", seed=1)
    logger = SummaryLogger(save_dir=str(tmp_path))
    trainer = quiet_trainer(max_epochs=3, logger=logger, callbacks=[TrainTestGap()])
    trainer.fit(model, datamodule=data)
    with torch.no_grad():
        out_train, out_test = model.net(data.train.x), model.net(data.test.x)
    expected = {
        "train/loss": losses.mean_loss("hinge", out_train, data.train.y),
        "test/loss": losses.mean_loss("hinge", out_test, data.test.y),
        "train/acc": losses.correct(out_train, data.train.y).mean(),
        "test/acc": losses.correct(out_test, data.test.y).mean(),
    }
    for tag, value in expected.items():
        assert logger.last[tag] == pytest.approx(value.item(), rel=1e-5, abs=1e-7), tag
    assert logger.last["gap/loss"] == pytest.approx(logger.last["test/loss"] - logger.last["train/loss"], abs=1e-6)
    assert logger.last["gap/acc"] == pytest.approx(logger.last["train/acc"] - logger.last["test/acc"], abs=1e-6)
    assert trainer.global_step == 3 * 6  # 96 / 16 minibatches per epoch
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0
