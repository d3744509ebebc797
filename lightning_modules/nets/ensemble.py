"""E independently initialized copies of one net, stored and evaluated as one stacked model.

    f_k(x) = net(x; θ_k),  k = 0 … E−1,    output (E, n, k_out)

Every parameter and buffer of the member nets is one tensor of shape (E, ...): entry k holds member
k's. The forward pass runs the net's own ``forward`` once under ``torch.vmap`` over the members
(``torch.func.functional_call`` on a template of the net), so the matmuls of all members are
batched. Members share nothing; the sum of their losses has each member's own gradient in its
slice, and an elementwise optimizer (SGD with momentum and weight decay, Adam) on the stacked
tensors takes for every member exactly the step it would take alone.

Feedback alignment: a member converted by ``apply_rule(member, "fa", scale, seed_k)`` keeps its
feedback matrix B as the buffer ``feedback_weight``; it is stacked like the weights, and the
template's FA layers compute y = x Wᵀ + b with ∂W = gᵀx, ∂b = Σ g and g B sent to the input, in an
autograd.Function that vmap can batch.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lightning_modules.learning_rules import FeedbackLinear, feedback_layers


class _FeedbackAlignmentLinear(torch.autograd.Function):
    """y = x Wᵀ + b; backward: ∂W = gᵀx, ∂b = Σ g (true) and g B for x (vmap-able: setup_context form)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, feedback):
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, feedback = inputs
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, g):
        x, feedback = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])  # (n, out), (n, in)
        grad_x = g @ feedback if need_x else None  # g B
        grad_w = g2.T @ x2 if need_w else None  # (out, in)
        grad_b = g2.sum(0) if ctx.has_bias and need_b else None
        return grad_x, grad_w, grad_b, None


class _StackedFeedbackLinear(FeedbackLinear):
    """The template's form of an FA layer: plain forward without gradients, else the FA function above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exact_backprop or not torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        return _FeedbackAlignmentLinear.apply(x, self.weight, self.bias, self.feedback_weight)


def _name(dotted: str) -> str:
    return dotted.replace(".", "__")  # ParameterDict keys may not hold dots


class StackedEnsemble(nn.Module):
    """E member nets as one model: ``forward(x)`` is (E, n, k), member k's output in row k.

    Args:
        members: E nets of one architecture (same parameter and buffer names and shapes), already
            initialized (and converted by ``apply_rule``) as each would be in a run of its own. Their
            tensors are copied; the members themselves are not kept.

    Raises:
        ValueError: when the members differ in their parameters or buffers, or a layer uses a rule other than fa.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("Expected argument `members` to hold at least one net but got none")
        first = members[0]
        for layer in feedback_layers(first).values():
            if type(layer) is not FeedbackLinear or layer.rule != "fa":
                raise ValueError(f"Expected the ensemble's converted layers to be fa Linear layers but got {layer!r}")
        named = [dict(m.named_parameters()) for m in members]
        buffers = [dict(m.named_buffers()) for m in members]
        for m_params, m_buffers in zip(named, buffers):
            if {k: v.shape for k, v in m_params.items()} != {k: v.shape for k, v in named[0].items()} or {
                k: v.shape for k, v in m_buffers.items()
            } != {k: v.shape for k, v in buffers[0].items()}:
                raise ValueError("Expected the ensemble's members to share one architecture but their parameters differ")
        self.size = len(members)
        self.param_names = list(named[0])
        self.buffer_names = list(buffers[0])
        self.params = nn.ParameterDict(
            {
                _name(k): nn.Parameter(torch.stack([p[k].detach() for p in named]).clone(), requires_grad=named[0][k].requires_grad)
                for k in self.param_names
            }
        )  # (E, ...) each
        for k in self.buffer_names:
            self.register_buffer(f"buffer__{_name(k)}", torch.stack([b[k].detach() for b in buffers]).clone())
        template = copy.deepcopy(first).to("meta")  # structure only: functional_call supplies every tensor
        for layer in feedback_layers(template).values():
            layer.__class__ = _StackedFeedbackLinear
        object.__setattr__(self, "template", template)  # not a submodule: no parameters, no device moves

    def stacked_parameters(self) -> dict[str, torch.Tensor]:
        """Member parameter name (as in the member net) -> the (E, ...) tensor."""
        return {k: self.params[_name(k)] for k in self.param_names}

    def stacked_buffers(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"buffer__{_name(k)}") for k in self.buffer_names}

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters and buffers under the member net's names (detached views)."""
        return {name: t[k].detach() for name, t in {**self.stacked_parameters(), **self.stacked_buffers()}.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.template.train(self.training)

        def member(params: dict, buffers: dict, x_: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (params, buffers), (x_,))

        return torch.vmap(member, in_dims=(0, 0, None))(self.stacked_parameters(), self.stacked_buffers(), x)  # (E, n, k)

    def extra_repr(self) -> str:
        return f"members={self.size}, net={type(self.template).__name__}"
