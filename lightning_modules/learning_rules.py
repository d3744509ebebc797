"""Learning rules: how the error signal reaches each layer.

Every rule keeps the *local* weight gradient of each nn.Linear / nn.Conv2d layer,
∂L/∂W = gᵀ x (g = gradient at the layer's output, x = its input), and changes only what the layer
sends back to its input, ∂L/∂x = g W in backprop:

| rule          | sent to the input x                  | feedback matrix                                  |
|---------------|--------------------------------------|--------------------------------------------------|
| backprop      | g W                                  | — (the net is returned untouched)                |
| fa            | g B                                  | B fixed, random, shape of W (Lillicrap et al. 2016) |
| sign_symmetry | g s·sign(W)                          | s·sign(W), signs of the current W (Liao et al. 2016) |
| dfa           | e Bᵀ, e = ∂L/∂f the *network* error  | B fixed, random, (input features, net outputs) (Nøkland 2016) |

For convolutions "g W" is the transposed convolution with the kernel W, and FA uses the kernel B.

DFA: each layer sends the projected output error e Bᵀ to its input instead of g W, so the layer
below receives δ = (B e) ⊙ σ'(a) after the activation, exactly Nøkland's DFA for an MLP. The output
layer receives e itself (true gradient); for it DFA equals FA with the matrix Bᵀ. In nets with skip
connections a layer's input also receives the gradients of the skip path, which are added.
``.feedback`` of a DFA layer has shape (input features per sample, net outputs): for a two-layer MLP,
``fc2.feedback`` is the (m, k) matrix that takes the place of W2ᵀ; ``fc1.feedback`` stays ``None``
because no gradient is sent to the data (likewise for any layer whose input needs no gradient).

Random feedback is N(0, s²) and sign-symmetric feedback s·sign(W), with the fixed gain
s = feedback_scale · rms(W₀), rms(W₀) = ‖W₀‖_F / √numel(W₀) when the rule is applied (1/√fan_in if
W₀ = 0): the feedback has the entry scale of the initial weights in every parameterization, so the
backward signal neither explodes nor vanishes with depth (plain sign(W), entries ±1, would multiply
it by about 1/rms(W) per layer). B is drawn from a generator seeded by (seed, layer name) only, and is a
buffer ``feedback_weight`` in the state_dict. Layers are converted in place (their class changes,
parameters and state_dict keys stay), so a net's initialization is unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from typing import Iterator, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.checks import ConfigError, check_choice, check_positive, is_integer

RuleName = Literal["backprop", "fa", "dfa", "sign_symmetry"]
RULES = ("backprop", "fa", "dfa", "sign_symmetry")


def _generator(seed: int, name: str) -> torch.Generator:
    """A generator that depends on (seed, layer name) only, never on the global RNG."""
    digest = hashlib.sha256(f"feedback/{seed}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class _ErrorSlot:
    """Holds e = ∂L/∂f of one forward pass; filled by a tensor hook on the net's output."""

    def __init__(self) -> None:
        self.error: Optional[torch.Tensor] = None

    def capture(self, grad: torch.Tensor) -> None:
        self.error = grad.detach()


class _OutputErrorTap:
    """Forward hooks on a DFA net. Autograd reaches the output before any hidden layer, so the
    error is in the slot before the layers' backward passes read it. Also draws lazily created B."""

    def __init__(self) -> None:
        self.current = _ErrorSlot()

    def pre_hook(self, net: nn.Module, args) -> None:
        self.current = _ErrorSlot()

    def post_hook(self, net: nn.Module, args, output: torch.Tensor) -> None:
        if output.requires_grad:
            output.register_hook(self.current.capture)
        for layer in net.modules():
            if isinstance(layer, _FeedbackMixin) and layer.pending_input_shape is not None:
                layer.draw_dfa_feedback(output[0].numel())


def _input_grad(ctx, g: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, send) -> torch.Tensor:
    """The rule's gradient for the layer input: ``send(g, M)`` with M = B or sign(W), or e Bᵀ for DFA."""
    layer = ctx.layer
    if layer.rule == "sign_symmetry":
        return send(g, layer.feedback_gain * weight.sign())
    if layer.rule == "fa":
        return send(g, layer.feedback_weight)
    e = ctx.slot.error  # dfa
    if e is None or layer.feedback_weight is None:
        raise RuntimeError("dfa needs the loss to be computed from the output of the net that apply_rule converted")
    return (e.flatten(1).to(weight.dtype) @ layer.feedback_weight.T).view(x.shape)  # (n, k) @ (k, in features)


