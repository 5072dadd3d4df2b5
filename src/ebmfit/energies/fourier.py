r"""Cosine-series energy on the unit cube.

.. math:: V_\theta(u) = \sum_{k \in \{0..K-1\}^d,\ k \ne 0} \theta_k \prod_{i=1}^d \cos(\pi k_i u_i).

The cosine basis is complete in :math:`L^2([0,1]^d)` with zero normal derivative at the faces,
which suits densities on a box (no periodic wrap-around).  Roughness penalty
:math:`\sum_k \theta_k^2 (\pi^2 |k|^2)^2`, proportional to :math:`\int (\Delta V)^2`.
"""

from __future__ import annotations

import math

import torch

from .base import LinearEnergy, multi_index_grid
from .interval import Interval

__all__ = ["CosineEnergy"]


class CosineEnergy(LinearEnergy):
    """Cosine series with frequencies 0..``n_freq``-1 per axis (shape (n, d) → (n,))."""

    family = "cosine"

    def __init__(self, dim: int, n_freq: int = 32, dtype: torch.dtype = torch.float64):
        if n_freq < 2:
            raise ValueError("n_freq must be >= 2")
        mask = torch.ones([n_freq] * dim)
        mask[(0,) * dim] = 0.0
        super().__init__(dim, n_freq, mask, dtype=dtype)
        self.register_buffer("_k", torch.arange(n_freq, dtype=dtype), persistent=False)

    def spec(self) -> dict:
        return {"family": self.family, "dim": self.dim, "n_freq": self.n_basis}

    def basis1d(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cos(math.pi * t[:, None] * self._k)

    def basis1d_range(self, a: torch.Tensor, b: torch.Tensor) -> Interval:
        k = self._k[None]
        pa, pb = k * a[:, None], k * b[:, None]  # phase / pi
        ca, cb = torch.cos(math.pi * pa), torch.cos(math.pi * pb)
        lo, hi = torch.minimum(ca, cb), torch.maximum(ca, cb)
        has_max = torch.ceil(pa / 2) * 2 <= pb  # an even multiple of pi in [pa, pb]
        has_min = torch.ceil((pa - 1) / 2) * 2 + 1 <= pb  # an odd multiple
        hi = torch.where(has_max, torch.ones_like(hi), hi)
        lo = torch.where(has_min, -torch.ones_like(lo), lo)
        return lo, hi

    def basis1d_deriv_range(self, a: torch.Tensor, b: torch.Tensor) -> Interval:
        """Range of d/dt cos(πkt) = −πk sin(πkt) over [a, b], with sin(πp) = cos(π(p − 1/2))."""
        k = self._k[None].to(a.dtype)
        pa, pb = k * a[:, None] - 0.5, k * b[:, None] - 0.5
        ca, cb = torch.cos(math.pi * pa), torch.cos(math.pi * pb)
        lo, hi = torch.minimum(ca, cb), torch.maximum(ca, cb)
        hi = torch.where(torch.ceil(pa / 2) * 2 <= pb, torch.ones_like(hi), hi)
        lo = torch.where(torch.ceil((pa - 1) / 2) * 2 + 1 <= pb, -torch.ones_like(lo), lo)
        s = math.pi * k
        tol = 1e-13 * (1 + s)
        return -s * hi - tol, -s * lo + tol

    def penalty_weights(self) -> torch.Tensor:
        k = multi_index_grid(self.dim, self.n_basis).to(self.coef.dtype)
        return (math.pi**2 * (k**2).sum(-1)) ** 2
