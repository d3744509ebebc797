"""Teacher-neuron recovery: does some student neuron point where each teacher neuron points?

A hidden neuron of f(x) = c2 W2 σ(c1 W1 x + b1) + b2 is the map x ↦ σ(c1 w_j·x + b_j); we compare
neurons by the cosine between their augmented vectors u_j = (c1 w_j, b_j) (b_j = 0 for a net
without biases), so a student neuron recovers a teacher neuron when it computes the same
pre-activation up to a positive factor (Goldt et al., 2019; Safran & Shamir, 2018). For odd σ
(tanh, erf, linear) and even σ (quadratic), −u is the same neuron up to the sign of its output
weight, so the cosine is taken in absolute value there. The recovery is

    min over teacher neurons i of  max over student neurons j of  cos(u*_i, u_j),

1 when every teacher neuron is present in the student. (A linear teacher's neurons are not
identifiable, any rotation of them gives the same function; the number is meaningless there.)
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from typing_extensions import override

from callbacks.diagnostic import Diagnostic, module_net
from lightning_modules.checks import ConfigError
from lightning_modules.nets.mlp import TwoLayerMLP

#: Activations with σ(−z) = ±σ(z): a flipped neuron is the same neuron.
SIGN_SYMMETRIC = ("tanh", "erf", "linear", "quadratic")


def neuron_vectors(net: TwoLayerMLP) -> torch.Tensor:
    """(m, d + 1) rows u_j = (c1 w_j, b_j) in float64 on the CPU (b_j = 0 without bias)."""
    weight = net.fc1.weight.detach().to("cpu", torch.float64) * net.c1
    bias = net.fc1.bias.detach().to("cpu", torch.float64) if net.fc1.bias is not None else weight.new_zeros(len(weight))
    return torch.cat([weight, bias[:, None]], dim=1)


def match_neurons(student: TwoLayerMLP, teacher: TwoLayerMLP) -> tuple[torch.Tensor, torch.Tensor]:
    """For each teacher neuron, the best-matching student neuron and its cosine (module docstring).

    Returns:
        ``(indices, cosines)``, each of length teacher width.

    Raises:
        ConfigError: when either net is not a TwoLayerMLP or the input dimensions differ.
    """
    for name, net in (("student", student), ("teacher", teacher)):
        if not isinstance(net, TwoLayerMLP):
            raise ConfigError(f"Expected argument `{name}` to be a TwoLayerMLP but got {type(net).__name__}")
    if student.input_dim != teacher.input_dim:
        raise ConfigError(f"Expected argument `student` to have input_dim {teacher.input_dim} (the teacher's) but got {student.input_dim}")
    u_teacher, u_student = neuron_vectors(teacher), neuron_vectors(student)
    cos = torch.nn.functional.normalize(u_teacher, dim=1) @ torch.nn.functional.normalize(u_student, dim=1).T  # (m*, m)
    if teacher.activation in SIGN_SYMMETRIC:
        cos = cos.abs()
    best, indices = cos.max(dim=1)
    return indices, best


def teacher_recovery(student: TwoLayerMLP, teacher: TwoLayerMLP) -> float:
    """min over teacher neurons of the best cosine to any student neuron (``teacher/min_max_cosine``).

    Raises:
        ConfigError: as :func:`match_neurons`.
    """
    return float(match_neurons(student, teacher)[1].min())


class TeacherRecovery(Diagnostic):
    """Logs ``teacher/min_max_cosine`` and ``diag/teacher_seconds`` at the start of training, after every
    ``every_n_epochs``-th epoch and at the end (see :class:`callbacks.diagnostic.Diagnostic`), with the
    teacher taken from ``trainer.datamodule.teacher``.

    Raises:
        ConfigError: on an ``every_n_epochs`` that is no positive integer; at fit start, when the DataModule has no ``teacher``
            or the student is not a TwoLayerMLP.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        super().__init__(every_n_epochs)

    def check_fit(self, pl_module: pl.LightningModule, data) -> None:
        """Raise ``ConfigError`` unless ``data`` has a ``teacher`` and the module's net is a TwoLayerMLP
        of the teacher's input size (the CLI calls this before any log is written)."""
        super().check_fit(pl_module, data)
        if getattr(data, "teacher", None) is None:
            raise ConfigError(
                f"Expected a DataModule with a `teacher` (e.g. datamodules.synthetic.TeacherStudent) for TeacherRecovery but got {type(data).__name__}"
            )
        match_neurons(module_net(pl_module), data.teacher)  # raises on a student that is no TwoLayerMLP

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        start = time.perf_counter()
        value = teacher_recovery(module_net(pl_module), trainer.datamodule.teacher)
        return {"teacher/min_max_cosine": value, "diag/teacher_seconds": time.perf_counter() - start}
