"""Teacher recovery: 1 for a student that contains the teacher's neurons, below 1 for a random one."""

import math

import pytest
import torch

from callbacks.teacher import (
    TeacherRecovery,
    match_neurons,
    match_students,
    stray_mass,
    student_min_max_cosine,
    teacher_recovery,
)
from datamodules.synthetic import TeacherStudent
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


# Student side: teacher/student_min_max_cosine and teacher/stray_mass on hand-built students.


def student_holding(teacher: TwoLayerMLP, width: int, slots: list[int], scale: float = 2.0) -> TwoLayerMLP:
    """A standard-parameterization student (c1 = c2 = 1) whose neurons ``slots`` are positive multiples of the
    teacher's neurons (bias included), with the teacher's output weights; every other neuron random, output weight 0."""
    student = TwoLayerMLP(teacher.input_dim, width, 1, teacher.activation, bias=True, parameterization="standard")
    with torch.no_grad():
        student.fc1.weight[slots] = scale * teacher.fc1.weight * teacher.c1
        student.fc1.bias.zero_()
        if teacher.fc1.bias is not None:
            student.fc1.bias[slots] = scale * teacher.fc1.bias
        student.fc2.weight.zero_()
        student.fc2.weight[0, slots] = teacher.fc2.weight[0] * teacher.c2
    return student


def test_student_holding_the_teacher_plus_zero_output_strays_is_fully_recovered():
    torch.manual_seed(0)
    teacher = TwoLayerMLP(6, 3, 1, "relu", bias=False, parameterization="ntk")
    student = student_holding(teacher, 9, [7, 1, 4])
    assert student_min_max_cosine(student, teacher) == pytest.approx(1.0, abs=1e-12)  # the six strays have a_j = 0
    assert stray_mass(student, teacher) == 0.0
    indices, cosines = match_students(student, teacher)
    assert indices[[7, 1, 4]].tolist() == [0, 1, 2]
    assert (cosines[[0, 2, 3, 5, 6, 8]] < 0.95).all()  # the strays point nowhere near a teacher neuron


def test_a_stray_carrying_output_weight_is_counted_in_closed_form():
    """A stray u = (0, ..., 0, 1) (zero weights, bias 1) is orthogonal to every unbiased teacher neuron: its best
    cosine is exactly 0, and its share of the mass is a_s / (Σ teacher |a| + a_s)."""
    torch.manual_seed(0)
    teacher = TwoLayerMLP(5, 3, 1, "relu", bias=False, parameterization="ntk")
    with torch.no_grad():
        teacher.fc2.weight.sign_()  # |a_i| c2 = 1/√3 each, as in TeacherStudent
    student = student_holding(teacher, 4, [0, 1, 2])
    for a_s, fraction, expected_cos in ((0.5, 0.1, 0.0), (0.5, 0.9, 1.0), (0.01, 0.1, 1.0)):
        with torch.no_grad():
            student.fc1.weight[3] = 0.0
            student.fc1.bias[3] = 1.0
            student.fc2.weight[0, 3] = -a_s  # the sign of an output weight does not matter, its size does
        assert student_min_max_cosine(student, teacher, weight_fraction=fraction) == pytest.approx(expected_cos, abs=1e-12)
        assert stray_mass(student, teacher) == pytest.approx(a_s / (3 * 3**-0.5 + a_s), rel=1e-6)  # float32 weights
    with torch.no_grad():
        student.fc2.weight.zero_()
    assert math.isnan(stray_mass(student, teacher))  # no mass to share


