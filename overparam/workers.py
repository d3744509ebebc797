"""Training runs in fresh processes forked from a server that has imported the suite once.

A small ``python scripts/train.py`` run spends most of its time importing (Lightning alone: 4.5 s
on a quiet 2-core machine, 12–15 s on a busy one). :func:`train` instead forks each run from a
``multiprocessing`` fork server that imported :data:`PRELOAD` when it started, so a sweep pays for
the imports once. Each run still gets a process of its own (its own globals, RNG state, signal
handlers and torch threads), calls the same ``overparam.cli.main(args)`` as scripts/train.py, is
seeded by its own arguments, and leaves the same summary.json; its stdout and stderr (file
descriptors 1 and 2, so Lightning's and C libraries' output too) go to its log.

This module imports nothing heavy: the sweep process imports it; only the server and the runs
import torch.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path
from typing import Optional

from overparam.paths import TRAIN_SCRIPT

#: What the server imports once: the command line (Lightning, torch, the suite's modules) and the
#: TensorBoard writer that the logger would otherwise import in every run.
PRELOAD = ["overparam.cli", "torch.utils.tensorboard"]


def train_in_this_process(args: list[str], log: str, threads: int, err_log: Optional[str] = None) -> None:
    """The body of a forked run: stdout and stderr to ``log`` (appended; stderr to ``err_log`` when
    given), ``threads`` torch/OpenMP/MKL threads, then ``overparam.cli.main(args)``; exits with its code
    (1 with a traceback in the log on a bug)."""
    sys.stdout.flush()
    sys.stderr.flush()
    for target, fds in ((log, (1,) if err_log else (1, 2)), (err_log, (2,))):
        if target is None:
            continue
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for std in fds:
            os.dup2(fd, std)
        os.close(fd)
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))  # as scripts/train.py gets them
    sys.argv = [str(TRAIN_SCRIPT), *args]  # what Lightning's DDP launcher re-runs for ranks > 0 (else: the sweep's own command)
    import torch  # noqa: PLC0415  (preloaded by the server: free here)

    torch.set_num_threads(threads)  # OpenMP read its environment when the server imported torch
    from overparam.cli import main  # noqa: PLC0415

    sys.exit(main(args))


def train(args: list[str], log: Path, threads: int, err_log: Optional[Path] = None, timeout: Optional[float] = None) -> int:
    """Run ``scripts/train.py args`` in a process forked from the preloaded server and wait for it.

    One ``Process`` per run, not a ``ProcessPoolExecutor``: a run whose process dies (SIGKILL, a
    segfault, the OOM killer) fails alone, where it would break the pool and every run waiting on it.

    Args:
        err_log: where stderr goes, when not into ``log`` with stdout.
        timeout: seconds to wait; then the run is killed and :class:`TimeoutError` raised.

    Returns:
        its exit code (see overparam/status.py); negative when a signal killed it (``-9``: SIGKILL).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # read when the server starts: with the first run
    process = context.Process(
        target=train_in_this_process,
        args=(list(args), str(log), threads, None if err_log is None else str(err_log)),
        name=f"train {log.parent.name}",
    )
    process.start()
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()
        raise TimeoutError(f"scripts/train.py {' '.join(args)} ran past {timeout} s and was killed")
    return process.exitcode
