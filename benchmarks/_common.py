"""Shared helpers for benchmark scripts: environment record and Markdown tables."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    import numpy
    import scipy
    import sklearn
    import torch

    import ebmfit

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
        "ebmfit": ebmfit.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_start": os.getloadavg(),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write(name: str, payload: dict, table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload["environment"]["loadavg_end"] = os.getloadavg()
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float))
    env = payload["environment"]
    head = (
        f"_torch {env['torch']} ({env['torch_threads']} threads), numpy {env['numpy']}, "
        f"sklearn {env['sklearn']}, {env['cpu_count']} CPUs, load average "
        f"{env['loadavg_start'][0]:.2f} → {env['loadavg_end'][0]:.2f}_\n\n"
    )
    (RESULTS / f"{name}.md").write_text(head + table)
    print(head + table)