def test_match_cosine_decides_which_neurons_are_strays():
    """Student neuron u = (c1 w*, t) against the unbiased teacher neuron (c1 w*, 0): cosine ‖c1 w*‖ / √(‖c1 w*‖² + t²)
    = 0.9 for t = ‖c1 w*‖ √(1/0.81 − 1)."""
    torch.manual_seed(0)
    teacher = TwoLayerMLP(4, 1, 1, "tanh", bias=False, parameterization="ntk")
    with torch.no_grad():
        teacher.fc2.weight.fill_(1.0)  # c2 = 1 at width 1: output weight 1
    student = student_holding(teacher, 2, [0], scale=1.0)
    norm = float((teacher.fc1.weight.detach() * teacher.c1).norm())
    with torch.no_grad():
        student.fc1.weight[1] = teacher.fc1.weight[0] * teacher.c1
        student.fc1.bias[1] = norm * (1 / 0.81 - 1) ** 0.5
        student.fc2.weight[0, 1] = 3.0  # three times the teacher neuron's output weight 1
    assert match_students(student, teacher)[1][1].item() == pytest.approx(0.9, abs=1e-6)  # the bias is stored in float32
    assert stray_mass(student, teacher, match_cosine=0.95) == pytest.approx(0.75, rel=1e-12)
    assert stray_mass(student, teacher, match_cosine=0.85) == 0.0
    assert student_min_max_cosine(student, teacher) == pytest.approx(0.9, abs=1e-6)


def test_student_measures_match_a_brute_force_loop():
    """Random nets, two outputs, NTK parameterization: a_j = c2 ‖W2[:, j]‖ and the cosines by explicit loops."""
    torch.manual_seed(3)
    teacher = TwoLayerMLP(5, 3, 2, "relu", bias=True, parameterization="ntk")
    student = TwoLayerMLP(5, 7, 2, "relu", bias=True, parameterization="ntk")
    with torch.no_grad():
        teacher.fc1.bias.normal_()
        student.fc1.bias.normal_()

    def augmented(net: TwoLayerMLP, j: int) -> list[float]:
        return [float(v) * net.c1 for v in net.fc1.weight.detach()[j]] + [float(net.fc1.bias.detach()[j])]

    def cosine(u: list[float], v: list[float]) -> float:
        return sum(p * q for p, q in zip(u, v)) / math.sqrt(sum(p * p for p in u) * sum(q * q for q in v))

    best = [max(cosine(augmented(student, j), augmented(teacher, i)) for i in range(3)) for j in range(7)]
    a = [math.sqrt(sum(float(v) ** 2 for v in student.fc2.weight.detach()[:, j])) * 7**-0.5 for j in range(7)]
    big = [j for j in range(7) if a[j] >= 0.3 * max(a)]
    assert student_min_max_cosine(student, teacher, weight_fraction=0.3) == pytest.approx(min(best[j] for j in big), abs=1e-12)
    unmatched = sum(a[j] for j in range(7) if best[j] < 0.5)
    assert stray_mass(student, teacher, match_cosine=0.5) == pytest.approx(unmatched / sum(a), rel=1e-12)


def test_a_biased_teacher_is_matched_only_with_its_biases():
    """The augmented vectors (c1 w, b): a student copying the biased teacher's neurons recovers them; dropping the
    biases leaves cos = ‖c1 w*‖ / √(‖c1 w*‖² + b*²) for each."""
    data = TeacherStudent(dim=8, teacher_width=3, teacher_bias=True, seed=2)
    teacher = data.teacher
    student = student_holding(teacher, 6, [5, 3, 0])
    assert student_min_max_cosine(student, teacher) == pytest.approx(1.0, abs=1e-12)
    assert teacher_recovery(student, teacher) == pytest.approx(1.0, abs=1e-12)
    assert stray_mass(student, teacher) == 0.0
    with torch.no_grad():
        student.fc1.bias.zero_()
    norms = (teacher.fc1.weight.double() * teacher.c1).norm(dim=1)
    expected = norms / (norms**2 + teacher.fc1.bias.double() ** 2).sqrt()
    torch.testing.assert_close(match_neurons(student, teacher)[1], expected, rtol=0, atol=1e-12)
    assert student_min_max_cosine(student, teacher) == pytest.approx(float(expected.min()), abs=1e-12)


