"""The divergence check off the host's critical path (``divergence_check_every_n_steps`` > 1) stops where
the per-step check stops, with the same last finite weights; ``log_batch_loss`` logs each step's loss."""

import math

import pytest
import pytorch_lightning as pl
import torch
from quiet_trainer import quiet_trainer
from test_schedule import Capture

from datamodules.synthetic import GaussianMixture
from lightning_modules.divergence import DeviceFlag
from lightning_modules.module import SupervisedModule
from lightning_modules.nets.mlp import TwoLayerMLP

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_device_flag_freezes_fused_updates_from_the_first_nonfinite_loss(optimizer):
    """Losses 1, 2, nan, 3, inf: ``first`` becomes 2 and stays; the updates of steps 2, 3 and 4 are skipped
    entirely, so weights and optimizer state equal those after two plain fused steps."""
    torch.manual_seed(0)
    grads = [torch.randn(5) for _ in range(5)]

    def run(steps: int, losses=None):
        w = torch.nn.Parameter(torch.arange(5.0))
        kwargs = {"momentum": 0.9} if optimizer == "sgd" else {}
        opt = getattr(torch.optim, optimizer.upper() if optimizer == "sgd" else "Adam")([w], lr=0.1, fused=True, **kwargs)
        flag = DeviceFlag(opt, torch.device("cpu")) if losses is not None else None
        for t in range(steps):
            if flag is not None:
                flag.update(torch.tensor(losses[t]), t)
            w.grad = grads[t].clone()
            opt.step()
        return w.detach(), opt.state_dict()["state"][0], flag

    w, state, flag = run(5, [1.0, 2.0, math.nan, 3.0, math.inf])
    w_ref, state_ref, _ = run(2)
    assert flag.first_nonfinite_step() == 2 and float(flag.found_inf) == 1.0
    assert torch.equal(w, w_ref)
    for key, value in state_ref.items():
        assert torch.equal(torch.as_tensor(state[key]), torch.as_tensor(value)), key


class Losses(pl.Callback):
    """Each step's training loss, read on the host by the test (the module itself does not)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]) if outputs else math.nan)  # nothing: the per-step check skipped it


def fit(every: int, max_steps: int = -1, lr: float = 30.0):
    """Minibatch SGD with momentum at a rate that diverges within a few epochs (6 batches an epoch)."""
    data = GaussianMixture(dim=8, n_train=96, n_test=32, batch_size=16, seed=0)
    net = TwoLayerMLP(8, 32, data.output_dim, parameterization="ntk")
    model = SupervisedModule(net, lr=lr, momentum=0.9, seed=0, divergence_check_every_n_steps=every)
    losses = Losses()
    trainer = quiet_trainer(max_epochs=20, max_steps=max_steps, callbacks=[losses], limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    return model, trainer, losses.values


@pytest.mark.parametrize("every", [4, 7])
def test_deferred_check_stops_at_the_first_nonfinite_step_with_the_last_finite_weights(every):
    model, trainer, seen = fit(every)
    first = next(t for t, v in enumerate(seen) if not math.isfinite(v))
    assert model.diverged_at_step == first
    assert first < trainer.global_step <= first + every  # at most every − 1 steps computed past it
    assert all(torch.isfinite(p).all() for p in model.net.parameters())
    reference, _, ref_seen = fit(every, max_steps=first)  # the same run, stopped before the bad step
    assert reference.diverged_at_step is None and all(math.isfinite(v) for v in ref_seen)
    for (name, p), q in zip(model.net.named_parameters(), reference.net.parameters()):
        assert torch.equal(p, q), name
    opt, ref_opt = trainer.optimizers[0], reference.trainer.optimizers[0]
    for p, q in zip(model.net.parameters(), reference.net.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], ref_opt.state[q]["momentum_buffer"])


def test_per_step_check_stops_at_once_at_the_same_kind_of_step():
    """The default on a CPU (every step): stops at its first non-finite loss, no step past it."""
    model, trainer, seen = fit(1)
    first = next(t for t, v in enumerate(seen) if not math.isfinite(v))
    assert model.diverged_at_step == first == len(seen) - 1
    assert model.device_flag is None


def test_batch_loss_is_the_whole_training_loss_under_full_batch_gd_with_sparse_evaluation():
    """Full batch, whole-set metrics every 5th epoch: ``train/batch_loss`` is logged at every step and equals
    ``train/loss`` at the steps where both are logged (the same weights, the same whole set)."""
    data = GaussianMixture(dim=8, n_train=64, n_test=32, seed=0)
    model = SupervisedModule(TwoLayerMLP(8, 16, data.output_dim), lr=0.5, seed=0, log_batch_loss=True)
    capture = Capture()
    quiet_trainer(max_epochs=12, logger=capture, check_val_every_n_epoch=5).fit(model, datamodule=data)
    batch = dict(capture.series("train/batch_loss"))
    assert sorted(batch) == list(range(12))
    whole = dict(capture.series("train/loss"))
    shared = sorted(set(batch) & set(whole))
    assert shared == [0, 5, 10]
    for step in shared:
        assert batch[step] == pytest.approx(whole[step], rel=1e-5)
    assert batch[11] < batch[0]


def test_deferred_check_resumes_bit_identical(tmp_path):
    """The deferred path (fused SGD, device flag) through a checkpoint: 2 + 2 epochs equal 4 epochs bit for bit."""

    def model_and_data():
        data = GaussianMixture(dim=8, n_train=96, n_test=32, batch_size=16, seed=0)
        net = TwoLayerMLP(8, 32, data.output_dim, parameterization="ntk")
        return SupervisedModule(net, lr=0.5, momentum=0.9, seed=0, divergence_check_every_n_steps=4), data

    full, data = model_and_data()
    quiet_trainer(max_epochs=4, limit_val_batches=0).fit(full, datamodule=data)
    first, data = model_and_data()
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(first, datamodule=data)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed, data = model_and_data()
    quiet_trainer(max_epochs=4, limit_val_batches=0).fit(resumed, datamodule=data, ckpt_path=tmp_path / "half.ckpt")
    assert resumed.device_flag is not None and resumed.diverged_at_step is None
    for (name, p), q in zip(full.net.named_parameters(), resumed.net.parameters()):
        assert torch.equal(p, q), name
