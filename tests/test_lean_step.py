"""The lean training step (overparam.lean_step) against Lightning's own loop: the same weights, optimizer
state, logged metrics, and the same hooks called in the same order with the same arguments, for every
rule, optimizer and option that changes what a step does; and Lightning's loop wherever the lean step
does not apply."""

import math

import pytest
import pytorch_lightning as pl
import torch
from quiet_trainer import QUIET
from torch.utils.data import DataLoader

from datamodules.synthetic import GaussianMixture
from lightning_modules.module import SupervisedModule
from lightning_modules.nets.mlp import TwoLayerMLP
from overparam.lean_step import STEP_HOOKS, LeanTrainingEpochLoop, use_lean_step

pytestmark = pytest.mark.usefixtures("one_thread")


def summary(value):
    """A comparable record of a hook argument (tensors by value, optimizers by type)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.detach().double().sum().item())
    if isinstance(value, dict):
        return {k: summary(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(summary(v) for v in value)
    if isinstance(value, torch.optim.Optimizer):
        return type(value).__name__
    return value


class HookTrace(pl.Callback):
    """Every step hook as (name, global step, ``_current_fx_name`` during the call, its arguments, the
    sum of the gradients it sees)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def record(self, name, trainer, pl_module, *args) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        grad_sum = sum(g.double().sum().item() for g in grads) if grads else None
        self.events.append((name, trainer.global_step, pl_module._current_fx_name, summary(args), grad_sum))


for _name in STEP_HOOKS:
    setattr(HookTrace, _name, lambda self, trainer, pl_module, *args, _n=_name: self.record(_n, trainer, pl_module, *args))


def fit(make, lean: bool, epochs: int = 3, **settings):
    torch.manual_seed(0)
    model, data = make()
    trace = HookTrace()
    trainer = pl.Trainer(**{**QUIET, "max_epochs": epochs, "callbacks": [trace], **settings})
    if lean:
        use_lean_step(trainer)
    trainer.fit(model, datamodule=data) if isinstance(data, pl.LightningDataModule) else trainer.fit(model, train_dataloaders=data)
    return model, trainer, trace


def assert_same_training(make, lean_expected: bool = True, **settings) -> None:
    with torch.random.fork_rng():
        ref_model, ref_trainer, ref_trace = fit(make, lean=False, **settings)
        model, trainer, trace = fit(make, lean=True, **settings)
    loop = trainer.fit_loop.epoch_loop
    assert isinstance(loop, LeanTrainingEpochLoop)
    assert (loop._hooks is not None) is lean_expected  # the lean step ran (or, where it does not apply, did not)
    assert trainer.global_step == ref_trainer.global_step > 0
    for (name, a), (_, b) in zip(model.state_dict().items(), ref_model.state_dict().items()):
        assert torch.equal(a, b), name
    for a, b in zip(trainer.optimizers[0].state.values(), ref_trainer.optimizers[0].state.values()):
        for key in b:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    assert trace.events == ref_trace.events
    assert len(trace.events) >= 4 * trainer.global_step  # six a step; a step skipped for a non-finite loss has no backward
    assert {k: float(v) for k, v in trainer.callback_metrics.items()} == {k: float(v) for k, v in ref_trainer.callback_metrics.items()}


def mixture(batch_size=16):
    return GaussianMixture(dim=5, n_train=64, n_test=16, batch_size=batch_size, seed=3)


