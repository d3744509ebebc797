"""When diagnostics and whole-set metrics are measured and at which step they are logged: before the
first update (step 0, the initial weights), after every ``every_n_epochs``-th epoch and at the end of
training, each at the global step whose weights it measured; a resumed run continues on the same steps."""

from __future__ import annotations

import copy
import inspect
import os
import signal

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from quiet_trainer import quiet_trainer

from callbacks.alignment import FeedbackAlignment
from callbacks.flatness import Flatness
from callbacks.gaps import TrainTestGap
from callbacks.kernel import KernelDrift
from callbacks.replica import ReplicaDistance
from callbacks.sgd_noise import GradientNoise
from callbacks.sharpness import HessianSharpness, hessian_top_eigs
from callbacks.teacher import TeacherRecovery
from datamodules.synthetic import GaussianMixture, TeacherStudent
from lightning_modules import losses
from lightning_modules.module import SupervisedModule
from lightning_modules.nets.mlp import TwoLayerMLP
from overparam.checkpoint import LastCheckpoint

pytestmark = pytest.mark.usefixtures("one_thread")


class Capture(Logger):
    """Keeps every logged scalar as ``(step, tag, value)``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[int, str, float]] = []

    @property
    def name(self) -> str:
        return "capture"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.events += [(step, tag, float(value)) for tag, value in metrics.items()]

    def steps(self, tag: str) -> list[int]:
        return [s for s, t, _ in self.events if t == tag]

    def series(self, tag: str) -> list[tuple[int, float]]:
        return [(s, v) for s, t, v in self.events if t == tag]


class SigtermAt(pl.Callback):
    """Sends SIGTERM to this process after batch ``batch`` of epoch ``epoch`` (Lightning's handler turns it
    into a SIGTERMException once the batch is complete, as on a preempted cluster job)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)  # Lightning's handler
            os.kill(os.getpid(), signal.SIGTERM)


def trainer(logger: Capture, callbacks: list, max_epochs: int, root) -> pl.Trainer:
    return quiet_trainer(max_epochs=max_epochs, logger=logger, callbacks=callbacks, default_root_dir=root)


def test_every_diagnostic_measures_at_init_every_n_epochs_and_at_the_last_step(tmp_path):
    data = TeacherStudent(dim=4, teacher_width=2, n_train=32, n_test=16, batch_size=None, seed=0)  # full batch: one step per epoch
    model = SupervisedModule(TwoLayerMLP(4, 8, 1, "tanh"), lr=0.2, replicas=2, seed=0)
    callbacks = [
        HessianSharpness(every_n_epochs=3),
        KernelDrift(every_n_epochs=3, probe_size=None),
        FeedbackAlignment(every_n_epochs=3),
        TeacherRecovery(every_n_epochs=3),
        ReplicaDistance(every_n_epochs=3),
        GradientNoise(every_n_epochs=3),
        Flatness(every_n_epochs=3),
        TrainTestGap(),
    ]
    logger = Capture()
    trainer(logger, callbacks, 7, tmp_path).fit(model, datamodule=data)

    for tag in (
        "sharpness/lambda_max",
        "kernel/drift",
        "alignment/weight_vs_feedback_deg",
        "teacher/min_max_cosine",
        "replica/distance",
        "sgd/noise_trace",
        "flatness/perturbed_loss_increase",
        "diag/sharpness_seconds",
    ):
        assert logger.steps(tag) == [0, 3, 6, 7], tag  # init, after epochs 3 and 6, and the last step
    assert logger.steps("train/loss") == list(range(8)) and logger.steps("gap/loss") == list(range(8))

    initial = SupervisedModule(TwoLayerMLP(4, 8, 1, "tanh"), seed=0).net  # the same init, untrained
    x, y = data.train.x, data.train.y
    with torch.no_grad():
        initial_loss = losses.mean_loss("mse", initial(x), y).item()
    assert logger.series("train/loss")[0] == (0, pytest.approx(initial_loss, rel=1e-6))
    assert logger.series("kernel/drift")[0] == (0, 0.0)  # exactly: K_0 is measured on the initial weights
    assert logger.series("weights/rel_change/fc1.weight")[0] == (0, 0.0)
    eigs, _ = hessian_top_eigs(initial, model.loss_fn, x, y)
    assert logger.series("sharpness/lambda_max")[0] == (0, pytest.approx(float(eigs[0]), rel=1e-6))
    assert logger.series("kernel/drift")[-1][1] > 0


def test_a_resumed_run_logs_at_the_same_steps_and_values_as_an_uninterrupted_one(tmp_path):
    """Minibatches (2 steps per epoch), every 2 epochs for 5 epochs: diagnostics at steps 0, 4, 8, 10.
    A SIGTERM after step 5 (mid-epoch) and a resume from last.ckpt must neither measure step 0 (or 5)
    again nor shift the cadence."""

    def run(max_epochs: int, extra: list, ckpt_path=None) -> Capture:
        pl.seed_everything(0, verbose=False)
        data = GaussianMixture(dim=4, n_train=32, n_test=16, batch_size=16, seed=0)
        model = SupervisedModule(TwoLayerMLP(4, 8, 1, "tanh"), lr=0.2, momentum=0.9, seed=0)
        logger = Capture()
        callbacks = [HessianSharpness(every_n_epochs=2), KernelDrift(every_n_epochs=2, probe_size=16), TrainTestGap(), *extra]
        fit = lambda: trainer(logger, callbacks, max_epochs, tmp_path / "cut").fit(model, datamodule=data, ckpt_path=ckpt_path)  # noqa: E731
        if any(isinstance(c, SigtermAt) for c in extra):
            with pytest.raises(SIGTERMException):
                fit()
        else:
            fit()
        return logger

    tags = ("sharpness/lambda_max", "kernel/drift", "kernel/lambda_min", "train/loss", "test/acc", "gap/loss")
    full = run(5, [])
    assert full.steps("kernel/drift") == [0, 4, 8, 10] and full.steps("train/loss") == full.steps("gap/loss") == [0, 2, 4, 6, 8, 10]
    first = run(5, [SigtermAt(epoch=2, batch=0), LastCheckpoint(every_n_epochs=0)])
    assert first.steps("kernel/drift") == [0, 4] and first.steps("train/loss") == [0, 2, 4]
    second = run(5, [LastCheckpoint(every_n_epochs=0)], ckpt_path=tmp_path / "cut" / "checkpoints" / "last.ckpt")
    for tag in tags:
        assert first.series(tag) + second.series(tag) == full.series(tag), tag


