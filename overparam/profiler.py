"""The Trainer's default profiler, minus its per-hook cost.

Lightning enters ``trainer.profiler.profile(name)`` around every hook it calls: about 60 times per
training step with the suite's callbacks. Its default, ``PassThroughProfiler``, records nothing but
still builds a generator-based context manager each time (a few µs apiece, a tenth of a small
net's step on a CPU). :class:`NullProfiler` records nothing the same way and returns one shared
``nullcontext``. A profiler asked for (``--trainer.profiler simple``) replaces it as usual.
"""

from __future__ import annotations

from contextlib import nullcontext

from pytorch_lightning.profilers import PassThroughProfiler

_NOTHING = nullcontext()


class NullProfiler(PassThroughProfiler):
    """``PassThroughProfiler`` whose ``profile`` is a shared no-op context manager."""

    def profile(self, action_name: str) -> nullcontext:  # noqa: D102
        return _NOTHING
