r"""Log-space tensor-product composite Gauss–Legendre quadrature of :math:`Z = \mathbb{E}_P[e^{-V}]`.

On the unit cube, with base density :math:`p = dP/du`,

.. math:: \log Z = \log \int_{[0,1]^d} e^{-V(u)} p(u)\,du
          \approx \operatorname{logsumexp}_g\big(\log w_g - V(u_g) + \log p(u_g)\big),

where :math:`(u_g, w_g)` is the tensor product of a 1-D composite rule: [0,1] cut into
``n_cells`` equal cells with ``n_nodes`` Gauss–Legendre nodes each (exact for polynomials of
degree 2·n_nodes − 1 on every cell).  The error estimate is the difference between two
resolutions (``n_cells`` and ``2·n_cells``); the finer value is returned.  Accumulation is in
float64; the energy is evaluated in chunks so memory stays bounded.

A *randomly shifted* rule (nodes moved by a uniform shift modulo 1, independently per axis) is
an unbiased estimator of Z for any integrand; the fit loop uses it so that a model cannot learn
to hide mass between fixed nodes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..base import BaseMeasure, Uniform
from ..energies.base import tensor_grid
from .result import LogZ

__all__ = [
    "default_resolution",
    "gauss_legendre_1d",
    "grid_log_integrand",
    "log_partition_quadrature",
]

MAX_DIM = 3


def gauss_legendre_1d(
    n_cells: int, n_nodes: int, shift: float = 0.0, dtype=torch.float64, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite Gauss–Legendre rule on [0, 1]: nodes and weights, each shape (n_cells·n_nodes,).

    With ``shift`` ≠ 0 every node is moved by ``shift`` modulo 1 (weights unchanged).
    """
    x, w = np.polynomial.legendre.leggauss(int(n_nodes))
    h = 1.0 / n_cells
    left = np.arange(n_cells)[:, None] * h
    nodes = (left + (x[None] + 1) / 2 * h).ravel()
    weights = np.tile(w / 2 * h, n_cells)
    if shift:
        nodes = np.mod(nodes + shift, 1.0)
    return (
        torch.as_tensor(nodes, dtype=dtype, device=device),
        torch.as_tensor(weights, dtype=dtype, device=device),
    )


def default_resolution(dim: int) -> tuple[int, int]:
    """(n_cells, n_nodes) of the *coarse* level of the checking rule for dimension ``dim``."""
    return {1: (256, 8), 2: (64, 4), 3: (16, 4)}.get(dim, (8, 3))


def grid_log_integrand(
    energy,
    base: BaseMeasure,
    axes: list[torch.Tensor],
    weights: list[torch.Tensor],
    chunk: int = 65536,
) -> torch.Tensor:
    r""":math:`\log w_g - V(u_g) + \log p(u_g)` over the tensor grid, flattened (C order), float64."""
    with torch.no_grad():
        dev = energy.param_device()
        axes_e = [a.to(device=dev) for a in axes]
        V = energy.grid_values([a.to(energy.param_dtype()) for a in axes_e]).to(torch.float64)
        logw = torch.zeros((), dtype=torch.float64, device=V.device)
        for w in weights:
            logw = (logw[..., None] + torch.log(w.to(device=V.device))).reshape(-1)
        out = logw - V
        if not isinstance(base, Uniform):
            pts = tensor_grid([a.to(torch.float64) for a in axes_e])
            lp = torch.cat([base.log_prob(c) for c in pts.split(chunk)])
            out = out + lp.to(out.device)
    return out


def log_partition_quadrature(
    energy,
    base: BaseMeasure | None = None,
    *,
    n_cells: int | None = None,
    n_nodes: int | None = None,
) -> LogZ:
    """log Z by composite Gauss–Legendre at ``n_cells`` and ``2·n_cells``; returns :class:`LogZ`.

    ``stderr`` is the absolute difference between the two levels (an error estimate for the
    coarse level and, for smooth integrands, a generous one for the fine level returned).
    """
    d = energy.dim
    if d > MAX_DIM:
        raise ValueError(
            f"tensor quadrature is limited to d <= {MAX_DIM} (got d={d}); use method='qmc'"
        )
    base = base if base is not None else Uniform(d)
    c0, q0 = default_resolution(d)
    n_cells = int(n_cells or c0)
    n_nodes = int(n_nodes or q0)
    vals = []
    n_evals = 0
    for cells in (n_cells, 2 * n_cells):
        ax, w = gauss_legendre_1d(cells, n_nodes)
        li = grid_log_integrand(energy, base, [ax] * d, [w] * d)
        vals.append(float(torch.logsumexp(li, 0)))
        n_evals += li.numel()
    if not all(math.isfinite(v) for v in vals):
        raise FloatingPointError(f"log Z is not finite at the quadrature nodes: {vals}")
    return LogZ(vals[1], abs(vals[1] - vals[0]), "gauss-legendre", n_evals, "none")