def diagnostics() -> list[type]:
    """Every diagnostics callback of the suite: the classes in callbacks/ that measure (``compute``) on the
    schedule of callbacks.diagnostic.Diagnostic, found by importing the package (so a new one is included)."""
    from callbacks.diagnostic import Diagnostic
    from overparam.cli import import_suite

    found = {c for c in import_suite().values() if issubclass(c, Diagnostic) and c.compute is not Diagnostic.compute}
    bases = {c for c in found if any(o is not c and issubclass(o, c) for o in found)}  # ProbeCallback: a building block
    return sorted(found - bases, key=lambda c: c.__name__)


def special_settings() -> dict[str, tuple]:
    """The diagnostics that measure only a particular net or data: (net, data, steps measured) for each; the
    others all run on the shared setting of the test below."""
    from datamodules.synthetic import LinearGaussian, SparseParity
    from lightning_modules.nets.random_features import LinearModel

    return {
        # the analytic NTK of a two-layer NTK-parameterized net, once at the start
        "KernelRidgeBaseline": (TwoLayerMLP(4, 8, 1, "tanh", parameterization="ntk", dropout=0.25), None, [0]),
        # the exact excess risk of a linear model on data of known covariance
        "ExcessRisk": (LinearModel(6), LinearGaussian(dim=6, n_spikes=2, n_train=32, n_test=16, batch_size=8, seed=0), [0, 8, 12]),
        # the first layer's weight on the hidden support of a sparse parity
        "SupportWeight": (
            TwoLayerMLP(8, 8, 1, dropout=0.25),
            SparseParity(n=8, k=2, n_train=32, n_test=16, batch_size=8, seed=0),
            [0, 8, 12],
        ),
    }


@pytest.mark.parametrize("group", ["shared", "KernelRidgeBaseline", "ExcessRisk", "SupportWeight"])
def test_every_diagnostic_leaves_the_weights_and_the_rng_bit_identical(tmp_path, group):
    """Dropout makes every training step draw from the global RNG, so a diagnostic that consumed a random
    number, left a gradient, a mode or a weight changed, would change the trajectory (and the RNG state after
    training, with or without dropout); with minibatches (GradientNoise), two replicas (ReplicaDistance) and a
    teacher (TeacherRecovery) every one of them measures. Diagnostics that need their own net or data run in
    theirs (``special_settings``); every other one of callbacks/ runs in the shared setting."""
    classes, special = diagnostics(), special_settings()
    assert {"HessianSharpness", "KernelDrift", "FeedbackAlignment", "TeacherRecovery", "ReplicaDistance", "GradientNoise", "Flatness"} <= {
        c.__name__ for c in classes
    }
    assert set(special) <= {c.__name__ for c in classes}
    if group == "shared":
        chosen, steps = [c for c in classes if c.__name__ not in special], [0, 8, 12]
    else:
        chosen, steps = [c for c in classes if c.__name__ == group], special[group][2]

    def run(callbacks: list) -> tuple[dict, torch.Tensor, Capture]:
        pl.seed_everything(0, verbose=False)
        net, data, _ = special.get(group, (None, None, None))
        data = data or TeacherStudent(dim=4, teacher_width=2, n_train=32, n_test=16, batch_size=8, seed=0)
        net = copy.deepcopy(net) if net is not None else TwoLayerMLP(4, 8, 1, "tanh", dropout=0.25)
        model = SupervisedModule(net, lr=0.1, momentum=0.9, replicas=2 if group == "shared" else 1, seed=0)
        logger = Capture()
        trainer(logger, [*callbacks, TrainTestGap()], 3, tmp_path).fit(model, datamodule=copy.deepcopy(data))
        return {k: v.clone() for k, v in model.state_dict().items()}, torch.get_rng_state(), logger

    def build(cls: type):
        accepted = inspect.signature(cls.__init__).parameters
        return cls(every_n_epochs=2) if "every_n_epochs" in accepted else cls()

    plain, plain_rng, _ = run([])
    watched, watched_rng, logger = run([build(cls) for cls in chosen])
    assert torch.equal(plain_rng, watched_rng)
    assert plain.keys() == watched.keys() and all(torch.equal(plain[k], watched[k]) for k in plain)
    timed = sorted({t for _, t, _ in logger.events if t.startswith("diag/") and t.endswith("_seconds")})
    assert len(timed) == len(chosen), timed  # each diagnostic measured ...
    assert all(logger.steps(t) == steps for t in timed)  # ... at init, after epoch 2 (4 steps each) and at the end
