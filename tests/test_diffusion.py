"""callbacks/diffusion.py: the squared displacement against a brute-force sum, its schedule from the
reference step on, and the sgd_diffusion CI twin (the weights keep moving on the loss plateau)."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from experiment_runner import run_config, scalars
from quiet_trainer import quiet_trainer
from test_schedule import Capture

from callbacks.diffusion import Displacement, squared_displacement
from datamodules.synthetic import GaussianMixture
from lightning_modules.checks import ConfigError
from lightning_modules.module import SupervisedModule
from lightning_modules.nets.mlp import TwoLayerMLP

pytestmark = pytest.mark.usefixtures("one_thread")


class EpochWeights(pl.Callback):
    """The flattened trainable weights after every training epoch, by global step."""

    def __init__(self) -> None:
        self.at: dict[int, torch.Tensor] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.at[trainer.global_step] = torch.cat([p.detach().flatten().clone() for p in pl_module.net.parameters() if p.requires_grad])


def test_squared_displacement_is_the_sum_over_parameters():
    g = torch.Generator().manual_seed(0)
    now = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g)}
    ref = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g)}
    flat = lambda d: torch.cat([d["a"].flatten(), d["b"]]).double()  # noqa: E731
    assert squared_displacement(now, ref) == pytest.approx(((flat(now) - flat(ref)) ** 2).sum().item(), rel=1e-12)
    assert squared_displacement(now, now) == 0.0


def test_displacement_is_logged_from_the_reference_epoch_on_against_those_weights():
    """Minibatch SGD, 2 steps per epoch, reference after epoch 2 (step 4): 0 at step 4, then after every
    epoch ‖θ_t − θ_4‖² of the weights a second callback recorded; nothing before step 4."""
    data = GaussianMixture(dim=4, n_train=32, n_test=16, batch_size=16, seed=0)
    model = SupervisedModule(TwoLayerMLP(4, 8, 1, "tanh"), lr=0.2, momentum=0.9, seed=0)
    logger, weights = Capture(), EpochWeights()
    quiet_trainer(max_epochs=5, logger=logger, callbacks=[weights, Displacement(reference_epoch=2)]).fit(model, datamodule=data)
    series = logger.series("weights/displacement")
    assert [s for s, _ in series] == [4, 6, 8, 10]
    assert series[0][1] == 0.0
    for step, value in series[1:]:
        assert value == pytest.approx(((weights.at[step] - weights.at[4]).double() ** 2).sum().item(), rel=1e-6)
    with pytest.raises(ConfigError, match="reference_epoch"):
        Displacement(reference_epoch=-1)


def test_sgd_diffusion_keeps_moving_on_the_loss_plateau(tmp_path):
    """After t₀ (epoch 20 of 60) the training loss stays on its plateau (seeds 0-3: the lowest value after
    t₀ is 0.70-0.88 of the value at t₀) while ‖θ_t − θ_{t₀}‖² grows 12-16x from its first measurement to
    the last, as a power law of exponent 0.84-0.93 in t − t₀ (a fixed point would give 0)."""
    run_config("configs/ci/sgd_diffusion.yaml", tmp_path)
    displacement, loss = scalars(tmp_path, "weights/displacement"), scalars(tmp_path, "train/loss")
    t0, start = displacement[0]
    assert start == 0.0 and t0 == 320  # 16 steps per epoch, after epoch 20
    t = np.array([s - t0 for s, _ in displacement[1:]], dtype=float)
    d = np.array([v for _, v in displacement[1:]])
    assert d[-1] > 5 * d[0]
    exponent = np.polyfit(np.log(t), np.log(d), 1)[0]
    assert 0.3 < exponent < 1.5, exponent
    at_t0 = [v for s, v in loss if s <= t0][-1]
    assert min(v for s, v in loss if s >= t0) > 0.5 * at_t0  # a plateau, not a loss still falling
