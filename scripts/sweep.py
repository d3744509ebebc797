"""Grid sweeps over dotted config keys and seeds, one scripts/train.py run each, one CSV row per run.

    python scripts/sweep.py --config configs/experiments/ntk_drift.yaml \\
        --grid model.net.width=64,256,1024 --seeds 3 --jobs 2 --out runs/sweeps/ntk_drift

Each run is ``scripts/train.py --config X --<key> <value> ... --seed_everything s --model.seed s
--data.seed s --trainer.default_root_dir OUT/runs/<run_id>``. The CSV ``OUT/results.csv`` holds
the swept values, seed, status, wall time and the final value of every scalar in the run's
summary.json; it is rewritten atomically after each run, so it never holds a half-written row.
Re-running the same command skips finished runs (status completed or diverged) and resumes
interrupted ones from their last checkpoint. Extra arguments after ``--`` go to every run.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "scripts" / "train.py"
FINISHED = ("completed", "diverged")
FIXED_COLUMNS = ["run_id", "seed", "status", "wall_time_s", "returncode", "log_dir"]


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["model.net.width=64,256"]`` -> ``{"model.net.width": ["64", "256"]}``.

    >>> parse_grid(["model.lr=0.1,0.2", "data.n_train=64"])
    {'model.lr': ['0.1', '0.2'], 'data.n_train': ['64']}
    """
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"Expected --grid as KEY=V1,V2,... but got {item!r}")
        grid[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    return grid


def run_id(point: dict[str, str], seed: int) -> str:
    """A folder-safe name for one grid point and seed, e.g. ``model.net.width=64__seed=0``."""
    parts = [f"{k}={v}" for k, v in point.items()] + [f"seed={seed}"]
    return "__".join(parts).replace("/", "_").replace(" ", "")


def runs_of(grid: dict[str, list[str]], seeds: list[int]) -> list[tuple[str, dict[str, str], int]]:
    keys = list(grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    return [(run_id(point, seed), point, seed) for point in points for seed in seeds]


def read_rows(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return {row["run_id"]: row for row in csv.DictReader(f)}


def write_rows(path: Path, rows: dict[str, dict], swept: list[str]) -> None:
    """Rewrite the whole CSV through a temporary file and an atomic rename."""
    metric_columns = sorted({k for row in rows.values() for k in row} - set(FIXED_COLUMNS) - set(swept))
    columns = ["run_id", *swept, *FIXED_COLUMNS[1:], *metric_columns]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows.values():
            writer.writerow(row)
    os.replace(tmp, path)


def command(config: Optional[str], point: dict[str, str], seed: int, root: Path, extra: list[str], resume: bool) -> list[str]:
    cmd = [sys.executable, str(TRAIN)]
    if config:
        cmd += ["--config", config]
    for key, value in point.items():
        cmd += [f"--{key}", value]
    cmd += ["--seed_everything", str(seed), "--model.seed", str(seed), "--data.seed", str(seed),
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *extra]
    if resume:
        cmd += ["--ckpt_path", "last"]
    return cmd


def execute(config: Optional[str], rid: str, point: dict[str, str], seed: int, out: Path, extra: list[str], threads: int) -> dict:
    """Run one point (resuming it if an earlier attempt left a checkpoint) and return its CSV row."""
    root = out / "runs" / rid
    resume = any(root.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    log = root / "train.log"
    root.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        proc = subprocess.run(command(config, point, seed, root, extra, resume), stdout=f, stderr=subprocess.STDOUT, env=env)
    row = {"run_id": rid, **point, "seed": seed, "returncode": proc.returncode, "wall_time_s": round(time.perf_counter() - start, 3)}
    summaries = sorted(root.glob("lightning_logs/version_*/summary.json"), key=lambda p: p.stat().st_mtime)
    if summaries:
        summary = json.loads(summaries[-1].read_text())
        row.update(summary.get("metrics", {}))
        row.update(status=summary["status"], wall_time_s=summary["wall_time_s"], log_dir=str(summaries[-1].parent))
    else:
        row.update(status="failed", log_dir=str(log))
    return row


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description="Grid sweep over dotted config keys and seeds; one CSV row per run.")
    parser.add_argument("--config", help="experiment YAML (on top of configs/default.yaml)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a swept key; repeat for a product grid")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 for each grid point")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each gets cores/jobs threads)")
    parser.add_argument("--out", default="runs/sweep", help="output folder: results.csv and runs/<run_id>/")
    parser.add_argument("--launcher", choices=["local", "slurm", "submitit_local"], default="local",
                        help="local processes, or submitit (slurm on a cluster; submitit_local runs submitit's local executor)")
    args = parser.parse_args(argv)
    try:
        grid = parse_grid(args.grid)
    except ValueError as err:
        parser.error(str(err))
    if args.seeds < 1 or args.jobs < 1:
        parser.error(f"Expected --seeds and --jobs to be >= 1 but got {args.seeds} and {args.jobs}")
    if args.config and not Path(args.config).is_file():
        parser.error(f"config file not found: {args.config}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    rows = read_rows(csv_path)
    todo = [r for r in runs_of(grid, list(range(args.seeds))) if rows.get(r[0], {}).get("status") not in FINISHED]
    print(f"{len(rows)} finished rows in {csv_path}; {len(todo)} runs to go")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    swept = list(grid)

    if args.launcher == "local":
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(execute, args.config, rid, point, seed, out, extra, threads) for rid, point, seed in todo]
            for future in as_completed(futures):
                row = future.result()
                rows[row["run_id"]] = row
                write_rows(csv_path, rows, swept)
                print(f"{row['run_id']}: {row['status']} ({row['wall_time_s']} s)")
    else:
        from submit import submit_all  # noqa: PLC0415  (optional dependency: submitit)

        jobs = [(args.config, rid, point, seed, out, extra, threads) for rid, point, seed in todo]
        for row in submit_all(args.launcher, execute, jobs, out, args.jobs):
            rows[row["run_id"]] = row
            write_rows(csv_path, rows, swept)
            print(f"{row['run_id']}: {row['status']} ({row['wall_time_s']} s)")
    failed = [r for r in rows.values() if r.get("status") not in FINISHED]
    print(f"results: {csv_path} ({len(rows)} rows, {len(failed)} not finished)")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
