"""Benchmark: time to certify a 3x64 MLP energy pair, and bound / exact KL.

Pairs: a 3x64 SiLU MLP on 32 random Fourier features (scale 3), fitted for a fixed number of
Adam steps (exact shifted-grid negatives) to a 2-D target (banana) or to a 4-D Gaussian
mixture, against its float16 copy, its bfloat16 copy, a 30%-pruned copy, and a "nearby
training" (the same model after 50 more steps).  Each certificate targets a 10% gap between
the certified upper and the attained lower oscillation bounds; in 2-D the exact KLs are computed
by quadrature.  Targets (issue 4): 2-D < 10 s, 4-D < 2 min on 2 cores.

Run:  OMP_WAIT_POLICY=PASSIVE python benchmarks/certify.py   (writes benchmarks/results/certify.*)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import copy
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ebmfit import Box, EnergyModel
from ebmfit.certify import compress, kl_bound
from ebmfit.datasets import load_target
from ebmfit.energies import MLPEnergy
from ebmfit.training import ShiftedGridNegatives, fit_sgd

THREADS = 2
OUT = Path(__file__).parent / "results"


def data(dim: int, n: int, seed: int) -> np.ndarray:
    if dim == 2:
        return load_target("banana").sample(n, random_state=seed)
    rng = np.random.default_rng(seed)
    means = rng.uniform(0.3, 0.7, size=(3, dim))
    k = rng.integers(3, size=n)
    return np.clip(means[k] + 0.08 * rng.standard_normal((n, dim)), 0, 1)


def fitted_mlp(dim: int, steps: int, seed: int = 0, fourier_scale: float = 3.0):
    torch.manual_seed(seed)
    e = MLPEnergy(dim, hidden=(64, 64, 64), n_fourier=32, fourier_scale=fourier_scale, seed=seed)
    X = torch.as_tensor(data(dim, 6000, seed))
    g = torch.Generator().manual_seed(seed)
    neg = ShiftedGridNegatives(dim, points_per_axis={2: 64, 4: 8}[dim])
    fit_sgd(
        e, X[:5000], X[5000:], neg, max_iter=steps, lr=3e-3, val_every=50, patience=100, generator=g
    )
    for p in e.parameters():
        p.requires_grad_(False)
    return e, X, neg, g


def nearby(e, X, neg, g, steps: int = 50):
    e2 = copy.deepcopy(e)
    for p in e2.parameters():
        p.requires_grad_(True)
    fit_sgd(
        e2,
        X[:5000],
        X[5000:],
        neg,
        max_iter=steps,
        lr=1e-3,
        val_every=25,
        patience=100,
        generator=g,
    )
    for p in e2.parameters():
        p.requires_grad_(False)
    return e2


def row(dim, pair, cert, seconds, note=""):
    o = cert.osc
    r = {
        "dim": dim,
        "pair": pair,
        "seconds": round(seconds, 2),
        "converged": o.converged,
        "stop_reason": o.stop_reason,
        "osc_lower": o.lower,
        "osc_upper": o.upper,
        "rel_gap": o.rel_gap,
        "boxes": o.n_boxes,
        "kl_bound": cert.kl_upper,
        "kl_ab": None if cert.kl_ab is None else cert.kl_ab.value,
        "kl_ba": None if cert.kl_ba is None else cert.kl_ba.value,
        "method": o.method,
        "note": note,
    }
    if r["kl_ab"] is not None and max(r["kl_ab"], r["kl_ba"]) > 0:
        r["bound_over_exact"] = cert.kl_upper / max(r["kl_ab"], r["kl_ba"])
    print(
        f"{dim}-D {pair:<22} {seconds:7.1f} s  converged={o.converged}  osc in "
        f"[{o.lower:.4g}, {o.upper:.4g}] gap {100 * o.rel_gap:.3g}%  boxes {o.n_boxes}  "
        f"KL bound {cert.kl_upper:.3g}  exact {r['kl_ab']}",
        flush=True,
    )
    return r


def certify_pair(dim, name, model, other_energy=None, how=None, time_limit=120.0, note=""):
    t0 = time.perf_counter()
    if how is not None:
        _, cert = compress(model, how, amount=0.3, tol=0.1, time_limit=time_limit)
    else:
        cert = kl_bound(
            model, EnergyModel(other_energy, model.domain), tol=0.1, time_limit=time_limit
        )
    return row(dim, name, cert, time.perf_counter() - t0, note)


def main() -> None:
    torch.set_num_threads(THREADS)
    load0 = os.getloadavg()
    rows = []
    t_start = time.perf_counter()
    for dim, steps, tl in ((2, 300, 120.0), (4, 300, 120.0)):
        e, X, neg, g = fitted_mlp(dim, steps)
        model = EnergyModel(e, Box.unit(dim))
        for how in ("float16", "bfloat16", "prune"):
            if dim == 4 and how != "float16":
                continue  # 4-D: one pair (the budget is minutes per pair)
            rows.append(
                certify_pair(
                    dim, how if how != "prune" else "pruned 30%", model, how=how, time_limit=tl
                )
            )
        if dim == 2:
            rows.append(
                certify_pair(
                    dim,
                    "nearby training (+50)",
                    model,
                    other_energy=nearby(e, X, neg, g),
                    time_limit=tl,
                )
            )
    # the 4-D difficulty is set by the Fourier spectrum: a lower-frequency network for contrast
    e, X, neg, g = fitted_mlp(4, 300, fourier_scale=1.0)
    rows.append(
        certify_pair(
            4,
            "float16 (scale 1)",
            EnergyModel(e, Box.unit(4)),
            how="float16",
            time_limit=120.0,
            note="fourier_scale=1.0",
        )
    )
    meta = {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "model": "MLPEnergy(hidden=(64,64,64), n_fourier=32, fourier_scale=3), 300 Adam steps",
        "tol": 0.1,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "certify.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2, default=float)
    )
    lines = [
        "# Certify benchmark",
        "",
        f"torch {meta['torch']}, {meta['threads']} threads, OMP_WAIT_POLICY="
        f"{meta['omp_wait_policy']}, load average at start {tuple(round(x, 2) for x in load0)}, "
        f"at end {tuple(round(x, 2) for x in meta['loadavg_end'])} (2 cores shared).",
        f"Model: {meta['model']}. Target gap: 10% of the attained lower oscillation bound.",
        "",
        "| d | pair | seconds | converged | osc lower | osc upper | gap | boxes | KL bound "
        "| exact KL(A‖B) | bound / exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ex = "—" if r["kl_ab"] is None else f"{r['kl_ab']:.3g}"
        ratio = f"{r['bound_over_exact']:.3g}" if "bound_over_exact" in r else "—"
        conv = "yes" if r["converged"] else f"no ({r['stop_reason']})"
        gap = f"{100 * r['rel_gap']:.3g}%" if math.isfinite(r["rel_gap"]) else "∞"
        lines.append(
            f"| {r['dim']} | {r['pair']} | {r['seconds']} | {conv} | {r['osc_lower']:.4g} "
            f"| {r['osc_upper']:.4g} | {gap} | {r['boxes']} | {r['kl_bound']:.3g} | {ex} "
            f"| {ratio} |"
        )
    (OUT / "certify.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
