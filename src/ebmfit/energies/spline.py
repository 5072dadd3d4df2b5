r"""Tensor-product cubic B-spline energy (a log-spline density, P-spline penalty).

.. math:: V_\theta(u) = \sum_{j \in \{0..K-1\}^d} \theta_j \prod_{i=1}^d B_{j_i}(u_i),

with :math:`B_j(t) = N((t - t_j)/h)`, the cardinal cubic B-spline N on uniform knots
:math:`t_j = (j-3)h`, :math:`h = 1/(K-3)`.  On [0,1] the basis is a partition of unity, so by
the convex-hull property :math:`\min_{j\in A}\theta_j \le V(u) \le \max_{j\in A}\theta_j`
where A indexes the basis functions whose support meets the box — sound, and intersected with the interval product
of exact 1-D basis ranges, which shrinks linearly with the box.

Roughness penalty (Eilers & Marx): squared differences of order ``penalty_order`` of θ along
each axis (order 3 has local quadratics — Gaussian bumps — in its null space, as in
Silverman's penalised log-density), plus a
tiny ridge that pins the constant direction (which log Z absorbs).
"""

from __future__ import annotations

import torch

from .base import LinearEnergy

__all__ = ["SplineEnergy"]


def cardinal_cubic(s: torch.Tensor) -> torch.Tensor:
    """The cardinal cubic B-spline N(s), supported on [0, 4]."""
    s1 = s**3 / 6
    s2 = (-3 * s**3 + 12 * s**2 - 12 * s + 4) / 6
    s3 = (3 * s**3 - 24 * s**2 + 60 * s - 44) / 6
    s4 = (4 - s) ** 3 / 6
    out = torch.where(s < 1, s1, torch.where(s < 2, s2, torch.where(s < 3, s3, s4)))
    return torch.where((s >= 0) & (s < 4), out, torch.zeros_like(s))


class SplineEnergy(LinearEnergy):
    """Cubic B-spline energy with ``n_basis`` basis functions per axis (shape (n, d) → (n,))."""

    family = "spline"

    def __init__(self, dim: int, n_basis: int = 40, penalty_order: int = 3, dtype=torch.float64):
        if n_basis < 4:
            raise ValueError("n_basis must be >= 4 for cubic splines")
        if penalty_order not in (1, 2, 3):
            raise ValueError("penalty_order must be 1, 2 or 3")
        super().__init__(dim, n_basis, torch.ones([n_basis] * dim), dtype=dtype)
        self.penalty_order = int(penalty_order)
        h = 1.0 / (n_basis - 3)
        self.h = h
        self.register_buffer(
            "_knots", (torch.arange(n_basis, dtype=dtype) - 3) * h, persistent=False
        )

    def spec(self) -> dict:
        return {
            "family": self.family,
            "dim": self.dim,
            "n_basis": self.n_basis,
            "penalty_order": self.penalty_order,
        }

    def basis1d(self, t: torch.Tensor) -> torch.Tensor:
        return cardinal_cubic((t[:, None] - self._knots) / self.h)

    def basis1d_range(self, a: torch.Tensor, b: torch.Tensor):
        """Exact range of each B_j over [a, b]: N rises on [0, 2] and falls on [2, 4]."""
        sa = (a[:, None] - self._knots) / self.h
        sb = (b[:, None] - self._knots) / self.h
        hi = cardinal_cubic(torch.clamp(torch.full_like(sa, 2.0), sa, sb))
        lo = torch.minimum(cardinal_cubic(sa), cardinal_cubic(sb))
        tol = 4 * torch.finfo(sa.dtype).eps
        return (lo - tol).clamp_min(0), hi + tol

    def _active(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(m, K) boolean: support (t_j, t_j + 4h) of basis j meets [a, b] (closed, to be safe)."""
        return (self._knots[None] <= b[:, None]) & (self._knots[None] + 4 * self.h >= a[:, None])

    def interval_bounds(self, lo: torch.Tensor, hi: torch.Tensor, chunk: int = 1024):
        """The intersection of the convex-hull bound (tight on large boxes) and the interval
        product of exact 1-D basis ranges (which shrinks linearly with the box)."""
        hull_lo, hull_hi = self._hull_bounds(lo, hi, chunk)
        prod_lo, prod_hi = super().interval_bounds(lo, hi, chunk)
        return torch.maximum(hull_lo, prod_lo), torch.minimum(hull_hi, prod_hi)

    def _hull_bounds(self, lo: torch.Tensor, hi: torch.Tensor, chunk: int):
        T = self.effective_coef().detach()
        lo, hi = lo.to(T.dtype), hi.to(T.dtype)
        chunk = max(1, min(chunk, 2_000_000 // T.numel()))
        vlo, vhi = [], []
        for a, b in zip(lo.split(chunk), hi.split(chunk), strict=True):
            m = a.shape[0]
            act = self._active(a[:, 0], b[:, 0])
            for i in range(1, self.dim):
                act = (act[:, :, None] & self._active(a[:, i], b[:, i])[:, None, :]).reshape(m, -1)
            t = T.reshape(1, -1)
            vlo.append(torch.where(act, t, torch.inf).amin(1))
            vhi.append(torch.where(act, t, -torch.inf).amax(1))
        vlo, vhi = torch.cat(vlo), torch.cat(vhi)
        # partition of unity holds to round-off: allow |V| * K^d * eps
        slack = 16 * torch.finfo(T.dtype).eps * T.abs().max() * self.n_basis
        return vlo - slack, vhi + slack

    def roughness(self, coef: torch.Tensor | None = None) -> torch.Tensor:
        T = self.coef if coef is None else coef
        r = 1e-8 * (T**2).sum()
        for i in range(self.dim):
            r = r + (torch.diff(T, n=self.penalty_order, dim=i) ** 2).sum()
        return r

    def penalty_transform(self):
        """Demmler–Reinsch basis: eigenvectors of the 1-D difference penalty DᵀD."""
        K = self.n_basis
        D = torch.diff(torch.eye(K, dtype=self.coef.dtype), n=self.penalty_order, dim=0)
        evals, Q = torch.linalg.eigh(D.T @ D)
        evals = evals.clamp_min(0).to(self.coef.device)
        out = torch.full_like(self.coef, 2e-8)
        for i in range(self.dim):
            shape = [1] * self.dim
            shape[i] = K
            out = out + 2 * evals.reshape(shape)
        return Q.to(self.coef.device), out

    def roughness_diag(self) -> torch.Tensor:
        K = self.n_basis
        D = torch.diff(torch.eye(K, dtype=self.coef.dtype), n=self.penalty_order, dim=0)
        d1 = (D**2).sum(0).to(self.coef.device)
        out = torch.full_like(self.coef, 2e-8)
        for i in range(self.dim):
            shape = [1] * self.dim
            shape[i] = K
            out = out + 2 * d1.reshape(shape)
        return out
