"""Feedback-alignment angles: how close a learning rule's updates and feedback are to backprop's.

Two angles, in degrees, ∠(a, b) = arccos(⟨a, b⟩ / (‖a‖ ‖b‖)) on flattened tensors:

- ``update_vs_bp``: per layer, between the gradient the rule produces for the layer's parameters
  (weight and bias together) and the exact backprop gradient, on the same batch, mode and dropout
  mask. Layers whose own gradient is exact under the rule (the output layer) give 0.
- ``weight_vs_feedback``: per layer whose backward actually uses its feedback (its input needs a
  gradient, so not a layer fed by the data), between what backprop would send back and what the
  rule sends: W vs B for FA, W vs sign(W) for sign symmetry (Lillicrap et al., 2016); for DFA,
  B (input features, net outputs) vs Jᵀ with J = ∂f/∂x_l, the Jacobian of the net output with
  respect to the layer input averaged over the batch (= W for the output layer; Nøkland, 2016).

Comparing the representations two runs learn (FA vs GD on the same data): :func:`representation_angles`,
the angle between the flattened representation matrices and the principal angles between their spans.

In FA the angles start near 90° and fall as W comes to align with B. A backprop run has no
feedback matrices; as a control it is measured against fixed random B ~ N(0, 1), shape of W, one per
nn.Linear / nn.Conv2d layer, drawn from a seed: that angle stays near 90°.

The learning rules come from lightning_modules/learning_rules.py (``feedback_layers`` and ``backprop_mode``).
"""

from __future__ import annotations

import math
import time
from typing import Optional

import torch
from torch import nn
from typing_extensions import override

