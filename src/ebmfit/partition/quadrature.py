r"""Log-space tensor-product composite Gauss–Legendre quadrature of :math:`Z = \mathbb{E}_P[e^{-V}]`.

On the unit cube, with base density :math:`p = dP/du`,

.. math:: \log Z = \log \int_{[0,1]^d} e^{-V(u)} p(u)\,du
          \approx \operatorname{logsumexp}_g\big(\log w_g - V(u_g) + \log p(u_g)\big),

where :math:`(u_g, w_g)` is the tensor product of a 1-D composite rule: [0,1] cut into
``n_cells`` equal cells with ``n_nodes`` Gauss–Legendre nodes each (exact for polynomials of
degree 2·n_nodes − 1 on every cell).  The error estimate is the difference between two
resolutions (``n_cells`` and ``2·n_cells``); the finer value is returned.  ``n_cells`` is
rounded up to a multiple of the energy's ``panel_multiple`` (a spline's knot intervals), so no
cell straddles a kink — with kinks inside cells the convergence is not monotone and two
resolutions can agree closer than either is to Z (seen: 8.5e-11 claimed, 4.2e-10 true).  Accumulation is in
float64; the energy is evaluated in chunks so memory stays bounded.

**The error bar must hold.**  A tensor rule misses (or double-counts) the mass of features
narrower than its cells, and two resolutions of the same rule can agree on a wrong value.  So
the result is checked against an *independent* rule before it is returned:

* energies with sound interval bounds (uniform base): an adaptive partition of the cube
  (:func:`ebmfit.samplers.exact.build_envelope`) refined where the bounds leave slack — where
  the integrand is peaked — gives a *sound* bracket of log Z and, with Gauss–Legendre on each
  of its boxes at two orders, an adaptive estimate;
* otherwise a composite rule with other cells and another order (3·n_cells, n_nodes + 1).

The reported ``stderr`` is at least the disagreement between the two rules (and never wider
than the sound bracket allows).  When they disagree beyond the claimed error, the adaptive
value is returned and a :class:`QuadratureWarning` says so; when log Z cannot be pinned to
``warn_above`` nats, a warning says that too.

A *randomly shifted* rule (nodes moved by a uniform shift modulo 1, independently per axis) is
an unbiased estimator of Z for any integrand; the fit loop uses it so that a model cannot learn
to hide mass between fixed nodes.
"""

from __future__ import annotations

import math
import warnings

import torch

from ..base import BaseMeasure, Uniform
from ..energies.base import Energy
from ..energies.interval import bisect_boxes
from ..grid import gauss_legendre_1d, gauss_legendre_cube, tensor_grid, tensor_log_weights
from .result import LogZ, QuadratureDiagnostics

__all__ = [
    "QuadratureWarning",
    "check_log_partition",
    "default_resolution",
    "gauss_legendre_1d",
    "grid_log_integrand",
    "log_partition_quadrature",
]

MAX_DIM = 3

#: nats by which a box's sound upper bound must exceed its estimate to count as hiding mass.
HIDDEN_LOG_GAP = 20.0
#: box budget of the adaptive check, by dimension.
ADAPTIVE_MAX_BOXES = {1: 2**14, 2: 2**17, 3: 2**14}


class QuadratureWarning(UserWarning):
    """The tensor rule and an independent rule disagree, or log Z is poorly determined."""


def default_resolution(dim: int) -> tuple[int, int]:
    """(n_cells, n_nodes) of the *coarse* level of the checking rule for dimension ``dim``."""
    return {1: (256, 8), 2: (64, 4), 3: (16, 4)}.get(dim, (8, 3))


