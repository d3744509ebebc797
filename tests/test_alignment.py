"""Alignment angles: FA (and DFA) with feedback tied to the weights is backprop, so every angle is 0°;
random feedback is far from it; a backprop control stays near 90°."""

import copy
import math

import pytest
import torch

from callbacks.alignment import (
    FeedbackAlignment,
    angle_deg,
    random_feedback,
    update_vs_backprop_angles,
    weight_vs_feedback_angles,
)
from callbacks.kernel import empirical_ntk
from callbacks.sharpness import hessian_top_eigs
from lightning_modules.learning_rules import apply_rule
from lightning_modules.nets.mlp import TwoLayerMLP
from tests.diag_cases import mse


def problem(rule: str, seed: int = 0):
    torch.manual_seed(seed)
    net = apply_rule(TwoLayerMLP(5, 32, 3, "tanh").double(), rule, seed=seed)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    return net, x, y


def test_angle_deg():
    assert angle_deg(torch.tensor([1.0, 0.0]), torch.tensor([0.0, -2.0])) == pytest.approx(90.0)
    assert angle_deg(torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -2.0])) == pytest.approx(180.0)


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_tied_feedback_gives_zero_angles(rule):
    net, x, y = problem(rule)
    with torch.no_grad():  # fa: B = W; dfa (two-layer net): B of fc2 = W2ᵀ
        net.fc2.feedback.copy_(net.fc2.weight if rule == "fa" else net.fc2.weight.T)
    updates = update_vs_backprop_angles(net, mse, x, y)
    assert set(updates) == {"fc1", "fc2"}
    assert all(a == pytest.approx(0.0, abs=1e-5) for a in updates.values()), updates
    feedback = weight_vs_feedback_angles(net, x)
    assert set(feedback) == {"fc2"}  # fc1 sends nothing back to the data
    assert feedback["fc2"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("rule", ["fa", "dfa", "sign_symmetry"])
def test_untied_feedback_gives_large_angles_and_restores_state(rule):
    net, x, y = problem(rule)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    rng = torch.get_rng_state()
    updates = update_vs_backprop_angles(net, mse, x, y)
    assert updates["fc2"] == pytest.approx(0.0, abs=1e-5)  # the output layer's own gradient is exact
    assert updates["fc1"] > 10.0
    assert weight_vs_feedback_angles(net, x)["fc2"] > (10.0 if rule == "sign_symmetry" else 45.0)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_backprop_control_is_near_ninety_degrees():
    torch.manual_seed(0)
    net = TwoLayerMLP(5, 256, 10, "relu")
    x, y = torch.randn(16, 5), torch.randn(16, 10)
    callback = FeedbackAlignment(seed=3)
    values = callback.measure(net, mse, x, y)
    assert not any(k.startswith("alignment/update_vs_bp_deg") for k in values)
    assert 80.0 < values["alignment/weight_vs_feedback_deg"] < 100.0
    assert values["alignment/weight_vs_feedback_deg"] == values["alignment/weight_vs_feedback_deg/fc2"]
    restored = FeedbackAlignment(seed=99)
    restored.load_state_dict(callback.state_dict())
    assert restored.measure(net, mse, x, y)["alignment/weight_vs_feedback_deg"] == values["alignment/weight_vs_feedback_deg"]
    assert torch.equal(random_feedback(net, 3)["fc2"], callback.control["fc2"])


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_callback_logs_the_angles_of_a_surrogate_gradient_with_b_in_place_of_w(rule):
    """Reference: the rule's update of fc1 is the gradient of ⟨e, c2·σ(x)·Bᵀ⟩ (fa; ⟨e, c2·σ(x)·B⟩ for dfa,
    whose B is (width, outputs)) with e = ∂L/∂f held fixed: backprop's with W2 replaced by B."""
    net, x, y = problem(rule)
    net(x.requires_grad_()).sum().backward()  # dfa draws its B at the first pass with gradients
    x = x.detach()
    net.zero_grad()
    values = FeedbackAlignment().measure(net, mse, x, y)

    fc1 = [net.fc1.weight, net.fc1.bias]
    out = net(x)
    (error,) = torch.autograd.grad(mse(out, y), out)  # e = ∂L/∂f
    b = net.fc2.feedback.detach()
    sent_back = net.features(x) @ (b.T if rule == "fa" else b) * net.c2  # what the output layer sends down, through B
    rule_update = torch.cat([g.reshape(-1) for g in torch.autograd.grad((error * sent_back).sum(), fc1)])
    exact_sent_back = net.features(x) @ net.fc2.weight.detach().T * net.c2  # backprop: through W2 itself
    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad((error * exact_sent_back).sum(), fc1)])
    expected = math.degrees(math.acos(float(rule_update @ exact / (rule_update.norm() * exact.norm()))))
    assert values["alignment/update_vs_bp_deg/fc1"] == pytest.approx(expected, abs=1e-6)
    assert values["alignment/update_vs_bp_deg/fc1"] > 10  # random feedback: far from backprop at init
    assert values["alignment/update_vs_bp_deg/fc2"] == pytest.approx(0.0, abs=1e-5)  # the output layer's gradient is exact
    w2 = net.fc2.weight.detach().reshape(-1)
    if rule == "fa":  # W2 against B
        reference = w2 @ b.reshape(-1) / (w2.norm() * b.norm())
    else:  # dfa: B against ∂f/∂h averaged over the batch, c2·W2ᵀ for the output layer
        reference = w2 @ b.T.reshape(-1) / (w2.norm() * b.norm())
    assert values["alignment/weight_vs_feedback_deg/fc2"] == pytest.approx(math.degrees(math.acos(float(reference))), abs=1e-6)
    assert values["alignment/weight_vs_feedback_deg"] == values["alignment/weight_vs_feedback_deg/fc2"]  # the mean over one layer
    assert values["diag/alignment_seconds"] >= 0
    assert all(p.grad is None for p in net.parameters())  # measuring left no gradient behind


def test_callback_validates_arguments():
    with pytest.raises(ValueError, match="every_n_epochs"):
        FeedbackAlignment(every_n_epochs=0)


@pytest.mark.parametrize("rule", ["fa", "dfa"])
def test_hessian_and_ntk_of_a_converted_net_are_the_plain_nets(rule):
    """Sharpness and NTK are properties of the loss and the net, not of the rule that trains it."""
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    converted = apply_rule(copy.deepcopy(plain), rule)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    converted(x.requires_grad_()).sum().backward()  # dfa draws its B at the first pass with gradients
    x = x.detach()
    torch.testing.assert_close(
        hessian_top_eigs(converted, mse, x, y, k=2, tol=1e-10)[0], hessian_top_eigs(plain, mse, x, y, k=2, tol=1e-10)[0]
    )
    torch.testing.assert_close(empirical_ntk(converted, x), empirical_ntk(plain, x))
