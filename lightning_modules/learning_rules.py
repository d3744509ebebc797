"""Learning rules: how the error signal reaches each layer.

``backprop`` leaves the net as it is. The other rules (fa, dfa, sign_symmetry) swap the net's
layers for versions with a different backward pass.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

RuleName = Literal["backprop", "fa", "dfa", "sign_symmetry"]
RULES = ("backprop", "fa", "dfa", "sign_symmetry")


def apply_rule(net: nn.Module, rule: str, feedback_scale: float = 1.0, seed: int = 0) -> nn.Module:
    """Return ``net`` trained by ``rule`` (its layers swapped in place where the rule needs it).

    Raises:
        ValueError: on an unknown rule name.
    """
    if rule not in RULES:
        raise ValueError(f"Expected argument `rule` to be one of {', '.join(RULES)} but got {rule!r}")
    if rule == "backprop":
        return net
    raise NotImplementedError(f"rule {rule!r} is not implemented yet")