def grid_log_integrand(
    energy: Energy,
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
        logw = tensor_log_weights([w.to(device=V.device) for w in weights], torch.float64)
        out = logw - V
        if not isinstance(base, Uniform):
            pts = tensor_grid([a.to(torch.float64) for a in axes_e])
            lp = torch.cat([base.log_prob(c) for c in pts.split(chunk)])
            out = out + lp.to(out.device)
    return out


def _tensor_rule(
    energy: Energy, base: BaseMeasure, d: int, cells: int, nodes: int
) -> tuple[float, int]:
    ax, w = gauss_legendre_1d(cells, nodes)
    li = grid_log_integrand(energy, base, [ax] * d, [w] * d)
    return float(torch.logsumexp(li, 0)), li.numel()


@torch.no_grad()
def _boxes_rule(
    energy: Energy,
    base: BaseMeasure,
    lo: torch.Tensor,
    hi: torch.Tensor,
    nodes: int,
    chunk: int = 2**16,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per box, :math:`\log \int_{box} e^{-V} p\,du` by a ``nodes``^d Gauss–Legendre rule,
    and the largest log-integrand :math:`-V + \log p` at its nodes."""
    m, d = lo.shape
    ref, lref = gauss_legendre_cube(nodes, d, lo.device)
    dt = energy.param_dtype()
    uniform = isinstance(base, Uniform)
    out, top = [], []
    per = max(1, chunk // ref.shape[0])
    for a in range(0, m, per):
        lo_a, hi_a = lo[a : a + per], hi[a : a + per]
        pts = (lo_a[:, None] + (hi_a - lo_a)[:, None] * ref[None]).reshape(-1, d)
        li = -energy(pts.to(dt)).to(torch.float64)
        if not uniform:
            li = li + base.log_prob(pts).to(li)
        li = li.reshape(lo_a.shape[0], -1)
        logvol = torch.log(torch.prod(hi_a - lo_a, -1))
        out.append(torch.logsumexp(lref[None] + li, -1) + logvol)
        top.append(li.amax(-1))
    return torch.cat(out), torch.cat(top)


@torch.no_grad()
def _adaptive_rule(
    energy: Energy,
    base: BaseMeasure,
    d: int,
    *,
    rtol: float = 1e-4,
    hidden_tol: float = 1e-2,
    max_boxes: int | None = None,
) -> tuple[float, float, bool, int, int]:
    r"""Adaptive Gauss–Legendre on a box partition of the cube: ``(log Z, error in nats,
    converged, number of boxes still suspect, n_evals)``.

    Every box carries a 5-node and a 3-node tensor rule; their difference is its error.  With
    sound interval bounds (uniform base) a box may also hide a feature between its nodes: when
    the bound :math:`-\underline V_C` exceeds the largest node value of :math:`-V` by more than
    :data:`HIDDEN_LOG_GAP` nats and the mass it would then allow, :math:`|C| e^{-\underline
    V_C}`, is more than ``hidden_tol`` of Z.  Each round bisects (all axes) the boxes carrying
    half of the total error and suspect mass, until the error is below ``rtol`` (relative to
    Z) with no suspect box left, or ``max_boxes`` is reached; only new boxes are evaluated.
    """
    dev = energy.param_device()
    max_boxes = int(max_boxes or ADAPTIVE_MAX_BOXES[d])
    n0 = {1: 64, 2: 32, 3: 8}[d]
    lo = tensor_grid([torch.arange(n0, dtype=torch.float64, device=dev) / n0] * d)
    hi = lo + 1.0 / n0
    dt = energy.param_dtype()
    bounds = isinstance(base, Uniform)

    def evaluate(
        lo: torch.Tensor, hi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        g5, top = _boxes_rule(energy, base, lo, hi, 5)
        g3, _ = _boxes_rule(energy, base, lo, hi, 3)
        cap = torch.full_like(g5, -math.inf)  # log of the sound mass bound |C| e^{-V_lo}
        gap = torch.zeros_like(g5)  # nats the bound allows above the largest node value
        if bounds:
            vlo, _ = energy.interval_bounds(lo.to(dt), hi.to(dt))
            vlo = vlo.to(torch.float64)
            cap = torch.log(torch.prod(hi - lo, -1)) - vlo
            gap = (-vlo - top).clamp_min(0)
        return g5, g3, cap, gap

    try:
        g5, g3, cap, gap = evaluate(lo, hi)
    except NotImplementedError:
        bounds = False
        g5, g3, cap, gap = evaluate(lo, hi)
    n_evals = lo.shape[0] * (5**d + 3**d)
    while True:
        logz = float(torch.logsumexp(g5, 0))
        if not math.isfinite(logz):
            raise FloatingPointError(
                f"log Z is not finite at the adaptive quadrature nodes: {logz}"
            )
        err = (torch.exp(g5 - logz) - torch.exp(g3 - logz)).abs()
        hidden = torch.nan_to_num(torch.exp(cap - logz), nan=1e300, posinf=1e300)
        suspect = (gap > HIDDEN_LOG_GAP) & (hidden > hidden_tol)
        big = torch.where(suspect, hidden, torch.zeros_like(hidden))
        converged = float(err.sum()) <= rtol
        if converged and not bool(suspect.any()):
            break
        room = (max_boxes - lo.shape[0]) // (2**d - 1)
        if room <= 0:
            break
        score = err + big
        order = torch.argsort(score, descending=True)
        cum = torch.cumsum(score[order], 0) / score.sum()
        k = int(torch.searchsorted(cum, torch.tensor(0.5, dtype=cum.dtype, device=dev))) + 1
        k = min(max(k, min(16, lo.shape[0])), room)
        split = torch.zeros(lo.shape[0], dtype=torch.bool, device=dev)
        split[order[:k]] = True
        clo, chi = bisect_boxes(lo[split], hi[split])
        new = evaluate(clo, chi)
        n_evals += clo.shape[0] * (5**d + 3**d)
        keep = ~split
        lo, hi = torch.cat([lo[keep], clo]), torch.cat([hi[keep], chi])
        g5, g3, cap, gap = (
            torch.cat([a[keep], b]) for a, b in zip((g5, g3, cap, gap), new, strict=True)
        )
    # the error in nats: log(1 + relative error).  Boxes still suspect when the budget ends
    # are not added (with loose interval bounds that would be astronomically large): the
    # caller warns that features below the resolution reached cannot be excluded.
    return logz, math.log1p(float(err.sum())), converged, int(suspect.sum()), n_evals


def log_partition_quadrature(
    energy: Energy,
    base: BaseMeasure | None = None,
    *,
    n_cells: int | None = None,
    n_nodes: int | None = None,
    check: bool = True,
    warn_above: float = 0.05,
) -> LogZ:
    """log Z by composite Gauss–Legendre at ``n_cells`` and ``2·n_cells``; returns :class:`LogZ`
    with :class:`~ebmfit.partition.result.QuadratureDiagnostics`.

    ``stderr`` is the absolute difference between the two levels, widened to the disagreement
    with an independent rule (``check=True``, see the module docstring): an error bar that
    holds for features narrower than the cells too.  Warns (:class:`QuadratureWarning`) when
    the rules disagree, or when the error exceeds ``warn_above`` nats.
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
    # cells inside the energy's polynomial pieces (a spline's knot intervals): round up
    m = int(getattr(energy, "panel_multiple", 1) or 1)
    n_cells = -(-n_cells // m) * m
    vals = []
    n_evals = 0
    for cells in (n_cells, 2 * n_cells):
        v, n = _tensor_rule(energy, base, d, cells, n_nodes)
        vals.append(v)
        n_evals += n
    if not all(math.isfinite(v) for v in vals):
        raise FloatingPointError(f"log Z is not finite at the quadrature nodes: {vals}")
    diagnostics = QuadratureDiagnostics(n_cells, n_nodes, (vals[0], vals[1]))
    lz = LogZ(vals[1], abs(vals[1] - vals[0]), "gauss-legendre", n_evals, "none", diagnostics)
    return check_log_partition(energy, base, lz, warn_above=warn_above) if check else lz


def check_log_partition(
    energy: Energy, base: BaseMeasure | None, lz: LogZ, *, warn_above: float = 0.05
) -> LogZ:
    """Check a tensor-rule ``lz`` (d ≤ 3) against the adaptive rule (module docstring); returns
    the value and error to report, with the check's evaluations added to ``n_evals`` and its
    outcome in the :class:`~ebmfit.partition.result.QuadratureDiagnostics`."""
    d = energy.dim
    base = base if base is not None else Uniform(d)
    value, err, n_evals = float(lz.value), float(lz.stderr), int(lz.n_evals)
    # the check needs to be as accurate as the tensor rule claims, but no more than 1e-4
    # relative (it is there to catch gross misses) and at least 1e-2
    alt, alt_err, converged, suspects, n = _adaptive_rule(
        energy, base, d, rtol=min(1e-2, max(1e-4, err))
    )
    n_evals += n
    method = "gauss-legendre"
    diff = abs(alt - value)
    held = diff <= err + alt_err + 1e-10 * (1.0 + abs(value))
    if not held:
        warnings.warn(
            f"log Z: the tensor rule ({value:.6g} ± {err:.2g}) and the adaptive rule "
            f"({alt:.6g} ± {alt_err:.2g}) disagree by {diff:.3g} nats — the density has "
            "features narrower than the tensor cells",
            QuadratureWarning,
            stacklevel=2,
        )
    if alt_err < err or not held:
        # the adaptive rule, refined where the integrand is peaked, is the better one: report
        # it; unless it converged, the disagreement is part of the error
        value, method = alt, "gauss-legendre-adaptive"
        # (an adaptive rule that did not converge cannot vouch for its own error either:
        # then neither rule's error bar may shrink the other's)
        if converged and held:
            err = alt_err
        else:
            err = max(alt_err, diff) if converged else max(alt_err, diff, err)
    # else: the rules agree within their errors and the tensor rule is the more precise one
    if not converged or err > warn_above:
        how = "did not converge" if not converged else "is uncertain"
        warnings.warn(
            f"log Z = {value:.6g} is only known to ±{err:.3g} nats (the adaptive rule {how} "
            "on the density's narrowest features); every score is uncertain by as much",
            QuadratureWarning,
            stacklevel=2,
        )
    elif suspects and method == "gauss-legendre-adaptive":
        warnings.warn(
            f"log Z = {value:.6g} ± {err:.2g}: the energy's interval bounds are too loose to "
            f"exclude features narrower than the finest boxes in {suspects} place(s)",
            QuadratureWarning,
            stacklevel=2,
        )
    diag = lz.diagnostics
    if not isinstance(diag, QuadratureDiagnostics):  # a tensor rule computed elsewhere
        diag = QuadratureDiagnostics(0, 0, (math.nan, float(lz.value)))
    diag = diag._replace(
        adaptive=alt, adaptive_error=alt_err, converged=converged, n_suspect=suspects
    )
    return LogZ(value, err, method, n_evals, "none", diag)
