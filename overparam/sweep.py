"""Grid sweeps over dotted config keys and seeds, one scripts/train.py run each, one CSV row per run.

    python scripts/sweep.py --config configs/experiments/ntk_drift.yaml \\
        --grid model.net.width=64,256,1024 --seeds 3 --jobs 2 --out runs/sweeps/ntk_drift

``--grid`` keys form a product; ``--zip`` keys move together (``--zip model.net.width=256,512
--zip model.lr=25.6,51.2``: two points, lr ∝ width), crossed with the ``--grid`` keys.

Each run is ``scripts/train.py --config X --<key> <value> ... --seed_everything s --model.seed s
--data.seed s --trainer.default_root_dir OUT/runs/<config_hash>/<run_id> <extra>``, its output in
``<run_id>/train.log``. Extra arguments after ``--`` go to every run. Locally (``--jobs`` at a time)
each run is a process of its own forked from a server that imported the suite once
(overparam/workers.py), so a sweep pays for importing Lightning once, not once per run;
``--launcher local_subprocess`` starts a new interpreter per run instead, and submitit jobs
(``--launcher slurm``) each run one.

With ``--ensemble``, the seeds of a grid point are the members of one run of ``--model.ensemble N``
(one stacked model, see lightning_modules/nets/ensemble.py): member k is initialized from model seed k,
all members train on data seed 0 (the same samples, the same batch order), and the run gives N rows,
member k's own metrics under the usual tags with ``seed`` k. Without it each seed s draws data,
batch order and initialization from s.

``config_hash`` is a hash of everything that determines the runs besides their grid point and seed:
the config file's content (configs/default.yaml's without ``--config``), configs/base.yaml's content,
the extra arguments and the content of any file they name (``OUT/runs/<config_hash>/
sweep_config.json`` keeps what was hashed). A sweep with any of these changed is another sweep:
new runs in new folders, new rows; the old rows stay, with their own hash.

``OUT/results.csv`` holds one row per run (columns: overparam/sweep_results.py); it is
rewritten atomically after each run. Re-running a command skips the runs that have finished
(status completed or diverged): a row missing from the CSV (the CSV deleted, or the sweep killed
before writing it) is rebuilt from the run's own summary.json, never by training again. Only an
interrupted run (a last.ckpt without a finished summary) is resumed, with ``--ckpt_path last``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Optional

from overparam import workers
from overparam.paths import BASE_CONFIG, DEFAULT_CONFIG, TRAIN_SCRIPT, version_folders
from overparam.status import FINISHED, run_status
from overparam.sweep_results import read_rows, summary_row, write_rows


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


def zipped_points(zipped: dict[str, list[str]]) -> list[dict[str, str]]:
    """The points of ``--zip`` keys, which move together: the i-th value of every key.

    >>> zipped_points({"model.net.width": ["256", "512"], "model.lr": ["25.6", "51.2"]})
    [{'model.net.width': '256', 'model.lr': '25.6'}, {'model.net.width': '512', 'model.lr': '51.2'}]
    """
    lengths = {len(values) for values in zipped.values()}
    if len(lengths) > 1:
        raise ValueError(
            f"Expected every --zip key to have as many values as the others but got {', '.join(f'{k}: {len(v)}' for k, v in zipped.items())}"
        )
    return [dict(zip(zipped, values)) for values in zip(*zipped.values())] if zipped else [{}]


def runs_of(
    grid: dict[str, list[str]], seeds: list[int], zipped: Optional[dict[str, list[str]]] = None
) -> list[tuple[str, dict[str, str], int]]:
    """Every (run_id, point, seed): the product of the ``--grid`` keys and the ``--zip`` points, times the seeds."""
    keys = list(grid)
    points = [
        {**dict(zip(keys, values)), **together}
        for values in itertools.product(*(grid[k] for k in keys))
        for together in zipped_points(zipped or {})
    ]
    return [(run_id(point, seed), point, seed) for point in points for seed in seeds]


def ensemble_run_id(point: dict[str, str], members: int) -> str:
    """The folder of a point's ensemble run, e.g. ``model.net.width=64__ensemble=8``."""
    return "__".join([*(f"{k}={v}" for k, v in point.items()), f"ensemble={members}"]).replace("/", "_").replace(" ", "")


