"""2-D density benchmark: KL(target ‖ model) on the built-in targets, ebmfit vs KDE and GMM.

For each target and data seed: n_train samples from the exact sampler; every method is fitted
on the same data in the same run; KL(target‖model) = E_target[log q* − log p̂] is estimated
from n_test fresh target samples with the exact target log-density (± its standard error).

Run:  OMP_WAIT_POLICY=PASSIVE python benchmarks/density2d.py [--seeds 3] [--methods ...]
Writes benchmarks/results/density2d.json and density2d.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
import tracemalloc

import numpy as np
import torch

from _common import environment, peak_rss_mb, write
from ebmfit import EnergyDensity
from ebmfit.baselines import LogitGMM, ReflectedKDE
from ebmfit.datasets import TARGETS, load_target

METHODS = {
    "ebmfit": lambda seed: EnergyDensity(low=0.0, high=1.0, random_state=seed),
    "ebmfit-gmmbase": lambda seed: EnergyDensity(base="gmm", low=0.0, high=1.0, random_state=seed),
    "ebmfit-legendre": lambda seed: EnergyDensity("legendre", low=0.0, high=1.0, random_state=seed),
    "ebmfit-cosine": lambda seed: EnergyDensity("cosine", low=0.0, high=1.0, random_state=seed),
    "ebmfit-mlp": lambda seed: EnergyDensity("mlp", low=0.0, high=1.0, random_state=seed),
    "kde": lambda seed: ReflectedKDE(random_state=seed),
    "gmm": lambda seed: LogitGMM(random_state=seed),
}


def kl_estimate(target, model, X_test) -> tuple[float, float]:
    diff = target.log_prob(X_test) - model.score_samples(X_test)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--targets", nargs="*", default=list(TARGETS))
    ap.add_argument("--methods", nargs="*", default=["ebmfit", "ebmfit-gmmbase", "kde", "gmm"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=50000)
    ap.add_argument("--name", default="density2d")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    env = environment()
    rows = []
    for tname in args.targets:
        target = load_target(tname)
        for seed in range(args.seeds):
            X = target.sample(args.n_train, random_state=1000 + seed)
            X_test = target.sample(args.n_test, random_state=2000 + seed)
            for m in args.methods:
                est = METHODS[m](seed)
                tracemalloc.start()
                t0 = time.perf_counter()
                est.fit(X)
                fit_time = time.perf_counter() - t0
                _, py_peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                kl, se = kl_estimate(target, est, X_test)
                row = {
                    "target": tname,
                    "seed": seed,
                    "method": m,
                    "kl": kl,
                    "kl_se": se,
                    "fit_time_s": fit_time,
                    "peak_rss_mb": peak_rss_mb(),
                    "py_peak_mb": py_peak / 2**20,
                }
                if hasattr(est, "log_partition_"):
                    row["log_z"] = est.log_partition_.value
                    row["log_z_err"] = est.log_partition_.stderr
                rows.append(row)
                print(
                    f"{tname:20s} seed={seed} {m:16s} KL={kl:.4f}±{se:.4f} t={fit_time:.1f}s",
                    flush=True,
                )
    # summary table: mean over seeds
    lines = [
        "| target | " + " | ".join(f"{m} KL (s)" for m in args.methods) + " | goal met |",
        "|---|" + "---|" * (len(args.methods) + 1),
    ]
    verdicts = {}
    for tname in args.targets:
        cells, means = [], {}
        for m in args.methods:
            r = [x for x in rows if x["target"] == tname and x["method"] == m]
            kl = np.mean([x["kl"] for x in r])
            se = np.sqrt(np.sum([x["kl_se"] ** 2 for x in r])) / len(r)
            sd = np.std([x["kl"] for x in r], ddof=1) if len(r) > 1 else float("nan")
            t = np.mean([x["fit_time_s"] for x in r])
            means[m] = kl
            cells.append(f"{kl:.4f} ± {se:.4f} (sd {sd:.4f}; {t:.1f} s)")
        goal = ""
        if {"ebmfit", "kde", "gmm"} <= set(means):
            best = min(means["kde"], means["gmm"])
            smooth = load_target(tname).smooth
            ok = means["ebmfit"] <= (0.5 * best if smooth else best)
            goal = ("yes" if ok else "no") + (" (≤ ½ best)" if smooth else " (beats both)")
            verdicts[tname] = ok
        lines.append(f"| {tname} | " + " | ".join(cells) + f" | {goal} |")
    table = "\n".join(lines) + (
        f"\n\nKL(target‖model) in nats, mean over {args.seeds} data seeds ± its standard error "
        f"from {args.n_test} fresh target samples per seed (sd: spread across seeds); fit time "
        f"is the mean wall time of `fit` on n_train={args.n_train}.\n"
    )
    write(
        args.name,
        {"environment": env, "args": vars(args), "rows": rows, "goal_met": verdicts},
        table,
    )


if __name__ == "__main__":
    main()
