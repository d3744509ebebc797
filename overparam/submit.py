"""Run sweep points through submitit: on a Slurm cluster, or with submitit's local executor."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator


def submit_all(
    launcher: str, execute: Callable[..., dict], jobs: list[tuple], out: Path, parallel: int, timeout_min: int = 24 * 60
) -> Iterator[dict]:
    """Submit ``execute(*args)`` for each ``args`` in ``jobs`` and yield the rows as they finish.

    ``launcher`` is ``slurm`` (``submitit.AutoExecutor`` on the cluster, array of at most
    ``parallel`` running jobs) or ``submitit_local`` (``submitit.LocalExecutor``, for testing).
    """
    try:
        import submitit
    except ImportError as err:
        raise SystemExit("error: --launcher needs submitit: pip install submitit") from err
    folder = Path(out) / "submitit"
    if launcher == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(timeout_min=timeout_min, slurm_array_parallelism=parallel)
    else:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=timeout_min)
    submitted = [executor.submit(execute, *args) for args in jobs]
    for job in submitted:
        yield job.result()
