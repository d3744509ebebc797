"""Teacher-neuron recovery, from both sides: does a student neuron point where each teacher neuron
points (teacher side), and does every student neuron that matters point at a teacher neuron (student side)?

A hidden neuron of f(x) = c2 W2 σ(c1 W1 x + b1) + b2 is the map x ↦ σ(c1 w_j·x + b_j); we compare
neurons by the cosine between their augmented vectors u_j = (c1 w_j, b_j) ∈ R^(d+1) (b_j = 0 for a
net without biases), so a student neuron recovers a teacher neuron when it computes the same
pre-activation up to a positive factor, bias included: a teacher with biases
(``TeacherStudent(teacher_bias=True)``) is matched only by a student neuron with the same ratio
b_j / ‖c1 w_j‖, and a student without biases cannot match a teacher neuron whose bias is not 0
(Goldt et al., 2019; Safran & Shamir, 2018). For odd σ (tanh, erf, linear) and even σ (quadratic),
−u is the same neuron up to the sign of its output weight, so the cosine is taken in absolute value
there. With C_ij = cos(u*_i, u_j) for teacher neuron i and student neuron j:

* teacher side (``teacher/min_max_cosine``): min_i max_j C_ij, 1 when every teacher neuron is present
  in the student;
* student side (``teacher/student_min_max_cosine``): min over the non-negligible student neurons j of
  max_i C_ij, where j is non-negligible when its output weight a_j = c2 ‖W2[:, j]‖₂ is at least
  ``weight_fraction`` × max_k a_k; 1 when every student neuron that carries output weight has converged
  to a teacher neuron (Zhou, Ge & Jin, 2021: below a loss threshold all student neurons do);
* stray mass (``teacher/stray_mass``): Σ_{j unmatched} a_j / Σ_j a_j, where student neuron j is
  *matched* when max_i C_ij ≥ ``match_cosine``; 0 when all output weight sits on matched neurons,
  1 when none is matched (a random student).

(A linear teacher's neurons are not identifiable, any rotation of them gives the same function;
these numbers are meaningless there.)
"""

from __future__ import annotations

import math
import time

import pytorch_lightning as pl
import torch
from typing_extensions import override

from callbacks.diagnostic import Diagnostic, module_net
from lightning_modules.checks import ConfigError, check_number
from lightning_modules.nets.mlp import TwoLayerMLP

#: Activations with σ(−z) = ±σ(z): a flipped neuron is the same neuron.
SIGN_SYMMETRIC = ("tanh", "erf", "linear", "quadratic")


def neuron_vectors(net: TwoLayerMLP) -> torch.Tensor:
    """(m, d + 1) rows u_j = (c1 w_j, b_j) in float64 on the CPU (b_j = 0 without bias)."""
    weight = net.fc1.weight.detach().to("cpu", torch.float64) * net.c1
    bias = net.fc1.bias.detach().to("cpu", torch.float64) if net.fc1.bias is not None else weight.new_zeros(len(weight))
    return torch.cat([weight, bias[:, None]], dim=1)


def output_weights(net: TwoLayerMLP) -> torch.Tensor:
    """(m,) a_j = c2 ‖W2[:, j]‖₂ in float64 on the CPU: the output weight (its size) of each hidden neuron."""
    return net.fc2.weight.detach().to("cpu", torch.float64).norm(dim=0) * net.c2


