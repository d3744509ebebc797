"""Looking for a non-finite loss without a host sync every step.

A run stops at the first step t whose loss is NaN or ±inf, keeps the weights θ_t it had before that
step (the last finite state) and reports t. Reading the loss on the host each step does that, and on
a CPU it costs nothing; on an accelerator it stalls the queue once per step. :class:`DeviceFlag` does
it on the device instead:

    first ← t        if loss_t is not finite and first < 0       (first starts at −1)
    found_inf ← 1[first ≥ 0]

``found_inf`` is the flag torch's fused SGD and Adam read (as for a GradScaler): while it is 1 they
skip the update entirely (weights, momentum, Adam's moments and step count untouched). The flag is
sticky, so the step that met the non-finite loss and every later one leave θ_t as it was. The host
reads ``first`` only every k steps (and before anything that looks at the weights), then stops the
run with ``first`` as the step of divergence: at most k − 1 wasted steps, the same end state.
"""

from __future__ import annotations

from typing import Optional

import torch

#: Optimizers whose fused kernels skip an update on ``found_inf`` (SAM and Entropy-SGD check each step).
DEFERRABLE = ("sgd", "adam")
#: Steps between the host's reads of the flag on a CUDA GPU, unless a run names its own.
DEFAULT_EVERY = 16


class DeviceFlag:
    """The first non-finite step, kept on ``device`` and wired into ``optimizer.found_inf`` (a fused SGD/Adam);
    the host reads it every ``every`` steps."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, every: int = DEFAULT_EVERY) -> None:
        self.every = every
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)
        optimizer.found_inf = self.found_inf  # read by the fused step after the closure has run

    def update(self, loss: torch.Tensor, step: int) -> None:
        """Record step ``step`` if ``loss`` is not finite and none was before; device ops only."""
        bad = ~torch.isfinite(loss.detach())
        self.first.copy_(torch.where(bad & (self.first < 0), step, self.first))
        self.found_inf.copy_((self.first >= 0).to(self.found_inf.dtype))

    def first_nonfinite_step(self) -> Optional[int]:
        """The first step with a non-finite loss, or None (reads the flag: a host sync)."""
        step = int(self.first)
        return None if step < 0 else step


def has_diverged(pl_module: object) -> bool:
    """Whether ``pl_module`` has met a non-finite loss (syncing its on-device flag, when it keeps one)."""
    check = getattr(pl_module, "check_divergence", None)
    return check() if callable(check) else getattr(pl_module, "diverged_at_step", None) is not None
