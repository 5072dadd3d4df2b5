r"""The bounds protocol every energy family implements, and the interval arithmetic it uses.

An energy :math:`V` on the unit cube states, for boxes :math:`B_k = [lo_k, hi_k]` (shape
(m, d)):

* ``interval_bounds(lo, hi)`` — sound :math:`\underline V_k \le V(u) \le \overline V_k` on
  :math:`B_k`, shape (m,) each (the exact sampler's envelope and the certificates);
* ``gradient_bounds(lo, hi)`` — a sound enclosure of :math:`\nabla V` on :math:`B_k`, shape
  (m, d) each, or ``None`` when the family has no rule;
* ``first_order_bounds(lo, hi)`` — a :class:`FirstOrder` form :math:`V(u) \in v_0 + g\cdot(u -
  c) \pm e`, :math:`g \in [g_{lo}, g_{hi}]`; the default is the mean-value form from the two
  rules above, MLPs give a second-order Taylor model;
* ``evaluation_error(lo, hi, dtype)`` — a bound on |V evaluated in ``dtype`` − exact V|
  (the rules above bound the exact function of the weights);
* ``difference_rule(other)`` — a :class:`DifferenceRule` enclosing ``other − self`` *jointly*
  (no dependency problem), or ``None``: linear energies of one basis (the coefficient
  difference), MLPs of one architecture (Taylor models of the difference).

Each family implements these in its own file; :mod:`ebmfit.certify` and
:mod:`ebmfit.samplers.exact` only call them.  Everything is computed in float64 with explicit
round-off allowances (Higham's :math:`\gamma_n`).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

import torch

__all__ = [
    "EPS64",
    "F64",
    "Bounded",
    "DifferenceRule",
    "FirstOrder",
    "bisect_boxes",
    "cos_range",
    "dot_tol",
    "gamma",
    "imul",
    "meet",
    "mid_rad",
    "tensor_range",
]

F64 = torch.float64
EPS64 = torch.finfo(F64).eps

Interval = tuple[torch.Tensor, torch.Tensor]


class FirstOrder(NamedTuple):
    r""":math:`V(u) \in v_0 + g\cdot(u - c) \pm e` with :math:`g \in [g_{lo}, g_{hi}]` over each box
    (c its centre); shapes (m,), (m, d), (m, d), (m,).  NaN rows carry no information."""

    v0: torch.Tensor
    glo: torch.Tensor
    ghi: torch.Tensor
    err: torch.Tensor


@runtime_checkable
class DifferenceRule(Protocol):
    """Joint enclosures of :math:`h = V_b - V_a` for a pair of energies of one family."""

    method: str

    def h(self, u: torch.Tensor) -> torch.Tensor:
        """h at points, float64, shape (n,)."""
        ...

    def bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        """Sound enclosure of h over boxes, shape (m,) each."""
        ...


@runtime_checkable
class Bounded(Protocol):
    """What the exact sampler and the certificates need from an energy."""

    dim: int

    def interval_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval: ...

    def gradient_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval | None: ...


def mid_rad(lo: torch.Tensor, hi: torch.Tensor) -> Interval:
    """Centre and radius of intervals."""
    return (lo + hi) / 2, (hi - lo) / 2


def imul(al: torch.Tensor, ah: torch.Tensor, bl: torch.Tensor, bh: torch.Tensor) -> Interval:
    """Interval product [al, ah] * [bl, bh] (elementwise, broadcasting)."""
    p = torch.stack(torch.broadcast_tensors(al * bl, al * bh, ah * bl, ah * bh))
    return p.amin(0), p.amax(0)


def meet(l1: torch.Tensor, h1: torch.Tensor, l2: torch.Tensor, h2: torch.Tensor) -> Interval:
    """Intersection of two enclosures; a NaN candidate (an overflowed rule) carries no information."""
    lo = torch.where(torch.isnan(l2), l1, torch.maximum(l1, l2))
    hi = torch.where(torch.isnan(h2), h1, torch.minimum(h1, h2))
    return lo, hi


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def gamma(n: int, u: float) -> float:
    r"""Higham's :math:`\gamma_n = nu/(1-nu)`: relative error bound of an n-term dot product."""
    nu = n * u
    return nu / (1 - nu) if nu < 1 else math.inf


def dot_tol(W: torch.Tensor) -> float:
    """Relative round-off allowance of a float64 dot product of W's row length (+ a bias and
    a final addition): Higham's γ_{n+2}, any summation order."""
    return 2 * gamma(W.shape[1] + 2, EPS64 / 2)


def cos_range(a: torch.Tensor, b: torch.Tensor) -> Interval:
    """Exact range of cos over [a, b] elementwise."""
    ca, cb = torch.cos(a), torch.cos(b)
    lo, hi = torch.minimum(ca, cb), torch.maximum(ca, cb)
    two_pi = 2 * math.pi
    has_max = torch.ceil(a / two_pi) * two_pi <= b
    has_min = torch.ceil((a - math.pi) / two_pi) * two_pi + math.pi <= b
    hi = torch.where(has_max, torch.ones_like(hi), hi)
    lo = torch.where(has_min, -torch.ones_like(lo), lo)
    tol = 1e-15 * (1 + a.abs() + b.abs())
    return (lo - tol).clamp_min(-1), (hi + tol).clamp_max(1)


def tensor_range(T: torch.Tensor, ranges: list[Interval]) -> Interval:
    r"""Enclosure of :math:`\sum_j T_j \prod_i f_{j_i}` given per-axis ranges (m, K) of f."""
    L, H = ranges[0]
    m = L.shape[0]
    for l2, h2 in ranges[1:]:
        L, H = imul(L[:, :, None], H[:, :, None], l2[:, None, :], h2[:, None, :])
        L, H = L.reshape(m, -1), H.reshape(m, -1)
    t = T.reshape(1, -1)
    vlo = torch.where(t >= 0, t * L, t * H).sum(1)
    vhi = torch.where(t >= 0, t * H, t * L).sum(1)
    slack = (
        4
        * gamma(T.numel() + 2 * len(ranges), EPS64)
        * ((t.abs() * torch.maximum(L.abs(), H.abs())).sum(1) + 1)
    )
    return vlo - slack, vhi + slack


def bisect_boxes(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2^d children of each box [lo_k, hi_k] (shape (m, d)) halved along every axis.

    Returns (lo, hi) of shape (m·2^d, d), the children of box k contiguous.  The 2^d corner
    table is built here, only when boxes are actually split.
    """
    d = lo.shape[-1]
    corners = torch.cartesian_prod(*[torch.tensor([0, 1], device=lo.device)] * d)
    corners = corners.reshape(-1, d).bool()[None]
    mid = (lo + hi) / 2
    clo = torch.where(corners, mid[:, None], lo[:, None]).reshape(-1, d)
    chi = torch.where(corners, hi[:, None], mid[:, None]).reshape(-1, d)
    return clo, chi