class _LinearFn(torch.autograd.Function):
    """y = x Wᵀ + b; backward: ∂W = gᵀx, ∂b = Σ g (true) and the rule's gradient for x."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer, slot):
        ctx.save_for_backward(x, weight)
        ctx.layer, ctx.slot, ctx.has_bias = layer, slot, bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        g, xw = g.to(weight.dtype), x.to(weight.dtype)  # under autocast g and x may be half precision
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = _input_grad(ctx, g, x, weight, lambda g_, m: g_ @ m).to(x.dtype) if need_x else None
        grad_w = g.reshape(-1, g.shape[-1]).T @ xw.reshape(-1, x.shape[-1]) if need_w else None  # (out, in)
        grad_b = g.reshape(-1, g.shape[-1]).sum(0) if ctx.has_bias and need_b else None
        return grad_x, grad_w, grad_b, None, None


class _Conv2dFn(torch.autograd.Function):
    """y = conv2d(x, W) + b; backward: true ∂W, ∂b and the rule's gradient for x (transposed conv)."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer, slot):
        ctx.save_for_backward(x, weight)
        ctx.layer, ctx.slot, ctx.has_bias = layer, slot, bias is not None
        ctx.conv = dict(stride=layer.stride, padding=layer.effective_padding, dilation=layer.dilation, groups=layer.groups)
        return F.conv2d(x, weight, bias, **ctx.conv)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        g, xw = g.to(weight.dtype), x.to(weight.dtype)  # under autocast g and x may be half precision
        need_x, need_w, need_b = ctx.needs_input_grad[:3]

        def send(g_, m):
            return nn.grad.conv2d_input(x.shape, m, g_, **ctx.conv)

        grad_x = _input_grad(ctx, g, x, weight, send).to(x.dtype) if need_x else None
        grad_w = nn.grad.conv2d_weight(xw, weight.shape, g, **ctx.conv) if need_w else None
        grad_b = g.sum((0, 2, 3)) if ctx.has_bias and need_b else None
        return grad_x, grad_w, grad_b, None, None


class _FeedbackMixin:
    """What the converted Linear and Conv2d layers share: the feedback matrix and the rule's forward."""

    def _setup_feedback(self, rule: str, name: str, scale: float, seed: int, tap: Optional[_OutputErrorTap]) -> None:
        w = self.weight.detach()
        rms = float(w.norm()) / math.sqrt(w.numel())
        fan_in = w[0].numel()
        self.rule, self.exact_backprop, self.error_tap = rule, False, tap
        self.feedback_seed, self.feedback_name = seed, name
        self.feedback_gain = scale * (rms if rms > 0 else 1.0 / math.sqrt(fan_in))  # s
        self.pending_input_shape: Optional[torch.Size] = None  # dfa: input shape seen, B not drawn yet
        self.register_buffer("feedback_weight", self._draw(w.shape) if rule == "fa" else None)

    def _draw(self, shape) -> torch.Tensor:
        b = torch.randn(shape, generator=_generator(self.feedback_seed, self.feedback_name), dtype=torch.float64)
        return (self.feedback_gain * b).to(dtype=self.weight.dtype, device=self.weight.device)

    @property
    def feedback(self) -> Optional[torch.Tensor]:
        """The matrix the backward pass uses in place of W: B (fa, dfa) or s·sign(W) (sign_symmetry)."""
        return self.feedback_gain * self.weight.detach().sign() if self.rule == "sign_symmetry" else self.feedback_weight

    def draw_dfa_feedback(self, n_outputs: int) -> None:
        """Draw the DFA matrix B, (input features, net outputs), once the input shape is known."""
        self.feedback_weight = self._draw((math.prod(self.pending_input_shape), n_outputs))
        self.pending_input_shape = None

    def _apply_rule(self, fn, x: torch.Tensor) -> torch.Tensor:
        if self.rule == "dfa" and self.feedback_weight is None and x.requires_grad:
            self.pending_input_shape = x.shape[1:]
        slot = self.error_tap.current if self.rule == "dfa" else None
        return fn.apply(x, self.weight, self.bias, self, slot)

    def _use_plain_forward(self) -> bool:
        return self.exact_backprop or not torch.is_grad_enabled()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + "feedback_weight"
        if self.feedback_weight is None and key in state_dict:  # a dfa matrix drawn in the saved run
            self.feedback_weight = torch.empty_like(state_dict[key], device=self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rule={self.rule}"


class FeedbackLinear(_FeedbackMixin, nn.Linear):
    """nn.Linear whose backward sends the rule's signal to its input (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_plain_forward():
            return super().forward(x)
        return self._apply_rule(_LinearFn, x)


class FeedbackConv2d(_FeedbackMixin, nn.Conv2d):
    """nn.Conv2d whose backward sends the rule's signal to its input (transposed conv with B or s·sign(W))."""

    @property
    def effective_padding(self):
        return 0 if self._pads_first() else self.padding

    def _pads_first(self) -> bool:
        return isinstance(self.padding, str) or self.padding_mode != "zeros"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_plain_forward():
            return super().forward(x)
        if self._pads_first():  # 'same' / reflect / ...: pad explicitly, convolve without padding
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=mode)
        return self._apply_rule(_Conv2dFn, x)


