"""Teacher recovery: 1 for a student that contains the teacher's neurons, below 1 for a random one."""

import pytest
import torch

from callbacks.teacher import TeacherRecovery, match_neurons, teacher_recovery
from lightning_modules.nets.mlp import TwoLayerMLP


def test_student_containing_teacher_neurons_recovers_them():
    torch.manual_seed(0)
    teacher = TwoLayerMLP(6, 3, 1, "relu", bias=False, parameterization="ntk")
    student = TwoLayerMLP(6, 8, 1, "relu", bias=True, parameterization="standard")  # c1 = 1 vs the teacher's 1/√6
    slots = torch.tensor([5, 0, 2])
    with torch.no_grad():
        student.fc1.weight[slots] = 2.5 * teacher.fc1.weight * teacher.c1  # positive multiples of c1·w*
        student.fc1.bias[slots] = 0.0
        student.fc1.bias[1] = 3.0
    indices, cosines = match_neurons(student, teacher)
    assert indices.tolist() == slots.tolist()
    torch.testing.assert_close(cosines, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-6)
    assert teacher_recovery(student, teacher) == pytest.approx(1.0, abs=1e-6)


def test_flipped_neurons_count_only_for_sign_symmetric_activations():
    torch.manual_seed(0)
    for activation, expected in (("tanh", 1.0), ("relu", -1.0)):
        teacher = TwoLayerMLP(4, 1, 1, activation, bias=False)
        student = TwoLayerMLP(4, 1, 1, activation, bias=False)
        with torch.no_grad():
            student.fc1.weight.copy_(-teacher.fc1.weight)
        assert teacher_recovery(student, teacher) == pytest.approx(expected, abs=1e-6)


def test_random_student_is_below_one():
    torch.manual_seed(1)
    teacher, student = TwoLayerMLP(10, 4, 1, bias=False), TwoLayerMLP(10, 16, 1)
    assert -1.0 <= teacher_recovery(student, teacher) < 0.95


def test_bias_mismatch_lowers_the_cosine():
    torch.manual_seed(0)
    teacher = TwoLayerMLP(3, 1, 1, bias=False)
    student = TwoLayerMLP(3, 1, 1, bias=True)
    with torch.no_grad():
        student.fc1.weight.copy_(teacher.fc1.weight)
        student.fc1.bias.fill_(float(teacher.fc1.weight.norm() * teacher.c1))  # bias as large as c1‖w‖
    assert teacher_recovery(student, teacher) == pytest.approx(2**-0.5, abs=1e-6)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="student"):
        teacher_recovery(torch.nn.Linear(3, 1), TwoLayerMLP(3, 2, 1))
    with pytest.raises(ValueError, match="input_dim"):
        teacher_recovery(TwoLayerMLP(4, 2, 1), TwoLayerMLP(3, 2, 1))
    with pytest.raises(ValueError, match="every_n_epochs"):
        TeacherRecovery(every_n_epochs=-1)
