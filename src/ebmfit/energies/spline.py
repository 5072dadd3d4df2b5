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
from .interval import EPS64, F64, Interval, tensor_range

__all__ = ["SplineEnergy"]


def cardinal_cubic_deriv(s: torch.Tensor) -> torch.Tensor:
    """N′(s) of the cardinal cubic B-spline (supported on [0, 4])."""
    d1 = s**2 / 2
    d2 = (-9 * s**2 + 24 * s - 12) / 6
    d3 = (9 * s**2 - 48 * s + 60) / 6
    d4 = -((4 - s) ** 2) / 2
    out = torch.where(s < 1, d1, torch.where(s < 2, d2, torch.where(s < 3, d3, d4)))
    return torch.where((s >= 0) & (s < 4), out, torch.zeros_like(s))


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

    def __init__(
        self,
        dim: int,
        n_basis: int = 40,
        penalty_order: int = 3,
        dtype: torch.dtype = torch.float64,
    ):
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

    @property
    def panel_multiple(self) -> int:
        """The knot intervals per axis: the spline is a cubic polynomial on each."""
        return self.n_basis - 3

    def basis1d(self, t: torch.Tensor) -> torch.Tensor:
        return cardinal_cubic((t[:, None] - self._knots) / self.h)

    def basis1d_range(self, a: torch.Tensor, b: torch.Tensor) -> Interval:
        """Exact range of each B_j over [a, b]: N rises on [0, 2] and falls on [2, 4]."""
        sa = (a[:, None] - self._knots) / self.h
        sb = (b[:, None] - self._knots) / self.h
        hi = cardinal_cubic(torch.clamp(torch.full_like(sa, 2.0), sa, sb))
        lo = torch.minimum(cardinal_cubic(sa), cardinal_cubic(sb))
        tol = 4 * torch.finfo(sa.dtype).eps
        return (lo - tol).clamp_min(0), hi + tol

    def interval_bounds(self, lo: torch.Tensor, hi: torch.Tensor, chunk: int = 4096) -> Interval:
        r"""Sound bounds of V over boxes, using only the basis functions active on each box.

                Basis j is active on [a, b] iff its support :math:`(t_j, t_j + 4h)` meets it, i.e.
                :math:`\lfloor a/h
        floor \le j \le \lceil b/h
        ceil + 2`; a window of W active
                indices per axis is gathered (W ≤ 5 for boxes narrower than a knot interval), so the
                cost is :math:`W^d` per box, not :math:`K^d`.  Two sound enclosures are intersected:

                * convex hull (partition of unity, non-negative basis): min/max of the active θ_j;
                * interval product around the hull's midpoint c: :math:`V = c + \sum_j (	heta_j - c)
                  \prod_i B_{j_i}`, with exact 1-D ranges of each :math:`B_{j_i}` — this one shrinks
                  linearly with the box.

                Round-off (the partition of unity holds to a few ulps) is covered by a widening.
        """
        T = self.effective_coef().detach()
        lo, hi = lo.to(T.dtype), hi.to(T.dtype)
        K, d, h = self.n_basis, self.dim, self.h
        j0 = torch.clamp(torch.floor(lo / h) - 1, 0, K - 1).long()  # one extra index each side
        j1 = torch.clamp(torch.ceil(hi / h) + 3, 0, K - 1).long()  # keeps the test closed
        W = int((j1 - j0).max()) + 1 if lo.shape[0] else 1
        ar = torch.arange(W, device=T.device)
        flatT = T.reshape(-1)
        out_lo, out_hi = [], []
        step = max(1, min(chunk, 2_000_000 // (W**d)))
        for s0 in range(0, lo.shape[0], step):
            a, b = lo[s0 : s0 + step], hi[s0 : s0 + step]
            ja, jb = j0[s0 : s0 + step], j1[s0 : s0 + step]
            m = a.shape[0]
            flat = torch.zeros(m, 1, dtype=torch.long, device=T.device)
            act = torch.ones(m, 1, dtype=torch.bool, device=T.device)
            L = torch.ones(m, 1, dtype=T.dtype, device=T.device)
            H = torch.ones(m, 1, dtype=T.dtype, device=T.device)
            for i in range(d):
                idx = ja[:, i : i + 1] + ar  # (m, W)
                valid = idx <= jb[:, i : i + 1]
                idx = idx.clamp(max=K - 1)
                knots = self._knots[idx]
                sa = (a[:, i : i + 1] - knots) / h
                sb = (b[:, i : i + 1] - knots) / h
                bhi = cardinal_cubic(torch.clamp(torch.full_like(sa, 2.0), sa, sb))
                blo = torch.minimum(cardinal_cubic(sa), cardinal_cubic(sb))
                # an inactive or invalid index contributes exactly zero
                supp = (sa < 4) & (sb > 0) & valid
                bhi = torch.where(supp, bhi, torch.zeros_like(bhi))
                blo = torch.where(supp, blo, torch.zeros_like(blo))
                c4 = torch.stack(
                    [
                        L[:, :, None] * blo[:, None],
                        L[:, :, None] * bhi[:, None],
                        H[:, :, None] * blo[:, None],
                        H[:, :, None] * bhi[:, None],
                    ]
                )
                L, H = c4.amin(0).reshape(m, -1), c4.amax(0).reshape(m, -1)
                flat = (flat[:, :, None] * K + idx[:, None, :]).reshape(m, -1)
                act = (act[:, :, None] & supp[:, None, :]).reshape(m, -1)
            theta = flatT[flat]
            hull_lo = torch.where(act, theta, torch.inf).amin(1)
            hull_hi = torch.where(act, theta, -torch.inf).amax(1)
            c = (hull_lo + hull_hi) / 2
            t = torch.where(act, theta - c[:, None], torch.zeros_like(theta))
            prod_lo = torch.where(t >= 0, t * L, t * H).sum(1) + c
            prod_hi = torch.where(t >= 0, t * H, t * L).sum(1) + c
            out_lo.append(torch.maximum(hull_lo, prod_lo))
            out_hi.append(torch.minimum(hull_hi, prod_hi))
        vlo, vhi = torch.cat(out_lo), torch.cat(out_hi)
        eps = torch.finfo(T.dtype).eps
        slack = 64 * eps * (T.abs().max() * 4**d + vlo.abs() + vhi.abs())
        return vlo - slack, vhi + slack

    nested_bases = False  # different knots: no common basis

    def _basis_ranges(self, a: torch.Tensor, b: torch.Tensor, deriv: bool) -> Interval:
        """Exact ranges over [a, b] of every basis function B_j(t) = N((t − t_j)/h) (or of B_j′).

        N is C², zero outside [0, 4], increasing on [0, 2] and decreasing after (max 2/3 at 2);
        N′ has its extremes ±2/3 at s = 4/3 and 8/3 — so endpoints plus these points suffice.
        """
        knots, h = self._knots.to(F64), self.h
        sa = (a[:, None] - knots) / h
        sb = (b[:, None] - knots) / h
        if deriv:
            fa, fb = cardinal_cubic_deriv(sa) / h, cardinal_cubic_deriv(sb) / h
            crit = ((4 / 3, 2 / 3), (8 / 3, -2 / 3))
            scale = 1 / h
        else:
            fa, fb = cardinal_cubic(sa), cardinal_cubic(sb)
            crit = ((2.0, 2 / 3),)
            scale = 1.0
        lo, hi = torch.minimum(fa, fb), torch.maximum(fa, fb)
        for sc, val in crit:
            inside = (sa <= sc) & (sb >= sc)
            lo = torch.where(inside, torch.minimum(lo, torch.full_like(lo, val * scale)), lo)
            hi = torch.where(inside, torch.maximum(hi, torch.full_like(hi, val * scale)), hi)
        slack = 32 * EPS64 * scale * (1 + sa.abs().clamp_max(4) + sb.abs().clamp_max(4)) ** 3
        return lo - slack, hi + slack

    def basis1d_deriv_range(self, a: torch.Tensor, b: torch.Tensor) -> Interval:
        return self._basis_ranges(a.to(F64), b.to(F64), True)

    @torch.no_grad()
    def gradient_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        """Convex hull: ∂_i V = Σ_j C_j(u_i) (Δ_i θ)_j / h ∏ B_j(u_k) with quadratic B-splines C
        (a partition of unity on [0,1]); its range on a box lies between the extreme
        coefficients whose basis functions are active there — intersected with the
        (convergent) tensor-product enclosure of exact 1-D ranges."""
        lo, hi = lo.to(F64), hi.to(F64)
        T = self.effective_coef().detach().to(F64)
        K, h, d = self.n_basis, self.h, self.dim
        knots = self._knots.to(F64)
        qk = knots[1:]  # quadratic C_j, j = 1..K-1, supported on [t_j, t_j + 3h]

        def active(
            kn: torch.Tensor, width: float, a: torch.Tensor, b: torch.Tensor
        ) -> torch.Tensor:
            return (kn[None] <= b[:, None]) & (kn[None] + width >= a[:, None])

        glo, ghi = [], []
        m = lo.shape[0]
        for i in range(d):
            D = torch.diff(T, dim=i) / h
            act = None
            for j in range(d):
                aj = (
                    active(qk, 3 * h, lo[:, j], hi[:, j])
                    if j == i
                    else active(knots, 4 * h, lo[:, j], hi[:, j])
                )
                act = aj if act is None else (act[:, :, None] & aj[:, None, :]).reshape(m, -1)
            t = D.reshape(1, -1)
            glo.append(torch.where(act, t, torch.inf).amin(1))
            ghi.append(torch.where(act, t, -torch.inf).amax(1))
        glo, ghi = torch.stack(glo, -1), torch.stack(ghi, -1)
        slack = 64 * EPS64 * T.abs().max() / h * K
        glo, ghi = glo - slack, ghi + slack
        vals = [self._basis_ranges(lo[:, j], hi[:, j], False) for j in range(d)]
        ders = [self._basis_ranges(lo[:, j], hi[:, j], True) for j in range(d)]
        for i in range(d):
            rl, rh = tensor_range(T, [ders[j] if j == i else vals[j] for j in range(d)])
            glo[:, i] = torch.maximum(glo[:, i], rl)
            ghi[:, i] = torch.minimum(ghi[:, i], rh)
        return glo, ghi

    def roughness(self, coef: torch.Tensor | None = None) -> torch.Tensor:
        T = self.coef if coef is None else coef
        r = 1e-8 * (T**2).sum()
        for i in range(self.dim):
            r = r + (torch.diff(T, n=self.penalty_order, dim=i) ** 2).sum()
        return r

    def penalty_transform(self) -> tuple[torch.Tensor, torch.Tensor]:
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
