r"""Legendre polynomial energy of bounded total degree.

.. math:: V_\theta(u) = \sum_{0 < |k| \le D} \theta_k \prod_{i=1}^d \tilde P_{k_i}(2u_i - 1),
   \qquad \tilde P_k = \sqrt{2k+1}\,P_k,

with :math:`P_k` the Legendre polynomials (orthonormal on [0,1] after scaling).  The constant
term is excluded (it is absorbed by log Z).  Roughness penalty: :math:`\sum_k \theta_k^2
(\sum_i k_i(k_i+1))^2`, the Legendre analogue of :math:`\int (\text{Laplacian } V)^2`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.polynomial import legendre as npleg

from .base import LinearEnergy, multi_index_grid, total_degree_mask
from .interval import EPS64, F64, Interval

__all__ = ["LegendreEnergy"]


class LegendreEnergy(LinearEnergy):
    """Legendre energy on [0,1]^d with total degree ``degree`` (shape (n, d) → (n,))."""

    family = "legendre"

    def __init__(self, dim: int, degree: int = 12, dtype: torch.dtype = torch.float64):
        if degree < 1:
            raise ValueError("degree must be >= 1")
        super().__init__(dim, degree + 1, total_degree_mask(dim, degree), dtype=dtype)
        self.degree = int(degree)
        K = degree + 1
        # critical points of each P_k inside (-1, 1) and the values there, for exact 1-D ranges
        crit = np.full((K, max(K - 2, 1)), np.nan)
        cval = np.full((K, max(K - 2, 1)), np.nan)
        for k in range(2, K):
            c = np.zeros(k + 1)
            c[k] = 1.0
            r = np.real(npleg.legroots(npleg.legder(c)))
            crit[k, : r.size] = (r + 1) / 2
            cval[k, : r.size] = npleg.legval(r, c) * np.sqrt(2 * k + 1)
        self.register_buffer("_crit", torch.as_tensor(crit, dtype=dtype), persistent=False)
        self.register_buffer("_cval", torch.as_tensor(cval, dtype=dtype), persistent=False)
        self.register_buffer(
            "_scale", torch.sqrt(2 * torch.arange(K, dtype=dtype) + 1), persistent=False
        )

    def spec(self) -> dict:
        return {"family": self.family, "dim": self.dim, "degree": self.degree}

    def basis1d(self, t: torch.Tensor) -> torch.Tensor:
        x = 2 * t - 1
        P = [torch.ones_like(x), x]
        for k in range(1, self.degree):
            P.append(((2 * k + 1) * x * P[k] - k * P[k - 1]) / (k + 1))
        return torch.stack(P[: self.n_basis], dim=-1) * self._scale

    def basis1d_range(self, a: torch.Tensor, b: torch.Tensor) -> Interval:
        ends = torch.stack([self.basis1d(a), self.basis1d(b)])  # (2, m, K)
        lo, hi = ends.amin(0), ends.amax(0)
        inside = (self._crit[None] >= a[:, None, None]) & (self._crit[None] <= b[:, None, None])
        cv = self._cval[None].expand(a.shape[0], -1, -1)
        lo = torch.minimum(lo, torch.where(inside, cv, torch.inf).amin(-1))
        hi = torch.maximum(hi, torch.where(inside, cv, -torch.inf).amax(-1))
        return lo, hi

    def basis1d_deriv(self, t: torch.Tensor) -> torch.Tensor:
        """d/dt of the scaled Legendre basis, shape (n, K)."""
        x = 2 * t - 1
        P = [torch.ones_like(x), x]
        dP = [torch.zeros_like(x), torch.ones_like(x)]
        for k in range(1, self.degree):
            P.append(((2 * k + 1) * x * P[k] - k * P[k - 1]) / (k + 1))
            dP.append(dP[k - 1] + (2 * k + 1) * P[k])
        return 2 * torch.stack(dP[: self.n_basis], -1) * self._scale.to(t.dtype)

    def basis1d_deriv_range(self, a: torch.Tensor, b: torch.Tensor) -> Interval:
        """Range of each b_k′ over [a, b]: endpoints and the critical points of b_k′ inside."""
        ends = torch.stack([self.basis1d_deriv(a), self.basis1d_deriv(b)])
        lo, hi = ends.amin(0), ends.amax(0)
        crit, cval = _deriv_critical_points(self.n_basis)
        inside = (crit[None] >= a[:, None, None]) & (crit[None] <= b[:, None, None])
        cv = cval[None].expand(a.shape[0], -1, -1)
        lo = torch.minimum(lo, torch.where(inside, cv, torch.inf).amin(-1))
        hi = torch.maximum(hi, torch.where(inside, cv, -torch.inf).amax(-1))
        slack = 64 * EPS64 * self.n_basis**3
        return lo - slack, hi + slack

    def basis_sup(self) -> float:
        return math.sqrt(2 * self.n_basis + 1)

    def penalty_weights(self) -> torch.Tensor:
        k = multi_index_grid(self.dim, self.n_basis).to(self.coef.dtype)
        return (k * (k + 1)).sum(-1) ** 2


_DERIV_CRIT: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _deriv_critical_points(K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Critical points on [0,1] of each basis derivative and the derivative's values there."""
    if K not in _DERIV_CRIT:
        crit = np.full((K, max(K - 3, 1)), np.nan)
        cval = np.full((K, max(K - 3, 1)), np.nan)
        for k in range(3, K):
            c = np.zeros(k + 1)
            c[k] = 1.0
            r = np.real(npleg.legroots(npleg.legder(c, 2)))
            crit[k, : r.size] = (r + 1) / 2
            cval[k, : r.size] = 2 * np.sqrt(2 * k + 1) * npleg.legval(r, npleg.legder(c))
        _DERIV_CRIT[K] = (torch.as_tensor(crit, dtype=F64), torch.as_tensor(cval, dtype=F64))
    return _DERIV_CRIT[K]