def member_run_id(point: dict[str, str], seed: int, members: int) -> str:
    """Member ``seed``'s row of a point's ensemble run, e.g. ``model.net.width=64__seed=3__ensemble=8``."""
    return f"{run_id(point, seed)}__ensemble={members}"


def member_rows(row: dict, point: dict[str, str], members: int) -> list[dict]:
    """The ``members`` rows of one ensemble run's row: row k has ``seed`` k and member k's metrics
    (``ensemble/<k>/<tag>``) under the plain tags, its gaps (test − train loss, train − test accuracy)
    recomputed from them; the members' means and the other members' values are dropped.

    >>> rows = member_rows({"run_id": "e", "status": "completed", "train/loss": 0.5, "ensemble/0/train/loss": 0.4,
    ...                     "ensemble/1/train/loss": 0.6, "ensemble/0/test/loss": 0.7, "ensemble/1/test/loss": 0.9}, {}, 2)
    >>> [(r["run_id"], r["seed"], r["train/loss"], round(r["gap/loss"], 3)) for r in rows]
    [('seed=0__ensemble=2', 0, 0.4, 0.3), ('seed=1__ensemble=2', 1, 0.6, 0.3)]
    """
    shared = {k: v for k, v in row.items() if not k.startswith("ensemble/")}
    out = []
    for k in range(members):
        prefix = f"ensemble/{k}/"
        own = {tag[len(prefix) :]: v for tag, v in row.items() if tag.startswith(prefix)}
        member = {key: v for key, v in shared.items() if key not in own and key.split("/")[0] not in ("train", "test", "gap")}
        member.update(own, run_id=member_run_id(point, k, members), seed=k)
        for what, sign in (("loss", 1), ("acc", -1)):
            if f"train/{what}" in own and f"test/{what}" in own:
                member[f"gap/{what}"] = sign * (float(own[f"test/{what}"]) - float(own[f"train/{what}"]))
        out.append(member)
    return out


def text(path: Path) -> Optional[str]:
    return path.read_text() if path.is_file() else None