_CONVERTED = {nn.Linear: FeedbackLinear, nn.Conv2d: FeedbackConv2d}


def feedback_layers(net: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> converted layer; each has ``.weight``, ``.feedback`` and ``.rule``.

    ``.feedback`` is B (fa; same shape as W), s·sign(W) (sign_symmetry) or B (dfa; shape
    (input features, net outputs), ``None`` where no gradient is sent to the input).
    """
    return {name: m for name, m in net.named_modules() if isinstance(m, _FeedbackMixin)}


@contextlib.contextmanager
def backprop_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Within this block every converted layer computes exact backprop gradients.

    The layers choose their backward pass when they run forward, so run the forward pass inside
    the block: ``with backprop_mode(net): loss_fn(net(x), y).backward()``. Double backward and
    torch.func transforms work as for the plain net here (e.g. for Hessians or the NTK).
    """
    layers = list(feedback_layers(net).values())
    previous = [layer.exact_backprop for layer in layers]
    for layer in layers:
        layer.exact_backprop = True
    try:
        yield net
    finally:
        for layer, value in zip(layers, previous):
            layer.exact_backprop = value


def _probe(net: nn.Module, input_dim: int) -> None:
    """One forward pass in eval mode on zeros (n = 2) so that DFA layers draw their B now."""
    modes = {m: m.training for m in net.modules()}
    p = next(net.parameters())
    net.eval()
    try:
        with torch.enable_grad():
            net(torch.zeros(2, input_dim, dtype=p.dtype, device=p.device))
    finally:
        for m, mode in modes.items():
            m.train(mode)


def apply_rule(net: nn.Module, rule: str, feedback_scale: float = 1.0, seed: int = 0) -> nn.Module:
    """Return ``net`` trained by ``rule``: its nn.Linear / nn.Conv2d layers converted in place.

    Args:
        net: any module; layers of exactly the types nn.Linear and nn.Conv2d are converted.
        rule: ``backprop`` (net returned as is), ``fa``, ``dfa`` or ``sign_symmetry``.
        feedback_scale: the gain s = feedback_scale · rms(W₀): random feedback entries are N(0, s²),
            sign-symmetric feedback is s·sign(W).
        seed: with the layer name, the only source of the feedback matrices.

    DFA layers draw B at the first forward pass with gradients (they need the input shape and
    the number of outputs); for nets with an integer ``input_dim`` that happens here, on zeros.

    Raises:
        ConfigError: on an unknown rule, ``feedback_scale`` <= 0, a net without such layers,
            or a net already converted.
    """
    check_choice("rule", rule, RULES)
    check_positive("feedback_scale", feedback_scale)
    if rule == "backprop":
        return net
    if feedback_layers(net):
        raise ConfigError(
            f"Expected argument `net` to be a plain network but it was already converted to rule {next(iter(feedback_layers(net).values())).rule!r}"
        )
    layers = [(name, m) for name, m in net.named_modules() if type(m) in _CONVERTED]
    if not layers:
        raise ConfigError(
            f"Expected argument `net` to contain nn.Linear or nn.Conv2d layers for rule {rule!r} but got {type(net).__name__}"
        )
    tap = _OutputErrorTap() if rule == "dfa" else None
    for name, layer in layers:
        layer.__class__ = _CONVERTED[type(layer)]  # same object: parameters, hooks and keys stay
        layer._setup_feedback(rule, name, feedback_scale, seed, tap)
    if tap is not None:
        net.register_forward_pre_hook(tap.pre_hook)
        net.register_forward_hook(tap.post_hook)
        if is_integer(getattr(net, "input_dim", None)):
            _probe(net, net.input_dim)
    return net