def neuron_cosines(student: TwoLayerMLP, teacher: TwoLayerMLP) -> torch.Tensor:
    """(m*, m) C_ij = cos(u*_i, u_j), in absolute value for a sign-symmetric teacher σ (module docstring).

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
    return cos.abs() if teacher.activation in SIGN_SYMMETRIC else cos


def match_neurons(student: TwoLayerMLP, teacher: TwoLayerMLP) -> tuple[torch.Tensor, torch.Tensor]:
    """For each teacher neuron, the best-matching student neuron and its cosine (module docstring).

    Returns:
        ``(indices, cosines)``, each of length teacher width.

    Raises:
        ConfigError: as :func:`neuron_cosines`.
    """
    best, indices = neuron_cosines(student, teacher).max(dim=1)
    return indices, best


def match_students(student: TwoLayerMLP, teacher: TwoLayerMLP) -> tuple[torch.Tensor, torch.Tensor]:
    """For each student neuron, the best-matching teacher neuron and its cosine max_i C_ij.

    Returns:
        ``(indices, cosines)``, each of length student width.

    Raises:
        ConfigError: as :func:`neuron_cosines`.
    """
    best, indices = neuron_cosines(student, teacher).max(dim=0)
    return indices, best


def teacher_recovery(student: TwoLayerMLP, teacher: TwoLayerMLP) -> float:
    """min over teacher neurons of the best cosine to any student neuron (``teacher/min_max_cosine``).

    Raises:
        ConfigError: as :func:`neuron_cosines`.
    """
    return float(match_neurons(student, teacher)[1].min())


def student_min_max_cosine(student: TwoLayerMLP, teacher: TwoLayerMLP, weight_fraction: float = 0.1) -> float:
    """min over non-negligible student neurons j of max_i C_ij (``teacher/student_min_max_cosine``).

    Student neuron j is non-negligible when a_j ≥ ``weight_fraction`` · max_k a_k, a_j = c2 ‖W2[:, j]‖₂
    (the largest neuron always is). Neurons whose output weight has decayed, the "zero-output strays"
    that a converged overparameterized student leaves behind, do not count.

    Raises:
        ConfigError: as :func:`neuron_cosines`; on a ``weight_fraction`` outside (0, 1].
    """
    check_number("weight_fraction", weight_fraction, 0.0, 1.0, strict_minimum=True)
    cosines = match_students(student, teacher)[1]
    a = output_weights(student)
    return float(cosines[a >= weight_fraction * a.max()].min())


def stray_mass(student: TwoLayerMLP, teacher: TwoLayerMLP, match_cosine: float = 0.95) -> float:
    """Share of the output-weight mass on unmatched student neurons (``teacher/stray_mass``):

        Σ_{j : max_i C_ij < match_cosine} a_j / Σ_j a_j,        a_j = c2 ‖W2[:, j]‖₂,

    in [0, 1]; nan when every output weight is 0 (no mass to share).

    Raises:
        ConfigError: as :func:`neuron_cosines`; on a ``match_cosine`` outside [−1, 1].
    """
    check_number("match_cosine", match_cosine, -1.0, 1.0)
    cosines = match_students(student, teacher)[1]
    a = output_weights(student)
    total = float(a.sum())
    return float(a[cosines < match_cosine].sum()) / total if total > 0 else math.nan


class TeacherRecovery(Diagnostic):
    """Logs ``teacher/min_max_cosine``, ``teacher/student_min_max_cosine``, ``teacher/stray_mass`` and
    ``diag/teacher_seconds`` at the start of training, after every ``every_n_epochs``-th epoch and at the
    end (see :class:`callbacks.diagnostic.Diagnostic`), with the teacher taken from ``trainer.datamodule.teacher``.

    Args:
        every_n_epochs: measure after every n-th training epoch.
        weight_fraction: a student neuron counts for ``teacher/student_min_max_cosine`` when its output weight
            is at least this fraction of the largest one.
        match_cosine: a student neuron is matched (outside ``teacher/stray_mass``) when its best cosine to a
            teacher neuron is at least this.

    Raises:
        ConfigError: on an ``every_n_epochs`` that is no positive integer, a ``weight_fraction`` outside (0, 1] or a
            ``match_cosine`` outside [−1, 1]; at fit start, when the DataModule has no ``teacher`` or the student
            is not a TwoLayerMLP.
    """

    def __init__(self, every_n_epochs: int = 1, weight_fraction: float = 0.1, match_cosine: float = 0.95) -> None:
        super().__init__(every_n_epochs)
        check_number("weight_fraction", weight_fraction, 0.0, 1.0, strict_minimum=True)
        check_number("match_cosine", match_cosine, -1.0, 1.0)
        self.weight_fraction, self.match_cosine = weight_fraction, match_cosine

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
        student, teacher = module_net(pl_module), trainer.datamodule.teacher
        values = {
            "teacher/min_max_cosine": teacher_recovery(student, teacher),
            "teacher/student_min_max_cosine": student_min_max_cosine(student, teacher, self.weight_fraction),
            "teacher/stray_mass": stray_mass(student, teacher, self.match_cosine),
        }
        return {**values, "diag/teacher_seconds": time.perf_counter() - start}
