"""Benchmarks as side-by-side ratios: ``python scripts/benchmark.py [--quick] [--out results.json]``.

Every figure is ours / reference (or reference / ours) measured in the same process, one after
the other, so that the machine's speed cancels. Results go to stdout as a table and to a JSON
file ``{"machine", "torch", "device", "results": [{name, ours, reference, unit, ratio, target,
meets_target}]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch

from callbacks.gaps import TrainTestGap
from datamodules.synthetic import GaussianMixture
from lightning_modules import losses
from lightning_modules.module import SupervisedModule
from lightning_modules.nets.mlp import TwoLayerMLP
from overparam.lean_step import use_lean_step
from overparam.profiler import NullProfiler
from overparam.summary import SummaryLogger


def row(name: str, ours: float, reference: float, unit: str, ratio: float, target: str, note: str = "") -> dict:
    """One result; ``target`` is like "<= 1.15" or ">= 20" and applies to ``ratio``."""
    op, bound = target.split()
    meets = ratio <= float(bound) if op == "<=" else ratio >= float(bound)
    out = {"name": name, "ours": ours, "reference": reference, "unit": unit, "ratio": ratio, "target": target, "meets_target": bool(meets)}
    if note:
        out["note"] = note
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(pl.Callback):
    """Wall time of the training steps after ``warmup`` steps (setup and teardown excluded)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.seconds, self.steps = warmup, None, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.seconds = time.perf_counter() - self.start
        self.steps = trainer.global_step - self.warmup


def problem(dim: int, width: int, n: int, batch_size, device: torch.device):
    data = GaussianMixture(dim=dim, n_clusters=4, cluster_std=0.2, n_train=n, n_test=n, batch_size=batch_size, seed=0)
    model = SupervisedModule(TwoLayerMLP(dim, width, 1, parameterization="ntk"), lr=0.5, momentum=0.9, seed=0)
    return data, model


def lightning_seconds_per_step(dim, width, n, batch_size, epochs, warmup, evaluate: bool, device) -> float:
    """Our LightningModule + tensor DataModule; ``evaluate`` adds the per-epoch whole-set metrics
    and TensorBoard logging of a normal run."""
    data, model = problem(dim, width, n, batch_size, device)
    timer = StepTimer(warmup)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator=device.type,
            devices=1,
            logger=SummaryLogger(tmp) if evaluate else False,
            callbacks=[timer, TrainTestGap()],
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=None if evaluate else 0,
            log_every_n_steps=50,
            profiler=NullProfiler(),  # as scripts/train.py runs it
        )
        use_lean_step(trainer)
        trainer.fit(model, datamodule=data)
    return timer.seconds / timer.steps


