"""Peak memory of default 3-D fits, and whether memory grows with the number of training steps.

Each configuration runs in a fresh subprocess (peak RSS is per process). Writes
benchmarks/results/memory3d.json and memory3d.md.

Run:  OMP_WAIT_POLICY=PASSIVE python benchmarks/memory3d.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import subprocess
import sys

from _common import environment, write

CHILD = r"""
import os, json, resource, time
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
import numpy as np
from ebmfit import EnergyDensity
rng = np.random.default_rng(0)
k = rng.integers(0, 4, 5000)
means = np.array([[0.3, 0.3, 0.3], [0.7, 0.7, 0.3], [0.3, 0.7, 0.7], [0.7, 0.3, 0.7]])
X = np.clip(means[k] + 0.07 * rng.standard_normal((5000, 3)), 0.001, 0.999)
energy, max_iter = {energy!r}, {max_iter!r}
t0 = time.perf_counter()
est = EnergyDensity(energy, low=0.0, high=1.0, max_iter=max_iter, random_state=0).fit(X)
fit_time = time.perf_counter() - t0
S = est.sample(20000, random_state=0)
print(json.dumps({{"energy": energy, "max_iter": max_iter, "fit_time_s": fit_time,
                  "n_iter": est.n_iter_, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "log_z": est.log_partition_.value, "log_z_err": est.log_partition_.stderr}}))
"""


def main() -> None:
    env = environment()
    rows = []
    for energy, max_iter in [("auto", None), ("mlp", 100), ("mlp", 400)]:
        code = CHILD.format(energy=energy, max_iter=max_iter)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=3600
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(row, flush=True)
    lines = [
        "| energy | Adam steps / L-BFGS cap | iterations run | fit time (s) | peak RSS (MB) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['energy']} | {r['max_iter']} | {r['n_iter']} | {r['fit_time_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    table = "\n".join(lines) + (
        "\n\nDefault 3-D fits on n = 5000 (a 4-component mixture), then 20 000 samples (exact "
        "rejection for the spline, the MCMC fallback for the MLP whose interval bounds are too "
        "loose), each in a fresh process; peak RSS includes the Python interpreter and torch "
        "(≈ 300–400 MB by themselves). The two MLP rows differ only in the number of "
        "training steps: equal peaks mean memory does not grow with training.\n"
    )
    write("memory3d", {"environment": env, "rows": rows}, table)


if __name__ == "__main__":
    main()
