r"""Sound enclosures of :math:`h = V_b - V_a` over boxes, from the energies' bounds protocol.

Three rules, intersected where they apply (:mod:`ebmfit.energies.interval`):

1. *independent intervals* :math:`[\underline V_{b} - \overline V_{a},\ \overline V_{b} -
   \underline V_{a}]` from each energy's ``interval_bounds`` (any pair);
2. *first-order forms* :math:`h(c) + g\cdot(u - c)` from each energy's ``first_order_bounds``
   (mean-value forms, or Taylor models for MLPs): overestimate :math:`O(\mathrm{width}^2)`;
3. a *joint* rule from ``energy_a.difference_rule(energy_b)`` when the family has one (linear
   energies of one basis, MLPs of one architecture), which avoids the dependency problem.

With ``float_error`` both energies' ``evaluation_error`` in their own dtypes is added.  All work
is on CPU float64 copies of the energies.
"""

from __future__ import annotations

import copy

import torch

from ..energies import Energy
from ..energies.interval import EPS64, F64, DifferenceRule, Interval, meet

__all__ = ["Pair", "gradient_bounds", "make_pair", "value_bounds"]


def as64(energy: Energy) -> Energy:
    """A CPU float64 deep copy (exact: every float32/16 weight is a float64 number)."""
    return copy.deepcopy(energy).to(device="cpu", dtype=F64)


def value_bounds(energy: Energy, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
    """Sound float64 bounds of V over boxes (the family's ``interval_bounds``)."""
    with torch.no_grad():
        vl, vh = energy.interval_bounds(lo.to(F64), hi.to(F64))
    return vl.to(F64), vh.to(F64)


def gradient_bounds(energy: Energy, lo: torch.Tensor, hi: torch.Tensor) -> Interval | None:
    r"""Sound enclosure of :math:`\nabla V` over boxes ``[lo_k, hi_k]`` (shape (m, d)).

    Returns ``(glo, ghi)``, each of shape (m, d), or ``None`` when the family has no rule
    (e.g. :class:`~ebmfit.energies.CallableEnergy`): the family's ``gradient_bounds``.
    """
    with torch.no_grad():
        return energy.gradient_bounds(lo.to(F64), hi.to(F64))


class Pair:
    """Sound enclosures of h = V_b − V_a over boxes, and float64 evaluation of h."""

    def __init__(self, ea: Energy, eb: Energy, float_error: bool = False):
        if ea.dim != eb.dim:
            raise ValueError(f"energies have dimensions {ea.dim} and {eb.dim}")
        # the dtypes the models evaluate in (for float_error); all work is on CPU float64 copies
        self.dtypes = (ea.param_dtype(), eb.param_dtype())
        self.ea, self.eb = as64(ea), as64(eb)
        self.dim = ea.dim
        self.float_error = float_error
        self.rule: DifferenceRule | None = self.ea.difference_rule(self.eb)
        x = torch.full((1, self.dim), 0.5, dtype=F64)
        self.mean_value = self.rule is None and (
            self.ea.first_order_bounds(x, x) is not None
            and self.eb.first_order_bounds(x, x) is not None
        )
        if self.rule is not None:
            self.method = self.rule.method
        elif self.mean_value:
            self.method = "intervals ∩ first-order forms (Taylor model / mean-value)"
        else:
            self.method = "independent intervals"

    def h(self, u: torch.Tensor) -> torch.Tensor:
        if self.rule is not None:
            return self.rule.h(u)
        return self.eb(u).to(F64) - self.ea(u).to(F64)

    def h_and_grad(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = u.detach().clone().requires_grad_(True)
        v = self.h(u)
        (g,) = torch.autograd.grad(v.sum(), u)
        return v.detach(), g

    def fp(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor | float:
        """Evaluation-error allowance of both energies in their own dtypes (0 without
        ``float_error``)."""
        if not self.float_error:
            return 0.0
        return self.ea.evaluation_error(lo, hi, self.dtypes[0]) + self.eb.evaluation_error(
            lo, hi, self.dtypes[1]
        )

    @torch.no_grad()
    def bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        if self.rule is not None:
            hL, hH = self.rule.bounds(lo, hi)
        else:
            al, ah = value_bounds(self.ea, lo, hi)
            bl, bh = value_bounds(self.eb, lo, hi)
            hL, hH = bl - ah, bh - al
            fo = self._first_order(lo, hi) if self.mean_value else None
            if fo is not None:
                hL, hH = meet(hL, hH, *fo)
        E = self.fp(lo, hi)
        return hL - E, hH + E

    def _first_order(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval | None:
        fa, fb = self.ea.first_order_bounds(lo, hi), self.eb.first_order_bounds(lo, hi)
        if fa is None or fb is None:
            return None
        (a0, agl, agh, ae), (b0, bgl, bgh, be) = fa, fb
        r = (hi - lo) / 2
        s = (torch.maximum((bgh - agl).abs(), (bgl - agh).abs()) * r).sum(-1) + ae + be
        h0 = b0 - a0
        s = s + 8 * EPS64 * (a0.abs() + b0.abs())
        return h0 - s, h0 + s


def make_pair(ea: Energy, eb: Energy, float_error: bool = False) -> Pair:
    """The enclosure rules of ``V_b − V_a`` for two energies on one cube."""
    return Pair(ea, eb, float_error)