def sweep_identity(config: Optional[str], extra: list[str]) -> dict:
    """What every run of the sweep shares, and its hash ``config_hash`` (12 hex digits of a SHA-256).

    The hash covers the text of the config file (not its name), of configs/base.yaml, the extra
    arguments in order, and the text of each extra argument that names a file (e.g. ``--data d.yaml``).
    """
    identity = {
        "config_text": text(Path(config) if config else DEFAULT_CONFIG),  # no --config: the default experiment
        "base_config_text": text(BASE_CONFIG),  # loaded under every config
        "extra": extra,
        "extra_files": {arg: text(Path(arg)) for arg in extra if Path(arg).is_file()},
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return {"config_hash": digest, "config": config, **identity}


def identity_columns(identity: dict) -> dict:
    """The CSV columns that say which configuration produced a row."""
    return {"config_hash": identity["config_hash"], "config": identity["config"] or "(default)"}


def run_root(out: Path, config_hash: str, rid: str) -> Path:
    return out / "runs" / config_hash / rid


def latest_version(root: Path) -> Optional[Path]:
    """The run's highest ``lightning_logs/version_K`` folder, or None."""
    versions = version_folders(root)
    return versions[-1] if versions else None


def latest_status(root: Path) -> tuple[Optional[Path], Optional[str]]:
    """The run's latest attempt (its version folder) and the status in its summary.json (None: no summary yet)."""
    version = latest_version(root)
    return version, run_status(version) if version is not None else None


def finished_summary(root: Path) -> Optional[Path]:
    """The summary.json of the run's latest attempt when that attempt finished (completed or diverged)."""
    version, status = latest_status(root)
    return version / "summary.json" if status in FINISHED else None


def interrupted(root: Path) -> bool:
    """Whether the run's latest attempt was cut off (status interrupted, or killed before any summary) and
    left a last.ckpt: only such a run is resumed."""
    version, status = latest_status(root)
    return version is not None and status in (None, "interrupted") and (version / "checkpoints" / "last.ckpt").is_file()


def train_args(config: Optional[str], point: dict[str, str], seed: int, root: Path, extra: list[str], resume: bool) -> list[str]:
    """The arguments of scripts/train.py for one point and seed."""
    args = ["--config", config] if config else []
    for key, value in point.items():
        args += [f"--{key}", value]
    args += [
        "--seed_everything",
        str(seed),
        "--model.seed",
        str(seed),
        "--data.seed",
        str(seed),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]
    if resume:
        args += ["--ckpt_path", "last"]
    return args


def run_subprocess(args: list[str], log: Path, threads: int) -> int:
    """``python scripts/train.py args`` in a new interpreter (which imports everything again); its exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with log.open("a") as f:
        return subprocess.run([sys.executable, str(TRAIN_SCRIPT), *args], stdout=f, stderr=subprocess.STDOUT, env=env).returncode


def execute(
    identity: dict, rid: str, point: dict[str, str], seed: int, out: Path, threads: int, forked: bool = False, members: int = 1
) -> dict:
    """Run one point (resuming it if it was interrupted) and return its CSV row, from the summary.json that
    this attempt wrote; without one (a crash) the row says ``failed``. ``forked``: in a process forked from
    the preloaded server of overparam/workers.py, else (submitit jobs, ``--launcher local_subprocess``) in
    a new interpreter. ``members`` > 1: one run of ``--model.ensemble members`` (see :func:`member_rows`)."""
    root = run_root(out, identity["config_hash"], rid)
    resume = interrupted(root)
    before = {p: p.stat().st_mtime_ns for p in root.glob("lightning_logs/version_*/summary.json")}
    start = time.perf_counter()
    log = root / "train.log"
    root.mkdir(parents=True, exist_ok=True)
    extra = [*identity["extra"], "--model.ensemble", str(members)] if members > 1 else identity["extra"]
    args = train_args(identity["config"], point, seed, root, extra, resume)
    returncode = workers.train(args, log, threads) if forked else run_subprocess(args, log, threads)
    row = {
        **identity_columns(identity),
        "run_id": rid,
        **point,
        "seed": seed,
        "wall_time_s": round(time.perf_counter() - start, 3),
        "status": "failed",
        "log_dir": str(log),
    }
    written = [p for p in root.glob("lightning_logs/version_*/summary.json") if before.get(p) != p.stat().st_mtime_ns]
    if written:
        row.update(summary_row(max(written, key=lambda p: int(p.parent.name.split("_", 1)[1]))))
    row["returncode"] = returncode
    return row


def rebuilt_row(identity: dict, rid: str, point: dict[str, str], seed: int, summary: Path) -> dict:
    """The CSV row of a finished run, from its summary.json alone."""
    return {**identity_columns(identity), "run_id": rid, **point, "seed": seed, **summary_row(summary)}


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description="Grid sweep over dotted config keys and seeds; one CSV row per run.")
    parser.add_argument("--config", help="experiment YAML (default: configs/default.yaml; configs/base.yaml is under every config)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a swept key; repeat for a product grid")
    parser.add_argument(
        "--zip",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="keys that move together (the i-th values of all --zip keys form one point), e.g. a width and an lr ∝ width; "
        "crossed with the --grid keys",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 for each grid point")
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="train a point's N seeds as one run of --model.ensemble N (model seeds 0..N-1, all on data seed 0); "
        "still one CSV row per seed",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each gets cores/jobs threads)")
    parser.add_argument("--out", default="runs/sweep", help="output folder: results.csv and runs/<config_hash>/<run_id>/")
    parser.add_argument(
        "--launcher",
        choices=["local", "local_subprocess", "slurm", "submitit_local"],
        default="local",
        help="local: processes forked from one that imported the suite once; local_subprocess: a new "
        "`python scripts/train.py` per run; or submitit (slurm on a cluster; submitit_local: its local executor)",
    )
    args = parser.parse_args(argv)
    try:
        grid, zipped = parse_grid(args.grid), parse_grid(args.zip)
        zipped_points(zipped)
    except ValueError as err:
        parser.error(str(err))
    if set(grid) & set(zipped):
        parser.error(f"Expected a key in --grid or in --zip, not both, but got {', '.join(sorted(set(grid) & set(zipped)))}")
    if args.seeds < 1 or args.jobs < 1:
        parser.error(f"Expected --seeds and --jobs to be >= 1 but got {args.seeds} and {args.jobs}")
    if args.config and not Path(args.config).is_file():
        parser.error(f"config file not found: {args.config}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    identity = sweep_identity(args.config, extra)
    (out / "runs" / identity["config_hash"]).mkdir(parents=True, exist_ok=True)
    (out / "runs" / identity["config_hash"] / "sweep_config.json").write_text(json.dumps(identity, indent=2))
    rows, swept = read_rows(csv_path)
    swept = list(dict.fromkeys([*swept, *grid, *zipped]))  # earlier sweeps' keys keep their columns
    members = args.seeds if args.ensemble else 1
    if members > 1:  # one run per point, a row per member
        runs = [(ensemble_run_id(point, members), point, 0) for _, point, _ in runs_of(grid, [0], zipped)]
    else:
        runs = runs_of(grid, list(range(args.seeds)), zipped)

    def row_ids(rid: str, point: dict[str, str]) -> list[str]:
        return [member_run_id(point, k, members) for k in range(members)] if members > 1 else [rid]

    points = {rid: point for rid, point, _ in runs}
    keys = [(identity["config_hash"], r) for rid, point, _ in runs for r in row_ids(rid, point)]
    todo, rebuilt = [], 0
    for rid, point, seed in runs:
        if all(rows.get((identity["config_hash"], r), {}).get("status") in FINISHED for r in row_ids(rid, point)):
            continue
        summary = finished_summary(run_root(out, identity["config_hash"], rid))
        if summary is not None:  # finished, but its rows are missing: rebuild them, never train again
            row = rebuilt_row(identity, rid, point, seed, summary)
            for r in member_rows(row, point, members) if members > 1 else [row]:
                rows[(identity["config_hash"], r["run_id"])] = r
            rebuilt += 1
        else:
            todo.append((rid, point, seed))
    if rebuilt:
        write_rows(csv_path, rows.values(), swept)
    print(
        f"config {identity['config_hash']} ({identity['config'] or 'default'}): {len(runs) - len(todo)} of {len(runs)} runs finished "
        f"({rebuilt} rows rebuilt from their summary.json); {len(todo)} runs to go"
    )
    threads = max(1, (os.cpu_count() or 1) // args.jobs)

    def record(row: dict) -> None:
        for r in member_rows(row, points[row["run_id"]], members) if members > 1 else [row]:
            rows[(r["config_hash"], r["run_id"])] = r
        write_rows(csv_path, rows.values(), swept)
        print(f"{row['run_id']}: {row['status']} ({row['wall_time_s']} s)")

    if args.launcher in ("local", "local_subprocess"):
        forked = args.launcher == "local"
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each thread waits on one run's process
            futures = [pool.submit(execute, identity, rid, point, seed, out, threads, forked, members) for rid, point, seed in todo]
            try:
                for future in as_completed(futures):
                    record(future.result())
            except BaseException:  # e.g. Ctrl-C: the runs in flight stop (same process group), start no others
                pool.shutdown(cancel_futures=True)
                raise
    else:
        from overparam.submit import submit_all  # noqa: PLC0415  (optional dependency: submitit)

        jobs = [(identity, rid, point, seed, out, threads, False, members) for rid, point, seed in todo]
        for row in submit_all(args.launcher, execute, jobs, out, args.jobs):
            record(row)
    failed = [key for key in keys if rows.get(key, {}).get("status") not in FINISHED]
    print(f"results: {csv_path} ({len(rows)} rows, {len(failed)} of this sweep's {len(keys)} not finished)")
    return 0 if not failed else 1
