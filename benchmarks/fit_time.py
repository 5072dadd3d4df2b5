"""Wall time of the default fit at the sizes the real-data issue names (n ≤ 50 000, d ≤ 64).

The data are synthetic but shaped like a user's table: a latent 8-D Gaussian mapped to 64
columns, half of them through exp (skewed, piled near the lower face) and half through tanh
(bounded, piled near both faces), with independent noise.  One default fit
(``EnergyDensity(random_state=0)``, box from the data) per size; the time, the peak memory,
what the selection kept, the mean test log-likelihood on 10 000 fresh rows of the same table
(``score``: rows outside the fitted box are censored at it) and the machine load are written.

Run:  OMP_WAIT_POLICY=PASSIVE python benchmarks/fit_time.py [--sizes 50000x64 ...]
Writes benchmarks/results/fit_time.json and fit_time.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
import warnings

import numpy as np

from _common import environment, peak_rss_mb, write
from ebmfit import EnergyDensity


def table_like(n: int, d: int, seed: int = 0) -> np.ndarray:
    """(n, d): correlated, skewed and face-piled columns (see the module docstring)."""
    rng = np.random.default_rng(seed)
    k = min(8, d)
    Z = rng.normal(size=(n, k))
    A = rng.normal(size=(k, d)) / np.sqrt(k)
    Y = Z @ A + 0.3 * rng.normal(size=(n, d))
    return np.where(np.arange(d) % 2 == 0, np.exp(0.5 * Y), np.tanh(Y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="*", default=["50000x64"], help="NxD")
    ap.add_argument("--name", default="fit_time")
    ap.add_argument("--test-rows", type=int, default=10_000)
    args = ap.parse_args()
    env = environment()
    rows = []
    for size in args.sizes:
        n, d = (int(v) for v in size.lower().split("x"))
        X_all = table_like(n + args.test_rows, d)
        X, X_test = X_all[:n], X_all[n:]
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = EnergyDensity(random_state=0).fit(X)
        t = time.perf_counter() - t0
        test_ll = float(est.score(X_test)) if len(X_test) else float("nan")
        rows.append(
            {
                "n": n,
                "d": d,
                "fit_time_s": t,
                "load_start": load,
                "peak_rss_mb": peak_rss_mb(),
                "chosen": est.selection_.chosen,
                "base": type(est.base_).__name__,
                "test_ll": test_ll,
            }
        )
        print(rows[-1], flush=True)
    lines = [
        "| n | d | default fit (s) | load at start | peak RSS (MB) | kept | base | test ll |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['d']} | {r['fit_time_s']:.1f} | {r['load_start']:.2f} | "
            f"{r['peak_rss_mb']:.0f} | {r['chosen']} | {r['base']} | {r['test_ll']:.3f} |"
        )
    table = "\n".join(lines) + (
        "\n\nOne default fit per size on a synthetic table-like data set (see the script); "
        "target: at most 5 minutes on 2 cores. 'test ll': mean log-likelihood per row of "
        f"{args.test_rows} fresh rows of the same table (nats, higher is better).\n"
    )
    write(args.name, {"environment": env, "args": vars(args), "rows": rows}, table)


if __name__ == "__main__":
    main()
