"""Benchmarks of the diagnostics (callbacks/sharpness.py, callbacks/kernel.py) against references and peers.

Each public function takes ``quick`` and returns rows ``{name, ours, reference, unit, ratio, target,
meets_target[, note]}`` in the format of scripts/benchmark.py; ``ratio`` is reference / ours (larger is
better for us) and ``target`` applies to it. A peer library that is not installed gives a row with
``ours``, ``reference``, ``ratio`` and ``meets_target`` = None and the reason in ``note``. Peers are
optional (``pip install curvlinops-for-pytorch pyhessian nngeometry hessian-eigenthings``).

    python scripts/bench_diagnostics.py [--quick] [--only sharpness,density]   # prints the rows as JSON
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from callbacks.kernel import jacobian_ntk, two_layer_ntk
from callbacks.sharpness import (
    hessian_power_iteration,
    hessian_spectral_density,
    hessian_top_eigs,
    hessian_trace,
    hvp_operator,
    preserved_state,
)
from datamodules.synthetic import GaussianMixture
from lightning_modules import losses
from lightning_modules.nets.mlp import TwoLayerMLP

ROOT = Path(__file__).resolve().parent.parent
ACCURACY = 1e-3  # relative accuracy of λ_max asked of every method


def row(name: str, ours: float, reference: float, unit: str, ratio: float, target: str, note: str = "") -> dict:
    """One result; ``target`` is like ">= 2" or "<= 30" and applies to ``ratio``."""
    op, bound = target.split()
    meets = ratio <= float(bound) if op == "<=" else ratio >= float(bound)
    out = {"name": name, "ours": ours, "reference": reference, "unit": unit, "ratio": ratio, "target": target, "meets_target": bool(meets)}
    return {**out, "note": note} if note else out


def skipped(name: str, unit: str, target: str, reason: str) -> dict:
    return {
        "name": name,
        "ours": None,
        "reference": None,
        "unit": unit,
        "ratio": None,
        "target": target,
        "meets_target": None,
        "note": f"skipped: {reason}",
    }


def seconds(fn: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def mse(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return losses.mean_loss("mse", output, y)


def default_problem(clustered: bool = False, n_train: int = 2048, gd_steps: int = 20):
    """configs/default.yaml's model and data: TwoLayerMLP(16, 512, 1, relu, ntk) on the XOR Gaussian
    mixture (dim 16, σ = 0.2, n = 2048), MSE, after ``gd_steps`` full-batch GD steps at lr 0.5.

    Its top Hessian eigenvalue is isolated (λ₂/λ₁ ≈ 0.06), the easiest case for power iteration.
    ``clustered`` instead takes 4 separate clusters with 4 one-hot outputs: the top eigenvalues
    then come in a cluster (λ₂/λ₁ ≈ 0.99), as for any multi-output net, where power iteration crawls.
    """
    data = GaussianMixture(dim=16, n_clusters=4, xor=not clustered, cluster_std=0.2, n_train=n_train, n_test=16, seed=0)
    data.prepare_splits()
    torch.manual_seed(0)
    net = TwoLayerMLP(16, 512, data.output_dim, "relu", parameterization="ntk")
    x, y = data.train.x, data.train.y
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(gd_steps):
        opt.zero_grad()
        mse(net(x), y).backward()
        opt.step()
    net.zero_grad(set_to_none=True)
    return net, mse, x, y


def _describe(clustered: bool, net, loss_fn, x, y) -> tuple[float, str]:
    """Exact λ_max (Lanczos to 1e-10) and a one-line description of the problem with λ₂/λ₁."""
    top = hessian_top_eigs(net, loss_fn, x, y, k=2, tol=1e-10)[0]
    what = "4 clusters, 4 outputs" if clustered else "default.yaml XOR mixture, 1 output"
    return float(
        top[0]
    ), f"TwoLayerMLP(16, 512, relu, ntk), {what}, n={len(x)}, 20 GD steps; λ1={float(top[0]):.5g}, λ2/λ1={float(top[1] / top[0]):.3f}"


def alternating(
    ours: Callable[[], object], reference: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None
) -> tuple[float, float, object, object]:
    """Best wall time of each of two calls run alternately (ours first) ``repeats`` times, and their last results."""
    best, outs = [float("inf"), float("inf")], [None, None]
    for _ in range(repeats):
        for i, fn in enumerate((ours, reference)):
            sync()
            start = time.perf_counter()
            outs[i] = fn()
            sync()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1], outs[0], outs[1]


def _loosest_power_tol(net, loss_fn, x, y, exact: float) -> tuple[float, float]:
    """The loosest of PyHessian's stopping tolerances 1e-3, 1e-4, ... at which power iteration's λ is within
    ACCURACY of ``exact`` (chosen knowing the answer, so generous to it), and the relative error at tol = 1e-3."""
    first_error = None
    for tol in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
        eig, _ = hessian_power_iteration(net, loss_fn, x, y, tol=tol, max_iter=5000)
        error = abs(eig - exact) / abs(exact)
        first_error = error if first_error is None else first_error
        if error <= ACCURACY:
            break
    return tol, first_error


def _oracle_power_iteration(net, loss_fn, x, y, exact: float, max_iter: int = 5000) -> tuple[float, int]:
    """Power iteration from hessian_top_eigs' start vector, stopped by an oracle at the first Rayleigh quotient
    within ACCURACY of ``exact`` (no stopping rule can stop earlier). Returns (λ, HVPs)."""
    with preserved_state(net, train=True):
        hvp = hvp_operator(net, loss_fn, x, y)
        params = [p for p in net.parameters() if p.requires_grad]
        v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(params[0])
        v = v / v.norm()
        for i in range(1, max_iter + 1):
            hv = hvp(v).detach()
            rayleigh = float(hv @ v)
            if abs(rayleigh - exact) <= ACCURACY * abs(exact):
                break
            v = hv / hv.norm()
    return rayleigh, i


# ---- sharpness ------------------------------------------------------------------------------------
def sharpness_hvps_vs_power_iteration(quick: bool) -> list[dict]:
    """λ_max to 1e-3 relative: our Lanczos (stopped by its residual rule at tol 1e-3) vs power iteration at
    equal accuracy — on the default model PyHessian's stopping rule at the loosest tolerance that is accurate,
    on the clustered spectrum oracle-stopped power iteration (the most generous reference). HVPs and seconds,
    alternating runs, best of several."""
    rows, repeats = [], 3 if quick else 5
    for clustered in (False, True):
        net, loss_fn, x, y = default_problem(clustered, n_train=256 if quick else 2048)
        exact, setting = _describe(clustered, net, loss_fn, x, y)
        if clustered:
            reference = partial(_oracle_power_iteration, net, loss_fn, x, y, exact)
            how = "oracle-stopped power iteration (first iterate within 1e-3)"
        else:
            p_tol, p_error = _loosest_power_tol(net, loss_fn, x, y, exact)
            reference = partial(hessian_power_iteration, net, loss_fn, x, y, tol=p_tol, max_iter=5000)
            how = f"power iteration with PyHessian's rule at tol={p_tol:g} (error {p_error:.1e})"
        secs, p_secs, (eigs, n_hvp), (_, p_hvp) = alternating(
            partial(hessian_top_eigs, net, loss_fn, x, y, tol=ACCURACY), reference, repeats
        )
        error = abs(float(eigs[0]) - exact) / abs(exact)
        suffix, target = ("_clustered", ">= 4") if clustered else ("", ">= 1")
        if not clustered:
            rows.append(
                row("sharpness_lanczos_hvps", n_hvp, 30, "HVPs", n_hvp, "<= 30", f"{setting}; tol 1e-3 gives relative error {error:.1e}")
            )
        rows.append(
            row(
                f"sharpness_hvps_vs_power_iteration{suffix}",
                n_hvp,
                p_hvp,
                "HVPs",
                p_hvp / n_hvp,
                target,
                f"{setting}; {how}; ours: error {error:.1e}",
            )
        )
        rows.append(
            row(
                f"sharpness_seconds_vs_power_iteration{suffix}",
                secs,
                p_secs,
                "s",
                p_secs / secs,
                target,
                f"same runs, alternating, best of {repeats}",
            )
        )
    return rows


def sharpness_vs_arpack(quick: bool) -> list[dict]:
    """λ_max to 1e-3: our Lanczos vs ARPACK (scipy eigsh, the previous default) at the same tol, on the model's
    device: on the host every ARPACK product is a NumPy round trip, on a GPU a device→host→device copy."""
    rows, repeats = [], 3 if quick else 5
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
        target = ">= 2" if device == "cuda" else ">= 1"
        for clustered in (False, True):
            net, loss_fn, x, y = default_problem(clustered, n_train=256 if quick else 2048)
            exact, setting = _describe(clustered, net, loss_fn, x, y)
            net, x, y = net.to(device), x.to(device), y.to(device)
            secs, a_secs, (eigs, n_hvp), (a_eigs, a_hvp) = alternating(
                lambda: hessian_top_eigs(net, loss_fn, x, y, tol=ACCURACY),
                lambda: hessian_top_eigs(net, loss_fn, x, y, tol=ACCURACY, method="arpack"),
                repeats,
                sync,
            )
            errors = [abs(float(e[0]) - exact) / abs(exact) for e in (eigs, a_eigs)]
            rows.append(
                row(
                    f"sharpness_seconds_vs_arpack_{device}{'_clustered' if clustered else ''}",
                    secs,
                    a_secs,
                    "s",
                    a_secs / secs,
                    target,
                    f"{setting}; on {device}; HVPs ours {n_hvp}, ARPACK {a_hvp}; errors {errors[0]:.1e} / {errors[1]:.1e}; "
                    f"alternating, best of {repeats}",
                )
            )
    if "cuda" not in devices:
        rows.append(skipped("sharpness_seconds_vs_arpack_cuda", "s", ">= 2", "no CUDA device"))
    return rows


def hvp_vs_curvlinops(quick: bool) -> list[dict]:
    """Seconds per Hessian-vector product (one reused gradient graph vs curvlinops' jvp(jacrev)), and per λ_max
    to 1e-3: our Lanczos vs curvlinops' operator under scipy eigsh (its documented use) at equal accuracy."""
    name, unit = "sharpness_hvp_vs_curvlinops", "ms/HVP"
    try:
        from curvlinops import HessianLinearOperator
    except ImportError as err:
        return [
            skipped(name, unit, ">= 1.5", f"curvlinops-for-pytorch not installed ({err})"),
            skipped("sharpness_lambda_max_vs_curvlinops", "s", ">= 4", f"curvlinops-for-pytorch not installed ({err})"),
        ]
    import numpy as np
    from scipy.sparse.linalg import eigsh
    from threadpoolctl import threadpool_limits

    net, loss_fn, x, y = default_problem(n_train=256 if quick else 2048)
    exact, setting = _describe(False, net, loss_fn, x, y)
    t = (2.0 * y - 1.0).float()[:, None]  # the ±1 targets of our binary MSE

    class HalfMSE(nn.Module):  # our loss as a module with a `reduction`, as curvlinops wants
        reduction = "mean"

        def forward(self, output, target):
            return 0.5 * ((output - target) ** 2).sum(1).mean()

    params = [p for p in net.parameters() if p.requires_grad]
    n_prod, repeats = (10, 3) if quick else (100, 5)
    vs = torch.randn(n_prod, sum(p.numel() for p in params), generator=torch.Generator().manual_seed(0))
    op = HessianLinearOperator(net, HalfMSE(), params, [(x, t)], check_deterministic=False)
    with preserved_state(net, train=True):
        hvp = hvp_operator(net, loss_fn, x, y)
        ours, theirs, out_ours, out_theirs = alternating(lambda: [hvp(v) for v in vs], lambda: [op @ v for v in vs], repeats)
    diff = max(float((a - b).norm() / b.norm()) for a, b in zip(out_ours, out_theirs))
    rows = [
        row(
            name,
            1e3 * ours / n_prod,
            1e3 * theirs / n_prod,
            unit,
            theirs / ours,
            ">= 1.5",
            f"default model; ours: one gradient graph reused; curvlinops: jvp(jacrev) per product; products agree to {diff:.1e}",
        )
    ]
    scipy_op = op.to_scipy()
    v0 = np.random.default_rng(0).standard_normal(scipy_op.shape[0])

    def curvlinops_eigsh():
        with threadpool_limits(1, "blas"):
            return eigsh(scipy_op, k=1, which="LA", tol=ACCURACY, v0=v0, return_eigenvectors=False)

    ours_s, theirs_s, (eigs, n_hvp), lam = alternating(
        lambda: hessian_top_eigs(net, loss_fn, x, y, tol=ACCURACY), curvlinops_eigsh, repeats
    )
    errors = [abs(float(e) - exact) / abs(exact) for e in (eigs[0], lam[0])]
    rows.append(
        row(
            "sharpness_lambda_max_vs_curvlinops",
            ours_s,
            theirs_s,
            "s",
            theirs_s / ours_s,
            ">= 4",
            f"{setting}; ours: Lanczos, {n_hvp} HVPs; curvlinops: HessianLinearOperator + eigsh at tol 1e-3; "
            f"relative errors {errors[0]:.1e} / {errors[1]:.1e}; alternating, best of {repeats}",
        )
    )
    return rows


def _pyhessian_module():
    """PyHessian's hessian module (the package re-exports the class under the same name)."""
    import pyhessian  # noqa: F401

    return sys.modules["pyhessian.hessian"]


@contextmanager
def _torch_eig_for_pyhessian() -> Iterator[None]:
    """``torch.eig`` (removed in torch 2.0; PyHessian 0.1's ``density`` calls it) by ``torch.linalg.eigh``, exact
    here: PyHessian passes it its symmetric tridiagonal T."""
    original = getattr(torch, "eig", None)

    def eig(matrix: torch.Tensor, eigenvectors: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        values, vectors = torch.linalg.eigh(matrix)
        return torch.stack([values, torch.zeros_like(values)], 1), vectors

    torch.eig = eig
    try:
        yield
    finally:
        torch.eig = original


def sharpness_vs_pyhessian(quick: bool) -> list[dict]:
    """λ_max to 1e-3 on the clustered problem: ours vs PyHessian's own power iteration (its tol lowered until as accurate)."""
    name, unit = "sharpness_vs_pyhessian", "HVPs"
    try:
        ph = _pyhessian_module()
    except ImportError as err:
        return [skipped(name, unit, ">= 2", f"pyhessian not installed ({err})")]
    net, loss_fn, x, y = default_problem(clustered=True, n_train=256 if quick else 2048)
    exact, setting = _describe(True, net, loss_fn, x, y)
    count, original = [0], ph.hessian_vector_product

    def counted(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    def run(tol: float) -> tuple[float, int]:
        count[0] = 0
        torch.manual_seed(0)
        lam, _ = ph.hessian(copy.deepcopy(net), loss_fn, data=(x, y), cuda=False).eigenvalues(maxIter=5000, tol=tol)
        return lam[0], count[0]

    ph.hessian_vector_product = counted
    try:
        default_error = None
        for tol in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
            lam, theirs = run(tol)
            error = abs(lam - exact) / abs(exact)
            default_error = error if default_error is None else default_error
            if error <= ACCURACY:
                break
        ours_s, theirs_s, (eigs, n_hvp), _ = alternating(
            lambda: hessian_top_eigs(net, loss_fn, x, y, tol=ACCURACY), lambda: run(tol), 1 if quick else 3
        )
    finally:
        ph.hessian_vector_product = original
    return [
        row(
            name,
            n_hvp,
            theirs,
            unit,
            theirs / n_hvp,
            ">= 2",
            f"{setting}; PyHessian's default tol=1e-3 stops at relative error {default_error:.1e}, it needs tol={tol:g}; "
            f"seconds: ours {ours_s:.3f}, PyHessian {theirs_s:.3f}",
        )
    ]


def density_vs_pyhessian(quick: bool) -> list[dict]:
    """Eigenvalue density by stochastic Lanczos quadrature at equal probes and steps: hessian_spectral_density
    (nodes, weights and the smoothed density on its grid) vs PyHessian's ``density`` (nodes and weights only)."""
    name, unit = "sharpness_density_vs_pyhessian", "s"
    try:
        ph = _pyhessian_module()
    except ImportError as err:
        return [skipped(name, unit, ">= 1", f"pyhessian not installed ({err})")]
    net, loss_fn, x, y = default_problem(n_train=256 if quick else 2048)
    n_probes, n_steps, repeats = (1, 40, 2) if quick else (1, 100, 3)  # PyHessian's defaults: n_v=1, iter=100

    def theirs():
        torch.manual_seed(0)
        with _torch_eig_for_pyhessian():
            return ph.hessian(net, loss_fn, data=(x, y), cuda=False).density(iter=n_steps, n_v=n_probes)

    ours_s, theirs_s, (grid, density), (nodes, weights) = alternating(
        lambda: hessian_spectral_density(net, loss_fn, x, y, n_probes=n_probes, n_steps=n_steps), theirs, repeats
    )
    net.zero_grad(set_to_none=True)
    ours_mean = float(torch.trapezoid(grid * density, grid))
    theirs_mean = sum(float(n) * float(w) for ns, ws in zip(nodes, weights) for n, w in zip(ns, ws)) / n_probes
    reference = hessian_trace(net, loss_fn, x, y, n_probes=100) / sum(p.numel() for p in net.parameters())
    return [
        row(
            name,
            ours_s,
            theirs_s,
            unit,
            theirs_s / ours_s,
            ">= 1",
            f"default model, {n_probes} probe(s) × {n_steps} Lanczos steps each, full reorthogonalization in both, the same Rademacher probes (seed 0); "
            f"mean eigenvalue ours {ours_mean:.6g}, PyHessian {theirs_mean:.6g}, tr(H)/P (100 Hutchinson probes) {reference:.3g}; "
            f"alternating, best of {repeats}",
        )
    ]


def sharpness_vs_hessian_eigenthings(quick: bool) -> list[dict]:
    """λ_max to 1e-3 on the clustered problem: ours vs hessian-eigenthings' Lanczos (step count raised until as accurate)."""
    name, unit = "sharpness_vs_hessian_eigenthings", "s"
    try:
        import hessian_eigenthings as he
    except ImportError as err:
        return [skipped(name, unit, ">= 1.5", f"hessian-eigenthings not installed ({err})")]
    net, loss_fn, x, y = default_problem(clustered=True, n_train=256 if quick else 2048)
    exact, setting = _describe(True, net, loss_fn, x, y)
    op = he.HessianOperator(net, [(x, y)], he.supervised_loss(loss_fn))
    for steps in (5, 10, 15, 20, 30, 40, 60, 80):
        result = he.lanczos(op, k=1, max_iter=steps, which="LA", seed=0)
        if abs(float(result.eigenvalues[0]) - exact) <= ACCURACY * abs(exact):
            break
    ours_s, theirs_s, (eigs, n_hvp), _ = alternating(
        lambda: hessian_top_eigs(net, loss_fn, x, y, tol=ACCURACY), lambda: he.lanczos(op, k=1, max_iter=steps, which="LA", seed=0), 3
    )
    return [
        row(
            name,
            ours_s,
            theirs_s,
            unit,
            theirs_s / ours_s,
            ">= 1.5",
            f"{setting}; their Lanczos needs {steps} steps (a forward and a double backward each) for 1e-3; ours {n_hvp} HVPs on one graph",
        )
    ]


# ---- NTK ------------------------------------------------------------------------------------------
def _peak_memory_mb(dim: int, width: int, n: int, chunk_size: Optional[int]) -> float:
    """Peak resident memory (MiB) added by jacobian_ntk on TwoLayerMLP(dim, width, 1) and n probes, in a fresh
    process, read from /proc/self/statm every millisecond."""
    code = textwrap.dedent(f"""
        import os, sys, threading, time, torch
        sys.path.insert(0, {str(ROOT)!r})
        from callbacks.kernel import jacobian_ntk
        from lightning_modules.nets.mlp import TwoLayerMLP
        rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
        torch.manual_seed(0)
        net, x = TwoLayerMLP({dim}, {width}, 1, parameterization="ntk"), torch.randn({n}, {dim})
        jacobian_ntk(net, x[:8])  # warm up torch.func
        before, peak, done = rss(), [0.0], threading.Event()
        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], rss())
                time.sleep(0.001)
        watcher = threading.Thread(target=watch)
        watcher.start()
        jacobian_ntk(net, x, {chunk_size})
        done.set()
        watcher.join()
        print(max(peak[0], rss()) - before)
    """)
    # Large blocks straight from mmap, so freed Jacobian chunks leave the RSS at once (no glibc arena caching).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.split()[-1])


def ntk_closed_form_vs_jacrev(quick: bool) -> list[dict]:
    """Two-layer NTK: closed form vs the generic vmap(jacrev) path (time ratio ≥ 20), and the generic path's memory.

    Both are dominated by n×n Gram products, over m(d+2) Jacobian columns for the generic path and
    over 2m features for the closed form, so the ratio grows with the input dimension d.
    """
    rows = []
    n, chunk = (256, 256) if quick else (1024, 256)
    for dim in (16, 64):
        for width in (1024, 4096):
            torch.manual_seed(0)
            net, x = TwoLayerMLP(dim, width, 1, parameterization="ntk"), torch.randn(n, dim)
            closed_s, closed = seconds(lambda: two_layer_ntk(net, x), repeats=3)
            generic_s, generic = seconds(lambda: jacobian_ntk(net, x, chunk_size=chunk))
            diff = float((closed - generic).norm() / generic.norm())
            rows.append(
                row(
                    f"ntk_closed_form_vs_jacrev_d{dim}_w{width}",
                    closed_s,
                    generic_s,
                    "s",
                    generic_s / closed_s,
                    ">= 20",
                    f"TwoLayerMLP({dim}, {width}, 1, relu, ntk), {n} probes, jacrev in chunks of {chunk}; kernels agree to {diff:.1e}",
                )
            )
    for dim in (16,) if quick else (16, 64):
        peak = _peak_memory_mb(dim, 4096, n, chunk)
        rows.append(
            row(
                f"ntk_jacrev_peak_memory_d{dim}_w4096",
                peak,
                2048.0,
                "MiB",
                peak,
                "<= 2048",
                f"peak RSS added by the generic path, TwoLayerMLP({dim}, 4096, 1), {n} probes, chunk_size={chunk} (fresh process)",
            )
        )
    return rows


def ntk_vs_nngeometry(quick: bool) -> list[dict]:
    """Two-layer NTK: our closed form vs nngeometry's GramMatrix (per-layer hooks)."""
    name, unit = "ntk_vs_nngeometry", "s"
    try:
        from nngeometry import GramMatrix
    except ImportError as err:
        return [skipped(name, unit, ">= 2", f"nngeometry not installed ({err})")]
    from torch.utils.data import DataLoader, TensorDataset

    n, width = (256, 1024) if quick else (1024, 4096)
    torch.manual_seed(0)
    net, x = TwoLayerMLP(16, width, 1, parameterization="ntk"), torch.randn(n, 16)
    ours_s, ours = seconds(lambda: two_layer_ntk(net, x), repeats=3)
    loader = DataLoader(TensorDataset(x, torch.zeros(n)), batch_size=256)
    theirs_s, gram = seconds(lambda: GramMatrix(copy.deepcopy(net), loader).data)
    theirs = torch.einsum("kakb->ab", gram)  # (k, n, k, n) -> Σ_k
    diff = float((ours - theirs).norm() / theirs.norm())
    return [
        row(
            name,
            ours_s,
            theirs_s,
            unit,
            theirs_s / ours_s,
            ">= 2",
            f"TwoLayerMLP(16, {width}, 1), {n} probes, batches of 256; nngeometry also contracts per layer (x xᵀ ∘ g gᵀ); kernels agree to {diff:.1e}",
        )
    ]


ALL = (
    sharpness_hvps_vs_power_iteration,
    sharpness_vs_arpack,
    hvp_vs_curvlinops,
    sharpness_vs_pyhessian,
    density_vs_pyhessian,
    sharpness_vs_hessian_eigenthings,
    ntk_closed_form_vs_jacrev,
    ntk_vs_nngeometry,
)


def all_rows(quick: bool) -> list[dict]:
    return [r for bench in ALL for r in bench(quick)]


def main(argv: Optional[list[str]] = None) -> int:
    """``python scripts/bench_diagnostics.py [--quick] [--only ...]``: the rows as JSON lines on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (under 60 s on 2 CPU cores)")
    parser.add_argument("--only", default=None, help="comma-separated parts of benchmark names to run, e.g. sharpness,density")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for bench in ALL:
        if args.only and not any(part in bench.__name__ for part in args.only.split(",")):
            continue
        t0 = time.perf_counter()
        for r in bench(args.quick):
            print(json.dumps(r))
        print(f"# {bench.__name__}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print(f"# total {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
