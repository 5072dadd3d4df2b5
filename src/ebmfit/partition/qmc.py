r"""Randomised quasi-Monte Carlo (scrambled Sobol) estimate of :math:`\log Z = \log\mathbb{E}_P[e^{-V}]`.

With R independent Owen-scrambled Sobol point sets :math:`\{u^{(r)}_k\}_{k<N}` (each set is a
uniform sample of the cube marginally, so each :math:`\hat Z_r = \frac1N\sum_k e^{-V(u_k)}
p(u_k)` is unbiased), :math:`\hat Z = \frac1R\sum_r \hat Z_r` and, by the delta method,
:math:`\mathrm{SE}(\log\hat Z) \approx \mathrm{sd}(\hat Z_r) / (\sqrt R\,\hat Z)`.  By Jensen
:math:`\mathbb{E}[\log \hat Z] \le \log Z` (bias "lower", of order SE²/2).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import qmc

from ..base import BaseMeasure, Uniform
from ..energies.base import Energy
from .result import LogZ, QMCDiagnostics

__all__ = ["check_sobol", "combine_replicates", "log_integrand", "log_partition_qmc"]


def check_sobol(n_points: int, n_rep: int) -> None:
    """``ValueError`` unless ``n_points`` is a power of 2 (Sobol balance) and ``n_rep >= 2``
    (the replicates give the standard error)."""
    if n_points & (n_points - 1):
        raise ValueError("n_points must be a power of 2 for Sobol balance")
    if n_rep < 2:
        raise ValueError("n_rep must be >= 2 to estimate a standard error")


@torch.no_grad()
def log_integrand(
    energy: Energy, base: BaseMeasure, u: torch.Tensor, chunk: int = 65536
) -> torch.Tensor:
    r""":math:`-V(u) + \log p(u)` at points u of the cube (shape (n, d)) → (n,) float64, by chunks."""
    dev, dt = energy.param_device(), energy.param_dtype()
    parts = []
    for c in u.split(chunk):
        c = c.to(device=dev)
        li = -energy(c.to(dt)).to(torch.float64)
        if not isinstance(base, Uniform):
            li = li + base.log_prob(c)
        parts.append(li)
    return torch.cat(parts)


def combine_replicates(log_zr: np.ndarray, n_points: int) -> LogZ:
    r""":class:`LogZ` from R replicate estimates :math:`\log\hat Z_r` (shape (R,)) of
    ``n_points`` points each: log of their mean, SE by the delta method (module docstring)."""
    if not np.all(np.isfinite(log_zr)):
        raise FloatingPointError("log Z is not finite at the QMC points")
    shift = log_zr.max()
    z = np.exp(log_zr - shift)
    value = shift + math.log(z.mean())
    stderr = float(z.std(ddof=1) / (math.sqrt(log_zr.size) * z.mean()))
    diagnostics = QMCDiagnostics(np.asarray(log_zr, dtype=np.float64).copy(), int(n_points))
    return LogZ(float(value), stderr, "sobol-qmc", n_points * log_zr.size, "lower", diagnostics)


def log_partition_qmc(
    energy: Energy,
    base: BaseMeasure | None = None,
    *,
    n_points: int = 2**14,
    n_rep: int = 16,
    random_state: int | np.random.Generator | None = None,
    chunk: int = 65536,
) -> LogZ:
    """log Z by ``n_rep`` scrambled Sobol sets of ``n_points`` (a power of 2) points each;
    a :class:`LogZ` with :class:`~ebmfit.partition.result.QMCDiagnostics`."""
    d = energy.dim
    base = base if base is not None else Uniform(d)
    check_sobol(n_points, n_rep)
    rng = np.random.default_rng(random_state)
    m = int(math.log2(n_points))
    log_zr = []
    with torch.no_grad():
        for _ in range(n_rep):
            u = torch.as_tensor(qmc.Sobol(d, scramble=True, seed=rng).random_base2(m))
            li = log_integrand(energy, base, u, chunk)
            log_zr.append(float(torch.logsumexp(li, 0)) - math.log(n_points))
    return combine_replicates(np.asarray(log_zr), n_points)
