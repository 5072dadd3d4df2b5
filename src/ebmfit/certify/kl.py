r"""KL between two tilts: the exact value by quadrature (d ≤ 3) and the certified bound.

For :math:`Q_i = e^{-V_i}\,dP / \mathbb{E}_P[e^{-V_i}]` and :math:`h = V_2 - V_1`,

.. math:: \mathrm{KL}(Q_1\,\|\,Q_2) = \mathbb{E}_{Q_1}[h] + \log \mathbb{E}_{Q_1}[e^{-h}]
          \le \min\big(\operatorname{osc}(h),\ \operatorname{osc}(h)^2/8\big)

by Hoeffding's lemma, for any P and both directions (``DESIGN.md``'s corrected §3(a)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ..base import BaseMeasure
from ..energies import Energy
from ..energies.interval import F64
from ..grid import gauss_legendre_1d, tensor_log_weights
from ..model import EnergyModel
from ..partition.quadrature import grid_log_integrand
from .bnb import OscillationBounds, oscillation_bounds

__all__ = ["KLCertificate", "KLEstimate", "kl_bound", "kl_from_osc", "kl_quadrature"]


def kl_from_osc(osc: float) -> float:
    r"""The KL bound :math:`\min(\mathrm{osc}, \mathrm{osc}^2/8)` (Hoeffding), for either direction."""
    if not math.isfinite(osc):
        return math.inf
    return float(min(osc, osc * osc / 8.0))


class KLEstimate(NamedTuple):
    """A KL divergence by quadrature: ``value`` with ``error`` (difference of two resolutions)."""

    value: float
    error: float
    method: str
    n_evals: int

    def __str__(self) -> str:
        return f"{self.value:.4g} ± {self.error:.1g} ({self.method})"

    def to_dict(self) -> dict:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in self._asdict().items()
        }


def _kl_on_grid(Ua: torch.Tensor, Ub: torch.Tensor, lw: torch.Tensor) -> float:
    r"""KL between the grid laws :math:`\pi_a \propto w e^{-U_a}` and :math:`\pi_b \propto w e^{-U_b}`.

    :math:`\mathrm{KL} = \mathbb{E}_{\pi_a}[s] + \log Z_b - \log Z_a`, :math:`s = U_b - U_a`.
    Where :math:`\pi_a > 0` at every node, :math:`\log Z_b - \log Z_a = \log\mathbb{E}_{\pi_a}
    [e^{-s}]` and, with :math:`c = \mathbb{E}_{\pi_a}[s]`, :math:`\mathrm{KL} =
    \operatorname{log1p}(\mathbb{E}_{\pi_a}[\operatorname{expm1}(-(s - c))])`, accurate even for
    tiny KL; otherwise (:math:`Q_a` has zeros) the two normalizers are summed separately.
    """
    la, lb = lw - Ua, lw - Ub
    lza, lzb = torch.logsumexp(la, 0), torch.logsumexp(lb, 0)
    pa = torch.exp(la - lza)
    on = pa > 0
    if not bool(torch.isfinite(Ub[on]).all()):
        return math.inf
    s = (Ub - Ua)[on]
    p = pa[on]
    c = (p * s).sum() / p.sum()
    if bool(on.all()):
        e = (p * torch.expm1(-(s - c))).sum() / p.sum()
        return float(torch.log1p(e).clamp_min(0.0))
    return float((c + lzb - lza).clamp_min(0.0))


def _grid_terms(
    energy: Energy, base: BaseMeasure, axes: list[torch.Tensor], weights: list[torch.Tensor]
):
    """(U, log w) on the grid with the potential U = V − log dP/du (:func:`ebmfit.model.potential`),
    so that the density is ∝ w e^{−U}."""
    li = grid_log_integrand(energy, base, axes, weights)
    lw = tensor_log_weights(weights, F64)
    return lw - li, lw


def _check_models(model_a: EnergyModel, model_b: EnergyModel, same_base: bool):
    if model_a.dim != model_b.dim:
        raise ValueError(f"models have dimensions {model_a.dim} and {model_b.dim}")
    if model_a.domain != model_b.domain:
        raise ValueError(
            f"models live on different boxes ({model_a.domain} vs {model_b.domain}); "
            "their KL is not a comparison of energies"
        )
    if same_base and model_a.base.to_dict() != model_b.base.to_dict():
        raise ValueError(
            "the certificate compares two tilts of the same base measure P; the "
            f"models have bases {model_a.base} and {model_b.base}"
        )


def _kl_both(model_a: EnergyModel, model_b: EnergyModel, n_cells: int | None, n_nodes: int | None):
    d = model_a.dim
    if d > 3:
        raise ValueError(f"quadrature KL needs d <= 3 (got d = {d})")
    c0, q0 = {1: (512, 8), 2: (64, 4), 3: (16, 4)}[d]
    n_cells, n_nodes = int(n_cells or c0), int(n_nodes or q0)
    res = []
    for cells in (n_cells, 2 * n_cells):
        ax, w = gauss_legendre_1d(cells, n_nodes)
        Ua, lw = _grid_terms(model_a.energy_fn, model_a.base, [ax] * d, [w] * d)
        Ub, _ = _grid_terms(model_b.energy_fn, model_b.base, [ax] * d, [w] * d)
        res.append((_kl_on_grid(Ua, Ub, lw), _kl_on_grid(Ub, Ua, lw), 2 * Ua.numel()))
    n = res[0][2] + res[1][2]
    method = f"gauss-legendre {2 * n_cells}x{n_nodes} per axis"
    ab = KLEstimate(res[1][0], abs(res[1][0] - res[0][0]), method, n)
    ba = KLEstimate(res[1][1], abs(res[1][1] - res[0][1]), method, n)
    return ab, ba


def kl_quadrature(
    model_a: EnergyModel,
    model_b: EnergyModel,
    *,
    n_cells: int | None = None,
    n_nodes: int | None = None,
) -> KLEstimate:
    r""":math:`\mathrm{KL}(Q_a\,\|\,Q_b)` by tensor composite Gauss–Legendre quadrature (d ≤ 3).

    Computed in log space on the unit cube as
    :math:`\mathbb{E}_{Q_a}[U_b - U_a] + \log Z_b - \log Z_a` with the potential
    :math:`U = V - \log dP/du` (the form :func:`_kl_on_grid` evaluates without cancellation), at ``n_cells`` and
    ``2·n_cells`` cells per axis (``n_nodes`` nodes each); the finer value is returned with the
    difference as ``error``.  The models must share the box (bases may differ).
    """
    _check_models(model_a, model_b, same_base=False)
    return _kl_both(model_a, model_b, n_cells, n_nodes)[0]


# ============================================================================ certificates
@dataclass
class KLCertificate:
    r"""Certified :math:`\mathrm{KL}(Q_a\|Q_b),\ \mathrm{KL}(Q_b\|Q_a) \le` ``kl_upper``.

    Attributes:
        osc: the :class:`OscillationBounds` of :math:`V_b - V_a`.
        kl_upper: :math:`\min(\mathrm{osc}^+, (\mathrm{osc}^+)^2/8)`, sound for both directions.
        kl_ab, kl_ba: the KLs by quadrature (d ≤ 3) or None.
        labels: names of the two models in reports.
    """

    osc: OscillationBounds
    kl_upper: float
    kl_ab: KLEstimate | None = None
    kl_ba: KLEstimate | None = None
    labels: tuple[str, str] = ("A", "B")

    @property
    def osc_interval(self) -> tuple[float, float]:
        return (self.osc.lower, self.osc.upper)

    @property
    def kl_at_osc_lower(self) -> float:
        """The bound evaluated at the attained lower end (not a bound: shows what the gap costs)."""
        return kl_from_osc(self.osc.lower)

    @property
    def holds(self) -> bool | None:
        """Whether the quadrature KLs lie below the bound (None without quadrature)."""
        if self.kl_ab is None or self.kl_ba is None:
            return None
        return self.kl_ab.value <= self.kl_upper and self.kl_ba.value <= self.kl_upper

    def __str__(self) -> str:
        a, b = self.labels
        o = self.osc
        status = (
            "converged"
            if o.converged
            else f"NOT converged: {o.stop_reason}; upper bound still sound"
        )
        lines = [
            f"KL certificate  A = {a}  vs  B = {b}",
            f"  osc(V_B - V_A) in [{o.lower:.6g}, {o.upper:.6g}]  (gap {o.gap:.3g}, "
            f"{100 * o.rel_gap:.3g}% of lower; tol {100 * o.tol:g}%; {status})",
            f"  sup h in [{o.sup_lower:.6g}, {o.sup_upper:.6g}] at u = "
            + ", ".join(f"{v:.4f}" for v in o.argmax),
            f"  inf h in [{o.inf_lower:.6g}, {o.inf_upper:.6g}] at u = "
            + ", ".join(f"{v:.4f}" for v in o.argmin),
            f"  KL(A||B) and KL(B||A) <= min(osc, osc^2/8) = {self.kl_upper:.6g}",
        ]
        if self.kl_ab is not None:
            lines.append(f"  quadrature: KL(A||B) = {self.kl_ab}")
            lines.append(f"              KL(B||A) = {self.kl_ba}")
            if self.kl_ab.value > 0 and self.kl_ba.value > 0:
                r = self.kl_upper / max(self.kl_ab.value, self.kl_ba.value)
                lines.append(f"  bound / max exact KL = {r:.3g}")
        lines.append(f"  {o.n_boxes} boxes in {o.n_rounds} rounds, {o.seconds:.2f} s ({o.method})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "labels": list(self.labels),
            "osc": self.osc.to_dict(),
            "kl_upper": None if not math.isfinite(self.kl_upper) else self.kl_upper,
            "kl_ab": None if self.kl_ab is None else self.kl_ab.to_dict(),
            "kl_ba": None if self.kl_ba is None else self.kl_ba.to_dict(),
            "holds": self.holds,
        }


def kl_bound(
    model_a: EnergyModel,
    model_b: EnergyModel,
    *,
    tol: float = 0.1,
    exact: bool | None = None,
    labels: tuple[str, str] = ("A", "B"),
    n_cells: int | None = None,
    n_nodes: int | None = None,
    **osc_kwargs: Any,
) -> KLCertificate:
    r"""Certify :math:`\mathrm{KL}(Q_a\|Q_b)` and :math:`\mathrm{KL}(Q_b\|Q_a)` from above.

    The two models must share the box and the base measure P (any P: the bound does not
    depend on it).  ``exact`` (default: d ≤ 3) adds both KLs by :func:`kl_quadrature` (with
    ``n_cells``, ``n_nodes``).  Further keyword arguments go to :func:`oscillation_bounds`.
    """
    _check_models(model_a, model_b, same_base=True)
    osc = oscillation_bounds(model_a.energy_fn, model_b.energy_fn, tol=tol, **osc_kwargs)
    exact = model_a.dim <= 3 if exact is None else exact
    ab = ba = None
    if exact:
        ab, ba = _kl_both(model_a, model_b, n_cells, n_nodes)
    return KLCertificate(osc, kl_from_osc(osc.upper), ab, ba, tuple(labels))