def plain_seconds_per_step(dim, width, n, batch_size, epochs, warmup, evaluate: bool, device, feed: str = "slices") -> float:
    """The same updates in a plain PyTorch loop; ``evaluate`` adds the same whole-set metrics written
    with a SummaryWriter. ``feed`` is ``slices`` (index slices of device tensors) or ``dataloader``
    (DataLoader over a TensorDataset)."""
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.tensorboard import SummaryWriter

    data, model = problem(dim, width, n, batch_size, device)
    data.prepare_splits()
    net = model.net.to(device)
    x, y = data.train.x.to(device), data.train.y.to(device)
    xt, yt = data.test.x.to(device), data.test.y.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    bs = n if batch_size is None else batch_size
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=bs, shuffle=True) if feed == "dataloader" else None
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(tmp) if evaluate else None
        step, start = 0, None
        for epoch in range(epochs):
            if loader is not None:
                batches = ((xb.to(device), yb.to(device)) for xb, yb in loader)
            elif batch_size is None:
                batches = [(x, y)]
            else:
                batches = ((x[i], y[i]) for i in torch.randperm(n, generator=generator).to(device).split(bs))
            for xb, yb in batches:
                if step == warmup:
                    sync(device)
                    start = time.perf_counter()
                loss = losses.mean_loss("mse", net(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            if evaluate:
                with torch.no_grad():
                    values = {}
                    for split, (xs, ys) in (("train", (x, y)), ("test", (xt, yt))):
                        out = net(xs)
                        values[f"{split}/loss"] = losses.mean_loss("mse", out, ys).item()
                        values[f"{split}/acc"] = losses.correct(out, ys).mean().item()
                    values["gap/loss"] = values["test/loss"] - values["train/loss"]
                    values["gap/acc"] = values["train/acc"] - values["test/acc"]
                for tag, value in values.items():
                    writer.add_scalar(tag, value, step)
        sync(device)
        seconds = time.perf_counter() - start
        if writer is not None:
            writer.close()
    return seconds / (step - warmup)


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(repeats))


def paired(repeats: int, ours: Callable[[], float], reference: Callable[[], float]) -> tuple[float, float]:
    """Best of ``repeats`` for each, run alternately so that both see the same machine load."""
    a, b = [], []
    for _ in range(repeats):
        a.append(ours())
        b.append(reference())
    return min(a), min(b)


def training_loop_rows(quick: bool, device: torch.device) -> list[dict]:
    """Our loop against a plain one doing the same updates. On a CPU both run on one thread: the
    difference is the loop's own (single-threaded) work, and two threads on two busy cores add
    contention noise to the shared compute larger than that difference."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        return training_loop_rows_now(quick, device)
    finally:
        torch.set_num_threads(threads)


def training_loop_rows_now(quick: bool, device: torch.device) -> list[dict]:
    rows = []
    repeats = 5  # pairs, best of each: on a shared machine a single slow stretch should not decide a row
    # Full batch on the benchmark problem (d=64, width 1024, n=2048): one GD step per epoch.
    epochs = 60 if quick else 200
    args = (64, 1024, 2048, None, epochs, 10)
    ours, ref = paired(
        repeats,
        lambda: lightning_seconds_per_step(*args, evaluate=False, device=device),
        lambda: plain_seconds_per_step(*args, evaluate=False, device=device),
    )
    rows.append(
        row(
            "training_loop_full_batch",
            ours * 1e3,
            ref * 1e3,
            "ms/step",
            ours / ref,
            "<= 1.15",
            "full-batch GD, d=64, width 1024, n=2048; vs a plain PyTorch loop doing the same updates",
        )
    )
    ours, ref = paired(
        repeats,
        lambda: lightning_seconds_per_step(*args, evaluate=True, device=device),
        lambda: plain_seconds_per_step(*args, evaluate=True, device=device),
    )
    rows.append(
        row(
            "training_loop_full_batch_with_eval",
            ours * 1e3,
            ref * 1e3,
            "ms/step",
            ours / ref,
            "<= 1.15",
            "as above plus whole-set train/test metrics and TensorBoard logging after every step, in both",
        )
    )
    # The default model of configs/default.yaml (d=16, width 512, n=2048), with its per-epoch evaluation.
    dargs = (16, 512, 2048, None, epochs, 10)
    ours, ref = paired(
        repeats,
        lambda: lightning_seconds_per_step(*dargs, evaluate=True, device=device),
        lambda: plain_seconds_per_step(*dargs, evaluate=True, device=device),
    )
    rows.append(
        row(
            "training_loop_default_config",
            ours * 1e3,
            ref * 1e3,
            "ms/step",
            ours / ref,
            "<= 1.15",
            "configs/default.yaml model and data, whole-set metrics every epoch, in both",
        )
    )
    # Minibatch SGD (batch 128): 16 steps per epoch; 224 timed steps even in --quick (a quarter of a
    # second a run), since its margin is a tenth of a millisecond a step.
    margs = (64, 1024, 2048, 128, 15, 16)
    ours, ref = paired(
        repeats,
        lambda: lightning_seconds_per_step(*margs, evaluate=False, device=device),
        lambda: plain_seconds_per_step(*margs, evaluate=False, device=device),
    )
    loader = best_of(repeats, lambda: plain_seconds_per_step(*margs, evaluate=False, device=device, feed="dataloader"))
    rows.append(
        row(
            "training_loop_minibatch",
            ours * 1e3,
            ref * 1e3,
            "ms/step",
            ours / ref,
            "<= 1.15",
            "batch 128, d=64, width 1024, n=2048; vs a plain loop over index slices",
        )
    )
    rows.append(
        row(
            "training_loop_minibatch_vs_dataloader",
            ours * 1e3,
            loader * 1e3,
            "ms/step",
            ours / loader,
            "<= 1.0",
            "ours vs a plain loop fed by DataLoader(TensorDataset)",
        )
    )
    return rows


def diagnostics_overhead_rows(quick: bool) -> list[dict]:
    """configs/default.yaml as shipped (its diagnostic schedule) vs the same run with no callbacks."""
    from overparam.cli import build_cli

    epochs = "150" if quick else "400"

    def fit_seconds(*extra: str) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            cli = build_cli(
                [
                    "--trainer.max_epochs",
                    epochs,
                    "--trainer.enable_progress_bar",
                    "false",
                    "--trainer.default_root_dir",
                    tmp,
                    "--checkpoint_every_n_epochs",
                    "0",
                    *extra,
                ]
            )
            start = time.perf_counter()
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            return time.perf_counter() - start

    fit_seconds("--trainer.max_epochs", "5")  # warm-up: imports, first allocations
    repeats = 2 if quick else 3
    with_diag, plain = paired(repeats, lambda: fit_seconds(), lambda: fit_seconds("--trainer.callbacks", "[]"))
    return [
        row(
            "diagnostics_overhead",
            with_diag,
            plain,
            "s",
            with_diag / plain,
            "<= 1.2",
            f"configs/default.yaml fit ({epochs} epochs) with its default diagnostics (sharpness, kernel drift) vs none",
        )
    ]


def diagnostics_rows(quick: bool) -> list[dict]:
    from overparam import bench_diagnostics

    rows = bench_diagnostics.all_rows(quick)
    names = {r["name"] for r in rows}
    # Headline rows under the names CI and reports read (the benchmark problem has d = 64).
    for alias, source in (("ntk_closed_form_vs_jacrev", "ntk_closed_form_vs_jacrev_d64_w1024"),):
        if alias not in names:
            rows += [{**r, "name": alias} for r in rows if r["name"] == source]
    return rows


def speed_path_rows(quick: bool, device: torch.device) -> list[dict]:
    """Optional speed paths a user would try, each against the eager float32 step of the same
    model: ``torch.compile`` of the net (full batch, the benchmark MLP), and on CUDA bf16
    autocast and channels-last for SmallConvNet on CIFAR-sized batches. Ratios > 1 help."""
    from lightning_modules.nets.cnn import SmallConvNet

    rows = []
    steps = 20 if quick else 60

    def step_seconds(net, x, y, compile_net=False, autocast=False, channels_last=False) -> float:
        net = net.to(device)
        if channels_last:
            net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        model = torch.compile(net) if compile_net else net
        opt = torch.optim.SGD(net.parameters(), lr=0.01)

        def one():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = ((model(x).float() - y) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(3):  # warm-up (and compilation)
            one()
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            one()
        sync(device)
        return (time.perf_counter() - start) / steps

    torch.manual_seed(0)
    x, y = torch.randn(2048, 64, device=device), torch.randn(2048, 1, device=device)
    eager = step_seconds(TwoLayerMLP(64, 1024, 1), x, y)
    try:
        compiled = step_seconds(TwoLayerMLP(64, 1024, 1), x, y, compile_net=True)
        rows.append(
            row(
                "speed_torch_compile_mlp",
                compiled * 1e3,
                eager * 1e3,
                "ms/step",
                eager / compiled,
                ">= 1.1",
                "torch.compile(TwoLayerMLP(64, 1024)) vs eager, full batch n=2048 (compilation excluded)",
            )
        )
    except Exception as err:  # noqa: BLE001 (no compiler toolchain, unsupported backend)
        rows.append(
            {
                "name": "speed_torch_compile_mlp",
                "ours": None,
                "reference": None,
                "unit": "ms/step",
                "ratio": None,
                "target": ">= 1.1",
                "meets_target": None,
                "note": f"skipped: torch.compile failed ({type(err).__name__})",
            }
        )
    if device.type == "cuda":
        xi, yi = torch.randn(256, 3, 32, 32, device=device), torch.randn(256, 10, device=device)
        eager = step_seconds(SmallConvNet(3 * 32 * 32, 10, width=64, input_shape=(3, 32, 32)), xi, yi)
        for name, kwargs in (("speed_bf16_autocast_cnn", {"autocast": True}), ("speed_channels_last_cnn", {"channels_last": True})):
            fast = step_seconds(SmallConvNet(3 * 32 * 32, 10, width=64, input_shape=(3, 32, 32)), xi, yi, **kwargs)
            rows.append(
                row(
                    name,
                    fast * 1e3,
                    eager * 1e3,
                    "ms/step",
                    eager / fast,
                    ">= 1.1",
                    f"SmallConvNet(width 64), batch 256 of 3x32x32, {name.split('_')[1]} vs eager float32",
                )
            )
    return rows


def sweep_rows() -> list[dict]:
    """The same eight CI-size runs (configs/ci/gaussian_mixture.yaml, 4 widths x 2 seeds, 2 jobs) through
    ``scripts/sweep.py`` twice: forked from one server that imported the suite once (the default launcher)
    vs a new ``python scripts/train.py`` per run (``--launcher local_subprocess``), each sweep timed whole.
    About 2 minutes on 2 busy cores, so only in the full benchmark."""
    import subprocess  # noqa: PLC0415

    root = Path(__file__).resolve().parent.parent

    def sweep_seconds(launcher: str) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    str(root / "scripts" / "sweep.py"),
                    "--config",
                    str(root / "configs" / "ci" / "gaussian_mixture.yaml"),
                    "--grid",
                    "model.net.width=32,64,128,256",
                    "--seeds",
                    "2",
                    "--jobs",
                    "2",
                    "--out",
                    tmp,
                    "--launcher",
                    launcher,
                ],
                check=True,
                capture_output=True,
            )
            return time.perf_counter() - start

    forked = sweep_seconds("local")
    separate = sweep_seconds("local_subprocess")
    return [
        row(
            "sweep_runs_vs_separate_processes",
            forked,
            separate,
            "s",
            separate / forked,
            ">= 2",
            "8 runs of configs/ci/gaussian_mixture.yaml, --jobs 2: separate train.py processes / runs forked from one preloaded server",
        )
    ]


def ensemble_rows(quick: bool, device: torch.device) -> list[dict]:
    """A seed ensemble of E = 8 as one stacked model (``SupervisedModule(ensemble=8)``) vs the same 8 runs one
    after the other (``seed`` = 0 … 7): TwoLayerMLP width 256 on GaussianMixture n = 512, 50 full-batch SGD
    steps with the whole-set metrics after each, each fit timed whole (setup included)."""
    members, steps = 8, 50

    def fit_seconds(ensemble: int, seed: int) -> float:
        data = GaussianMixture(dim=32, n_clusters=4, cluster_std=0.3, n_train=512, n_test=512, batch_size=None, seed=0)
        model = SupervisedModule(TwoLayerMLP(32, 256, 1), lr=0.1, momentum=0.9, seed=seed, ensemble=ensemble)
        trainer = pl.Trainer(
            max_epochs=steps,
            accelerator=device.type,
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            profiler=NullProfiler(),  # as scripts/train.py runs it
        )
        use_lean_step(trainer)
        sync(device)
        start = time.perf_counter()
        trainer.fit(model, datamodule=data)
        sync(device)
        return time.perf_counter() - start

    fit_seconds(members, 0)  # warm-up: first allocations, vmap tracing caches
    stacked, sequential = paired(
        2 if quick else 3, lambda: fit_seconds(members, 0), lambda: sum(fit_seconds(1, seed) for seed in range(members))
    )
    return [
        row(
            "ensemble_vs_sequential_seeds",
            stacked,
            sequential,
            "s",
            sequential / stacked,
            ">= 1",
            f"{members} seeds of TwoLayerMLP(32, 256) on GaussianMixture n=512, {steps} full-batch steps with whole-set "
            "metrics: 8 sequential runs / one stacked ensemble run",
        )
    ]


def help_rows(quick: bool) -> list[dict]:
    """``scripts/train.py --help`` in a new process, printed from the help cache (overparam/help_cache.py)
    vs the full path (an empty cache: it imports Lightning and builds the parser), run alternately."""
    import subprocess  # noqa: PLC0415

    script = Path(__file__).resolve().parent.parent / "scripts" / "train.py"

    def help_seconds(cache: str) -> float:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, str(script), "--help"], check=True, capture_output=True, env={**os.environ, "XDG_CACHE_HOME": cache}
        )
        return time.perf_counter() - start

    def full_seconds() -> float:
        with tempfile.TemporaryDirectory() as empty:
            return help_seconds(empty)

    with tempfile.TemporaryDirectory() as warm:
        help_seconds(warm)  # records the text
        cached, full = paired(1 if quick else 3, lambda: help_seconds(warm), full_seconds)
    return [
        row(
            "help_cached_vs_full",
            cached,
            full,
            "s",
            full / cached,
            ">= 10",
            "scripts/train.py --help in a new process: the full path (empty cache) / printed from the help cache",
        )
    ]


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for CI (under 3 minutes on 2 CPU cores)")
    parser.add_argument("--out", default="benchmark_results.json", help="where to write the JSON results")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated groups: training_loop, diagnostics, overhead, speed, ensemble, "
        "sweep, help (speed paths need compilation, and sweep takes minutes: both run only without --quick)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    groups = {
        "training_loop": lambda: training_loop_rows(args.quick, device),
        "diagnostics": lambda: diagnostics_rows(args.quick),
        "overhead": lambda: diagnostics_overhead_rows(args.quick) if device.type == "cpu" else [],
        "speed": lambda: speed_path_rows(args.quick, device) if not args.quick else [],
        "sweep": lambda: sweep_rows() if not args.quick else [],
        "ensemble": lambda: ensemble_rows(args.quick, device),
        "help": lambda: help_rows(args.quick),
    }
    chosen = args.only.split(",") if args.only else list(groups)
    unknown = [g for g in chosen if g not in groups]
    if unknown:
        parser.error(f"--only expects some of {', '.join(groups)} but got {', '.join(unknown)}")
    results = [r for g in chosen for r in groups[g]()]
    report = {
        "machine": machine(),
        "torch": torch.__version__,
        "device": str(device),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{'name':40s} {'ours':>10s} {'reference':>10s} {'unit':>8s} {'ratio':>7s}  target    ok")
    for r in results:
        if r["ratio"] is None:
            print(f"{r['name']:40s} skipped: {r.get('note', '')}")
            continue
        print(
            f"{r['name']:40s} {r['ours']:10.4g} {r['reference']:10.4g} {r['unit']:>8s} {r['ratio']:7.3f}  {r['target']:8s}  {'yes' if r['meets_target'] else 'NO'}"
        )
    print(f"results written to {args.out}")
    return 0