def test_student_side_errors_name_the_argument():
    teacher, student = TwoLayerMLP(3, 2, 1), TwoLayerMLP(3, 4, 1)
    with pytest.raises(ValueError, match="weight_fraction"):
        student_min_max_cosine(student, teacher, weight_fraction=0.0)
    with pytest.raises(ValueError, match="match_cosine"):
        stray_mass(student, teacher, match_cosine=1.5)
    with pytest.raises(ValueError, match="weight_fraction"):
        TeacherRecovery(weight_fraction=2.0)
    with pytest.raises(ValueError, match="match_cosine"):
        TeacherRecovery(match_cosine=-2.0)


# The biased teacher of datamodules.synthetic.TeacherStudent.


def test_biased_teacher_keeps_the_unbiased_teacher_and_draws_standard_normal_biases():
    plain = TeacherStudent(dim=16, teacher_width=4000, seed=7)
    biased = TeacherStudent(dim=16, teacher_width=4000, seed=7, teacher_bias=True)
    assert plain.teacher.fc1.bias is None and plain.teacher_bias is False
    assert torch.equal(biased.teacher.fc1.weight, plain.teacher.fc1.weight)
    assert torch.equal(biased.teacher.fc2.weight, plain.teacher.fc2.weight)
    assert torch.equal(biased.teacher.fc2.bias, torch.zeros(1))
    b = biased.teacher.fc1.bias.double()
    assert abs(float(b.mean())) < 0.07 and abs(float(b.std()) - 1) < 0.05  # 4000 draws: 4.4 and 4.5 standard errors
    assert not torch.equal(b, TeacherStudent(dim=16, teacher_width=4000, seed=8, teacher_bias=True).teacher.fc1.bias.double())


def test_biased_teacher_targets_match_the_formula_and_the_mean_its_closed_form():
    """y = (1/√m*) Σ_j a_j relu(w_j·x/√d + b_j); E[relu(z)] = s φ(b/s) + b Φ(b/s) for z ~ N(b, s²), s = ‖w_j‖/√d."""
    data = TeacherStudent(dim=8, teacher_width=4, teacher_bias=True, n_train=40000, n_test=10, seed=1)
    data.prepare_splits()
    x = data.train.x.double()
    w, b, a = (t.detach().double() for t in (data.teacher.fc1.weight, data.teacher.fc1.bias, data.teacher.fc2.weight[0]))
    y = (torch.relu(x @ w.T / 8**0.5 + b) @ a / 2)[:, None]  # (n, 1)
    torch.testing.assert_close(data.train.y.double(), y, rtol=1e-5, atol=1e-5)
    s = w.norm(dim=1) / 8**0.5
    normal = torch.distributions.Normal(0.0, 1.0)
    mean = float((a * (s * normal.log_prob(b / s).exp() + b * normal.cdf(b / s))).sum() / 2)
    assert float(y.mean()) == pytest.approx(mean, abs=4 * float(y.std()) / 40000**0.5)


def test_the_default_teacher_and_data_are_the_ones_drawn_before_teacher_bias_existed():
    """Pinned values (CPU generator, no arithmetic): the default must keep existing configs unchanged bit for bit."""
    data = TeacherStudent(dim=6, teacher_width=3, output_dim=2, noise_std=0.1, n_train=50, n_test=20, seed=0)
    data.prepare_splits()
    assert data.teacher.fc1.bias is None
    assert data.teacher.fc1.weight[0, :3].tolist() == [0.46809640526771545, -0.1577124446630478, 0.5627213716506958]
    assert data.teacher.fc2.weight.flatten().tolist() == [1.0, 1.0, -1.0, -1.0, 1.0, 1.0]
    assert data.train.x[0, :3].tolist() == [-1.1258398294448853, -1.152360200881958, -0.2505785822868347]
