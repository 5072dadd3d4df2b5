r"""Branch-and-bound over boxes: certified :math:`[\text{lower}, \text{upper}] \ni
\operatorname{osc}(V_b - V_a)` on the unit cube.

* On each box an enclosure of h comes from :mod:`ebmfit.certify.pairs` (interval arithmetic,
  never from evaluating points);
* the lower side is the best *attained* value found by evaluation on a point set, at the box
  centres and by L-BFGS-B from the best points; so ``lower <= osc(h) <= upper`` always;
* the box with the worst bound is split along its widest axis, thousands at a time; boxes that
  cannot beat either incumbent are pruned; the loop stops when ``upper - lower <= max(tol *
  lower, atol)`` or when the budget is spent.  A spent budget is reported, and the upper bound
  is still sound.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np
import torch
from scipy import optimize
from scipy.stats import qmc

from ..energies import Energy
from ..energies.interval import F64
from ..grid import tensor_grid
from .pairs import Pair, make_pair

__all__ = ["OscillationBounds", "oscillation_bounds"]


class OscillationBounds(NamedTuple):
    r"""Certified bounds on :math:`\operatorname{osc}(h)`, :math:`h = V_b - V_a`, over :math:`[0,1]^d`.

    ``upper`` is sound (:math:`\sup h \le` ``sup_upper``, :math:`\inf h \ge` ``inf_lower``);
    ``lower`` = ``sup_lower - inf_upper`` is attained (h takes the values ``sup_lower`` at
    ``argmax`` and ``inf_upper`` at ``argmin``).  ``converged`` says whether the gap reached
    ``max(tol * lower, atol)``; otherwise ``stop_reason`` names the budget that ran out.
    """

    lower: float
    upper: float
    sup_lower: float
    sup_upper: float
    inf_lower: float
    inf_upper: float
    argmax: tuple[float, ...]
    argmin: tuple[float, ...]
    converged: bool
    stop_reason: str
    n_boxes: int
    n_rounds: int
    seconds: float
    method: str
    tol: float

    @property
    def gap(self) -> float:
        return self.upper - self.lower

    @property
    def rel_gap(self) -> float:
        return self.gap / self.lower if self.lower > 0 else math.inf

    def to_dict(self) -> dict:
        d = self._asdict()
        d["argmax"], d["argmin"] = list(self.argmax), list(self.argmin)
        d["gap"], d["rel_gap"] = self.gap, self.rel_gap
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()
        }


def _local_opt(pair: Pair, starts: np.ndarray, sign: float, maxiter: int = 60):
    """L-BFGS-B on the cube from each start; returns the best (value, point) of sign·h."""
    best_v, best_x = -math.inf, None

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        v, g = pair.h_and_grad(torch.as_tensor(x, dtype=F64)[None])
        return -sign * float(v[0]), -sign * g[0].numpy()

    for x0 in starts:
        try:
            res = optimize.minimize(
                fun,
                x0,
                jac=True,
                method="L-BFGS-B",
                bounds=[(0.0, 1.0)] * pair.dim,
                options={"maxiter": maxiter},
            )
            x = np.clip(res.x, 0.0, 1.0)
        except (ValueError, RuntimeError):  # a non-differentiable or failing energy: keep x0
            x = x0
        with torch.no_grad():
            v = sign * float(pair.h(torch.as_tensor(x, dtype=F64)[None])[0])
        if v > best_v:
            best_v, best_x = v, x
    return best_v, best_x


def oscillation_bounds(
    energy_a: Energy,
    energy_b: Energy,
    *,
    tol: float = 0.1,
    atol: float = 1e-6,
    max_boxes: int = 5_000_000,
    time_limit: float = 120.0,
    batch: int = 4096,
    n_starts: int = 8,
    random_state: int = 0,
    float_error: bool = False,
) -> OscillationBounds:
    r"""Certified :math:`[\text{lower}, \text{upper}] \ni \operatorname{osc}(V_b - V_a)` on the unit cube.

    Args:
        energy_a, energy_b: energies on :math:`[0,1]^d` with sound ``interval_bounds``.
        tol: stop when ``upper - lower <= tol * lower`` (relative gap) ...
        atol: ... or when ``upper - lower <= atol`` (needed when h is nearly constant).
        max_boxes: budget of boxes bounded (each costs one ``interval_bounds`` row).
        time_limit: budget in seconds (checked once per round).
        batch: boxes split per round (2·batch are bounded per call).
        n_starts: local optimisations from the best sample points, for each side.
        random_state: seed of the scrambled Sobol sample used to find the first incumbents.
        float_error: also cover the round-off of evaluating the networks in their own dtype
            (a rigorous worst-case allowance, :math:`\gamma_n` per dot product; for float32
            networks it is ~1e-3 of the output scale, far above typical errors, and can
            dominate the difference of two nearby models).  By default the energies are
            certified as exact functions of their weights.

    Returns:
        :class:`OscillationBounds`; ``upper`` is sound even when ``converged`` is False.
    """
    t0 = time.perf_counter()
    pair = make_pair(energy_a, energy_b, float_error)
    d = pair.dim
    # ---- incumbents from a point sample and local optimisation
    pts = torch.as_tensor(qmc.Sobol(d, scramble=True, seed=random_state).random_base2(13))
    if d <= 12:  # the corners, where extremes of smooth energies often sit
        corners = tensor_grid([torch.tensor([0.0, 1.0], dtype=F64)] * d)
        pts = torch.cat([pts, corners.to(pts.dtype)])
    with torch.no_grad():
        hv = torch.cat([pair.h(c) for c in pts.split(65536)])
    k = min(n_starts, hv.numel())
    hi_idx, lo_idx = torch.topk(hv, k).indices, torch.topk(-hv, k).indices
    best_max, xmax = _local_opt(pair, pts[hi_idx].numpy(), +1.0)
    vmin, xmin = _local_opt(pair, pts[lo_idx].numpy(), -1.0)
    best_min = -vmin
    if float(hv.max()) > best_max:
        best_max, xmax = float(hv.max()), pts[int(hv.argmax())].numpy()
    if float(hv.min()) < best_min:
        best_min, xmin = float(hv.min()), pts[int(hv.argmin())].numpy()

    # ---- initial partition
    cells = max(1, int(round(batch ** (1.0 / d))))
    if cells**d > 4 * batch:
        cells = max(1, cells - 1)
    idx = tensor_grid([torch.arange(cells, dtype=F64)] * d)
    lo, hi = idx / cells, (idx + 1) / cells  # shared faces are computed identically: no gaps

    def evaluate(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal best_max, best_min, xmax, xmin
        with torch.no_grad():
            lb, ub = pair.bounds(lo, hi)
            c = (lo + hi) / 2
            hc = pair.h(c)
        i, j = int(hc.argmax()), int(hc.argmin())
        if float(hc[i]) > best_max:
            best_max, xmax = float(hc[i]), c[i].numpy()
        if float(hc[j]) < best_min:
            best_min, xmin = float(hc[j]), c[j].numpy()
        lb = torch.where(torch.isnan(lb), -torch.inf, lb)
        ub = torch.where(torch.isnan(ub), torch.inf, ub)
        return lb, ub

    lb, ub = evaluate(lo, hi)
    n_boxes, rounds = lo.shape[0], 0
    converged, reason = False, ""
    while True:
        U = max(float(ub.max()) if ub.numel() else -math.inf, best_max)
        L = min(float(lb.min()) if lb.numel() else math.inf, best_min)
        lower = best_max - best_min
        if (U - L) - lower <= max(tol * lower, atol):
            converged, reason = True, "converged"
            break
        if n_boxes >= max_boxes:
            reason = f"box budget ({max_boxes}) exhausted"
            break
        if time.perf_counter() - t0 > time_limit:
            reason = f"time limit ({time_limit:g} s) reached"
            break
        alive_s, alive_i = ub > best_max, lb < best_min
        keep = alive_s | alive_i
        if not bool(keep.all()):
            lo, hi, lb, ub = lo[keep], hi[keep], lb[keep], ub[keep]
            alive_s, alive_i = alive_s[keep], alive_i[keep]
        # each side may keep an excess of half the tolerance: split only boxes beyond it
        tau = 0.5 * max(tol * lower, atol)
        score = torch.maximum(
            torch.where(alive_s, ub - best_max, -torch.inf),
            torch.where(alive_i, best_min - lb, -torch.inf),
        )
        n_need = int((score > tau).sum())
        kk = max(1, min(batch, n_need))
        sel = torch.topk(score, kk).indices
        rest = torch.ones(score.numel(), dtype=torch.bool)
        rest[sel] = False
        plo, phi = lo[sel], hi[sel]
        axis = (phi - plo).argmax(-1)
        mid = ((plo + phi) / 2).gather(1, axis[:, None])
        lo1, hi1, lo2, hi2 = plo, phi.clone(), plo.clone(), phi
        hi1.scatter_(1, axis[:, None], mid)
        lo2.scatter_(1, axis[:, None], mid)
        clo, chi = torch.cat([lo1, lo2]), torch.cat([hi1, hi2])
        nlb, nub = evaluate(clo, chi)
        lo, hi = torch.cat([lo[rest], clo]), torch.cat([hi[rest], chi])
        lb, ub = torch.cat([lb[rest], nlb]), torch.cat([ub[rest], nub])
        n_boxes += clo.shape[0]
        rounds += 1
        if rounds % 8 == 0:  # polish the incumbents from the most promising boxes
            i, j = int(ub.argmax()), int(lb.argmin())
            v, x = _local_opt(pair, ((lo[i] + hi[i]) / 2).numpy()[None], +1.0, maxiter=30)
            if v > best_max:
                best_max, xmax = v, x
            v, x = _local_opt(pair, ((lo[j] + hi[j]) / 2).numpy()[None], -1.0, maxiter=30)
            if -v < best_min:
                best_min, xmin = -v, x
    return OscillationBounds(
        lower=float(best_max - best_min),
        upper=float(U - L),
        sup_lower=float(best_max),
        sup_upper=float(U),
        inf_lower=float(L),
        inf_upper=float(best_min),
        argmax=tuple(float(v) for v in xmax),
        argmin=tuple(float(v) for v in xmin),
        converged=converged,
        stop_reason=reason,
        n_boxes=int(n_boxes),
        n_rounds=rounds,
        seconds=time.perf_counter() - t0,
        method=pair.method,
        tol=float(tol),
    )