from callbacks.diagnostic import ProbeCallback
from callbacks.net_state import LossFn, preserved_state
from lightning_modules.learning_rules import backprop_mode, feedback_layers


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle between two tensors seen as vectors, in degrees (nan if either is zero).

    >>> angle_deg(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    45.0
    """
    a, b = a.detach().reshape(-1).double(), b.detach().reshape(-1).to(a.device).double()
    norms = a.norm() * b.norm()
    if norms == 0:
        return math.nan
    return round(math.degrees(math.acos(float((a @ b / norms).clamp(-1.0, 1.0)))), 10)


def _layer_grads(net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradient of each layer's trainable parameters (flattened, concatenated) after one backward."""
    loss_fn(net(x), y).backward()
    grads: dict[str, list[torch.Tensor]] = {}
    for name, p in net.named_parameters():
        if p.requires_grad and p.grad is not None:
            grads.setdefault(name.rpartition(".")[0] or name, []).append(p.grad.reshape(-1))
    return {layer: torch.cat(parts) for layer, parts in grads.items()}


def update_vs_backprop_angles(net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Per layer (module name), the angle between the rule's gradient and backprop's on ``(x, y)``.

    Both passes run in training mode from the same RNG state; modes, buffers, grads and RNG are restored.
    """
    with preserved_state(net, train=True):
        rule = _layer_grads(net, loss_fn, x, y)
    with preserved_state(net, train=True), backprop_mode(net):
        exact = _layer_grads(net, loss_fn, x, y)
    return {layer: angle_deg(rule[layer], exact[layer]) for layer in exact if layer in rule}


def random_feedback(net: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Control feedback for a backprop run: B ~ N(0, 1) with W's shape per nn.Linear / nn.Conv2d layer, from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    layers = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return {n: torch.randn(m.weight.shape, generator=generator, dtype=torch.float64).to(m.weight.device, m.weight.dtype) for n, m in layers}


def weight_vs_feedback_angles(net: nn.Module, x: torch.Tensor, feedback: Optional[dict[str, torch.Tensor]] = None) -> dict[str, float]:
    """Per layer whose feedback is used, the angle between backprop's feedback and the rule's (module docstring).

    Args:
        net: a net converted by ``apply_rule`` (or any net, with ``feedback`` given).
        x: a batch; it decides which layers send a gradient to their input and gives the DFA Jacobian.
        feedback: layer name -> B of W's shape to use instead of the layers' own (the backprop control).
    """
    modules = dict(net.named_modules())
    matrices = feedback if feedback is not None else {n: m.feedback for n, m in feedback_layers(net).items()}
    inputs: dict[str, torch.Tensor] = {}
    hooks = [modules[n].register_forward_pre_hook(lambda m, args, n=n: inputs.__setitem__(n, args[0])) for n in matrices]
    angles = {}
    try:
        with preserved_state(net, train=True), backprop_mode(net), torch.enable_grad():
            out = net(x).flatten(1)  # (n, k)
            for name, b in matrices.items():
                inp = inputs.get(name)
                if b is None or inp is None or not inp.requires_grad:
                    continue  # the layer sends nothing back (e.g. the first layer): its feedback is unused
                weight = modules[name].weight
                if b.shape == weight.shape:  # fa, sign symmetry, control: W vs B
                    angles[name] = angle_deg(weight, b)
                else:  # dfa: B (input features, k) vs the batch-mean Jacobian ∂f/∂x_l, transposed
                    cols = [torch.autograd.grad(out[:, j].sum(), inp, retain_graph=True)[0].flatten(1).mean(0) for j in range(out.shape[1])]
                    angles[name] = angle_deg(torch.stack(cols, dim=1), b)
    finally:
        for hook in hooks:
            hook.remove()
    return angles


def principal_angles_deg(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-7) -> torch.Tensor:
    """Principal angles between the column spaces of ``a`` (n, p) and ``b`` (n, q), in degrees, ascending.

    With orthonormal bases Q_a (n, r_a), Q_b (n, r_b) of the two spans (from an SVD; singular values
    below ``rtol`` · the largest count as zero), cos θ_i = σ_i(Q_aᵀ Q_b), i = 1..min(r_a, r_b)
    (Björck & Golub, 1973): θ_1 = min over unit u ∈ span(a), v ∈ span(b) of ∠(u, v). All angles are 0
    iff one span contains the other; the largest is 90° iff some direction of the smaller span is
    orthogonal to the other. Computed in float64.

    >>> principal_angles_deg(torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0], [1.0]])).tolist()
    [45.0]
    """

    def basis(m: torch.Tensor) -> torch.Tensor:
        u, s, _ = torch.linalg.svd(m.detach().double().cpu(), full_matrices=False)
        return u[:, s > rtol * s.max()] if s.numel() and s.max() > 0 else u[:, :0]

    cosines = torch.linalg.svdvals(basis(a).T @ basis(b)).clamp(-1.0, 1.0)  # descending
    return torch.rad2deg(torch.arccos(cosines)).round(decimals=10)


def representation_angles(h_a: torch.Tensor, h_b: torch.Tensor) -> dict[str, float]:
    """How far apart two representations of the same n inputs are; ``h_a``, ``h_b`` of shape (n, r).

    For the inner representation H = X W1ᵀ (n, r) of a factorization f(x) = W2 W1 x trained two ways:

    - ``flat_deg``: ∠(vec H_a, vec H_b) = arccos(tr(H_aᵀ H_b) / (‖H_a‖_F ‖H_b‖_F)), the angle between the
      matrices as vectors; 90° when the r inner units of one run are orthogonal, unit by unit, to those of
      the other (Garg & Vempala: FA's and GD's representations "can be almost orthogonal").
    - ``max_principal_deg``: the largest principal angle between the column spans of H_a and H_b (subspaces
      of Rⁿ, :func:`principal_angles_deg`); 0 when both runs represent the same subspace of functions
      of the data, whatever basis of it their units use (H_a = H_b A for an invertible r × r A).
    """
    return {"flat_deg": angle_deg(h_a, h_b), "max_principal_deg": float(principal_angles_deg(h_a, h_b).max())}


class FeedbackAlignment(ProbeCallback):
    """Logs, at the start of training, after every ``every_n_epochs``-th epoch and at the end (see
    :class:`callbacks.diagnostic.Diagnostic`), on a fixed probe batch of the training set:
    ``alignment/update_vs_bp_deg/<layer>`` (converted nets only), ``alignment/weight_vs_feedback_deg/<layer>``,
    their mean over layers ``alignment/weight_vs_feedback_deg``, and ``diag/alignment_seconds``.

    For a backprop run the W-vs-B angles are against fixed random B drawn from ``seed`` (a control
    that stays near 90°); they are checkpointed with the probe indices.

    Args:
        every_n_epochs: how often to measure.
        probe_size: probe samples (``None`` = the whole training set).
        seed: draws the probe subset and the control feedback.

    Raises:
        ConfigError: on an ``every_n_epochs`` or ``probe_size`` that is no positive integer.
    """

    def __init__(self, every_n_epochs: int = 1, probe_size: Optional[int] = 256, seed: int = 0) -> None:
        super().__init__(every_n_epochs, probe_size, seed)
        self.control: Optional[dict[str, torch.Tensor]] = None

    def measure(self, net: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The logged values for one call (no Lightning involved)."""
        start = time.perf_counter()
        values = {}
        if feedback_layers(net):
            values.update({f"alignment/update_vs_bp_deg/{n}": a for n, a in update_vs_backprop_angles(net, loss_fn, x, y).items()})
            per_layer = weight_vs_feedback_angles(net, x)
        else:
            if self.control is None:
                self.control = random_feedback(net, self.seed)
            per_layer = weight_vs_feedback_angles(net, x, {n: b.to(x.device) for n, b in self.control.items()})
        values.update({f"alignment/weight_vs_feedback_deg/{n}": a for n, a in per_layer.items()})
        if per_layer:
            values["alignment/weight_vs_feedback_deg"] = sum(per_layer.values()) / len(per_layer)
        values["diag/alignment_seconds"] = time.perf_counter() - start
        return values

    @override
    def state_dict(self) -> dict:
        return {**super().state_dict(), "control": self.control}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.control = state_dict.get("control")