CASES = {
    "sgd_momentum_cosine": dict(lr=0.1, momentum=0.9, lr_schedule="cosine"),
    "adam": dict(optimizer="adam", lr=0.01),
    "sam": dict(optimizer="sam", lr=0.1),
    "entropy_sgd": dict(optimizer="entropy_sgd", lr=0.1, entropy_inner_steps=2),
    "feedback_alignment": dict(rule="fa", lr=0.1),
    "ist": dict(rule="ist", ist_parts=2, lr=0.1),
    "ist_local_steps": dict(rule="ist", ist_parts=2, ist_local_steps=2, lr=0.1),
    "replicas_coupled": dict(replicas=2, replica_coupling=0.1, lr=0.1),
    "ensemble": dict(ensemble=3, lr=0.1),
    "log_batch_loss": dict(log_batch_loss=True, lr=0.1),
    "diverges": dict(lr=1e4, momentum=0.9),  # training_step returns None at the first non-finite loss
    "diverges_deferred": dict(lr=1e4, momentum=0.9, divergence_check_every_n_steps=3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lean_step_trains_and_calls_hooks_as_lightnings_loop(case):
    assert_same_training(lambda: (SupervisedModule(TwoLayerMLP(5, 16, 1), seed=1, **CASES[case]), mixture()))


def test_lean_step_with_gradient_clipping_full_batch_and_validation():
    make = lambda: (SupervisedModule(TwoLayerMLP(5, 16, 1), seed=1, lr=0.3, momentum=0.9), mixture(batch_size=None))  # noqa: E731
    assert_same_training(make, gradient_clip_val=0.05, limit_val_batches=None, check_val_every_n_epoch=2, epochs=4)


def test_lean_step_with_validation_within_the_epoch_and_a_step_limit():
    make = lambda: (SupervisedModule(TwoLayerMLP(5, 16, 1), seed=1, lr=0.1, momentum=0.9), mixture())  # noqa: E731
    assert_same_training(make, val_check_interval=3, limit_val_batches=None, max_steps=10, epochs=5)


def test_diverging_run_stops_at_the_same_step_with_the_last_finite_weights():
    make = lambda: (SupervisedModule(TwoLayerMLP(5, 16, 1), seed=1, **CASES["diverges"]), mixture())  # noqa: E731
    model, trainer, _ = fit(make, lean=True)
    assert model.diverged_at_step is not None and trainer.global_step == model.diverged_at_step + 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gradient_accumulation_keeps_lightnings_loop():
    make = lambda: (SupervisedModule(TwoLayerMLP(5, 16, 1), seed=1, lr=0.1), mixture())  # noqa: E731
    assert_same_training(make, lean_expected=False, accumulate_grad_batches=2)


class DictOutputModule(pl.LightningModule):
    """A plain LightningModule: a dict from ``training_step`` with an extra key, ``self.log`` on step and
    epoch, and hooks of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.zero_grads = 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self.net(x) - y) ** 2).mean()
        self.log("loss", loss, on_step=True, on_epoch=True)
        return {"loss": loss, "first": x[0, 0].detach()}

    def on_before_zero_grad(self, optimizer) -> None:
        self.zero_grads += 1

    def on_after_backward(self) -> None:
        self.log("grad", self.net.weight.grad.norm())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.5)


class SkippingModule(DictOutputModule):
    """Ends epoch 1 at its batch 2 (``on_train_batch_start`` returning -1)."""

    def on_train_batch_start(self, batch, batch_idx):
        return -1 if (self.current_epoch, batch_idx) == (1, 2) else None


def list_batches(module_class):
    def make():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(40, 4, generator=g)
        y = x.sum(1, keepdim=True)
        loader = DataLoader([[a, b] for a, b in zip(x, y)], batch_size=8, shuffle=False)  # batches are lists
        return module_class(), loader

    return make


def test_a_module_that_can_end_the_epoch_keeps_lightnings_loop():
    assert_same_training(list_batches(SkippingModule), lean_expected=False)
    model, trainer, _ = fit(list_batches(SkippingModule), lean=True)
    assert model.zero_grads == trainer.global_step == 3 * 5 - 3  # epoch 1 skipped its batches 2, 3, 4


def test_lean_step_for_a_plain_module_with_a_dataloader_of_lists():
    make = list_batches(DictOutputModule)
    assert_same_training(make)
    model, trainer, trace = fit(make, lean=True)
    assert model.zero_grads == trainer.global_step == 3 * 5
    assert math.isfinite(float(trainer.callback_metrics["loss_epoch"]))
    ends = [e for e in trace.events if e[0] == "on_train_batch_end"]
    assert ends[0][3][0]["first"] is not None and set(ends[0][3][0]) == {"loss", "first"}


def test_a_profiler_keeps_lightnings_loop():
    trainer = use_lean_step(pl.Trainer(**QUIET, profiler="simple"))
    assert type(trainer.fit_loop.epoch_loop) is not LeanTrainingEpochLoop


def test_values_logged_with_self_log_reach_the_logger_as_under_lightnings_loop(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    def csv(lean: bool) -> str:
        torch.manual_seed(0)
        module, loader = list_batches(DictOutputModule)()
        trainer = pl.Trainer(**{**QUIET, "logger": CSVLogger(tmp_path, name=str(lean)), "max_epochs": 2, "log_every_n_steps": 2})
        if lean:
            use_lean_step(trainer)
        trainer.fit(module, train_dataloaders=loader)
        return (tmp_path / str(lean) / "version_0" / "metrics.csv").read_text()

    with torch.random.fork_rng():
        lean, stock = csv(True), csv(False)
    assert lean == stock and lean.count("\n") > 4  # a header and the logged steps and epochs


def test_the_default_run_with_its_callbacks_is_bit_identical_to_lightnings_loop(tmp_path, monkeypatch):
    """configs/default.yaml as the CLI builds it (progress bar, checkpoints, summary logger, its sharpness
    and kernel diagnostics), in minibatches, with and without the lean step."""
    import overparam.cli
    from overparam.cli import build_cli

    def run(name: str):
        cli = build_cli(["--trainer.max_epochs", "3", "--data.batch_size", "128", "--trainer.default_root_dir", str(tmp_path / name)])
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        return cli

    with torch.random.fork_rng():
        lean = run("lean")
        monkeypatch.setattr(overparam.cli, "use_lean_step", lambda trainer: trainer)
        stock = run("stock")
    assert lean.trainer.fit_loop.epoch_loop._hooks is not None and type(stock.trainer.fit_loop.epoch_loop) is not LeanTrainingEpochLoop
    assert lean.trainer.global_step == stock.trainer.global_step == 3 * 16
    for (name, a), (_, b) in zip(lean.model.state_dict().items(), stock.model.state_dict().items()):
        assert torch.equal(a, b), name

    def values(cli) -> dict:  # all but the diagnostics' own timings
        return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if not k.endswith("_seconds")}

    metrics = values(lean)
    assert metrics == values(stock)
    assert any(k.startswith("sharpness/") for k in metrics) and any(k.startswith("kernel/") for k in metrics)
