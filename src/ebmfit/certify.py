r"""Certified KL bounds between energy-based models: sound oscillation bounds by branch-and-bound.

For two tilts of the same base measure P, :math:`Q_i = e^{-V_i}\,dP / \mathbb{E}_P[e^{-V_i}]`,
and :math:`h = V_2 - V_1`,

.. math:: \mathrm{KL}(Q_1\,\|\,Q_2) = \mathbb{E}_{Q_1}[h] + \log \mathbb{E}_{Q_1}[e^{-h}]
          \le \min\big(\operatorname{osc}(h),\ \operatorname{osc}(h)^2/8\big),
          \qquad \operatorname{osc}(h) = \sup_K h - \inf_K h,

by Hoeffding's lemma (the first term of the minimum from :math:`\log\mathbb{E}[e^{-h}] \le
-\inf h`).  The bound holds for any P and, by symmetry of osc, for both directions.  This is
the corrected form of the seed's §3(a) (which states :math:`2\|V_1 - V_2\|_\infty`); see
``DESIGN.md``.

Everything therefore rests on a *sound upper bound* on :math:`\operatorname{osc}(h)` over the
unit cube, computed here by branch-and-bound over boxes (:func:`oscillation_bounds`):

* on each box B an enclosure :math:`\underline h_B \le h \le \overline h_B` comes from interval
  arithmetic — never from evaluating points.  Three rules, intersected where they apply:

  1. *independent intervals* :math:`[\underline V_{2,B} - \overline V_{1,B},\ \overline V_{2,B}
     - \underline V_{1,B}]` from the energies' own ``interval_bounds`` (any pair);
  2. *first-order forms* :math:`h(c) + g\cdot(u - c)` with g enclosing the gradient over B:
     the mean-value form with :func:`gradient_bounds` (linear, quadratic, mixture energies) or
     a second-order Taylor model (MLPs); overestimate :math:`O(\mathrm{width}^2)` instead of
     :math:`O(\mathrm{width})`;
  3. *joint* rules that avoid the dependency problem: for two linear energies of the same
     basis, h is itself a linear energy (the coefficient difference); for two MLPs of the same
     architecture, second-order Taylor models (value, gradient and Hessian coefficients in
     :math:`u - c` plus a rigorous remainder) of net A *and of the difference B − A* are
     propagated layer by layer — :math:`W_b x_b - W_a x_a = W_b\,\delta + (W_b - W_a)\,x_a`,
     SiLU differences by a two-variable Taylor expansion whose remainder carries a factor of
     δ — so the overestimate is third order in the width and proportional to the difference
     (on large boxes a first-order interval version of the same rule, with the exact range
     of SiLU′, is used);

* the lower side is the best *attained* value found by evaluation on a point set, at the box
  centres and by L-BFGS-B from the best points; so ``lower <= osc(h) <= upper`` always;
* the box with the worst bound (largest :math:`\overline h_B` above the incumbent maximum, or
  smallest :math:`\underline h_B` below the incumbent minimum) is split along its widest axis,
  thousands at a time; boxes that cannot beat either incumbent are pruned; the loop stops
  when ``upper - lower <= max(tol * lower, atol)`` or when the budget is spent.  A spent
  budget is reported, and the upper bound is still sound.

The energies are certified as exact functions of their weights (the bounds themselves are
computed in float64 with round-off allowances); this is the object the seed's theorems are
about.  ``float_error=True`` adds a rigorous allowance for evaluating the networks in their own
dtype (worst-case :math:`\gamma_n = nu/(1-nu)` per dot product), which for float32 networks can
exceed the difference between two nearby models.  Families other than MLPs use their own
``interval_bounds``, which carry their own evaluation allowances.

Also here: the exact KL by tensor Gauss–Legendre quadrature (:func:`kl_quadrature`, d ≤ 3),
certificates between models (:func:`kl_bound`), compression with a certificate
(:func:`compress`), mixtures with the base measure (:class:`MixtureEnergy`,
:func:`base_mixture`) and energies of known targets (:func:`target_energy`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy import optimize, special
from scipy.stats import qmc
from torch import nn

from .base import BaseMeasure
from .domain import Box
from .energies import (
    CallableEnergy,
    CosineEnergy,
    Energy,
    LegendreEnergy,
    LinearEnergy,
    MLPEnergy,
    QuadraticEnergy,
    SplineEnergy,
)
from .energies.mlp import _cos_range, _silu_range
from .model import EnergyModel
from .partition.quadrature import gauss_legendre_1d, grid_log_integrand

__all__ = [
    "KLCertificate",
    "KLEstimate",
    "MixtureEnergy",
    "OscillationBounds",
    "base_mixture",
    "compress",
    "gradient_bounds",
    "kl_bound",
    "kl_from_osc",
    "kl_quadrature",
    "oscillation_bounds",
    "target_energy",
]

F64 = torch.float64
EPS64 = torch.finfo(F64).eps
_DSILU_ARGMAX = 2.399357280515467  # root of silu''(x) = 0, i.e. x tanh(x/2) = 2; silu' max
_DSILU_MAX = 1.0998393201288668
_DSILU_MIN = -0.09983932012886691
_DDSILU_ARGMIN = 3.4358409935351107  # root of the third derivative of SiLU
_DDSILU_MIN = -0.036914373199893186


def kl_from_osc(osc: float) -> float:
    r"""The KL bound :math:`\min(\mathrm{osc}, \mathrm{osc}^2/8)` (Hoeffding), for either direction."""
    if not math.isfinite(osc):
        return math.inf
    return float(min(osc, osc * osc / 8.0))


# ============================================================================ small helpers
def _mid_rad(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (lo + hi) / 2, (hi - lo) / 2


def _imul(al, ah, bl, bh):
    """Interval product [al, ah] * [bl, bh] (elementwise, broadcasting)."""
    p = torch.stack(torch.broadcast_tensors(al * bl, al * bh, ah * bl, ah * bh))
    return p.amin(0), p.amax(0)


def _unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def _gamma(n: int, u: float) -> float:
    """Higham's :math:`\\gamma_n = nu/(1-nu)`: relative error bound of an n-term dot product."""
    nu = n * u
    return nu / (1 - nu) if nu < 1 else math.inf


def _as64(energy: Energy) -> Energy:
    """A CPU float64 deep copy (exact: every float32/16 weight is a float64 number)."""
    return copy.deepcopy(energy).to(device="cpu", dtype=F64)


def _meet(l1, h1, l2, h2):
    """Intersection of two enclosures; a NaN candidate (an overflowed rule) carries no information."""
    lo = torch.where(torch.isnan(l2), l1, torch.maximum(l1, l2))
    hi = torch.where(torch.isnan(h2), h1, torch.minimum(h1, h2))
    return lo, hi


def _dsilu(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _dsilu_range(a: torch.Tensor, b: torch.Tensor):
    """Exact range of SiLU′ over [a, b]: it decreases to its minimum at −x*, increases to its
    maximum at x* (x* ≈ 2.3994) and decreases after."""
    fa, fb = _dsilu(a), _dsilu(b)
    lo, hi = torch.minimum(fa, fb), torch.maximum(fa, fb)
    lo = torch.where(
        (a <= -_DSILU_ARGMAX) & (b >= -_DSILU_ARGMAX), torch.full_like(lo, _DSILU_MIN), lo
    )
    hi = torch.where(
        (a <= _DSILU_ARGMAX) & (b >= _DSILU_ARGMAX), torch.full_like(hi, _DSILU_MAX), hi
    )
    tol = 1e-13
    return (lo - tol).clamp_min(_DSILU_MIN - tol), (hi + tol).clamp_max(_DSILU_MAX + tol)


# ============================================================================ MLP propagation
class _MLPParts(NamedTuple):
    freqs: torch.Tensor | None  # (m_f, d) float64
    affine: list[tuple[torch.Tensor, torch.Tensor]]  # (W (out, in), b (out,)) float64
    dtype: torch.dtype  # the dtype the network evaluates in


def _mlp_parts(e: MLPEnergy, dtype: torch.dtype | None = None) -> _MLPParts:
    layers = list(e.net)
    affine = []
    for i, layer in enumerate(layers):
        want = nn.Linear if i % 2 == 0 else nn.SiLU
        if not isinstance(layer, want):
            raise TypeError(f"unexpected layer {layer!r} in MLPEnergy: expected Linear/SiLU pairs")
        if isinstance(layer, nn.Linear):
            affine.append((layer.weight.detach().to(F64), layer.bias.detach().to(F64)))
    if not isinstance(layers[-1], nn.Linear):
        raise TypeError("MLPEnergy must end with a Linear layer")
    B = e.freqs.detach().to(F64) if e.n_fourier else None
    return _MLPParts(B, affine, e.freqs.dtype if dtype is None else dtype)


def _features(B, lo, hi):
    """Interval enclosure of the encoding [u, cos 2πBu, sin 2πBu] over boxes, plus z's centre
    and radius (for the Jacobian rule)."""
    if B is None:
        return lo, hi, None, None
    c, r = _mid_rad(lo, hi)
    zc = 2 * math.pi * (c @ B.T)
    zr = 2 * math.pi * (r @ B.abs().T)
    zr = zr + 8 * EPS64 * (zc.abs() + zr + 1)
    cl, ch = _cos_range(zc - zr, zc + zr)
    sl, sh = _cos_range(zc - zr - math.pi / 2, zc + zr - math.pi / 2)
    return torch.cat([lo, cl, sl], -1), torch.cat([hi, ch, sh], -1), zc, zr


def _dot_tol(W: torch.Tensor) -> float:
    """Relative round-off allowance of a float64 dot product of W's row length (+ a bias and
    a final addition): Higham's γ_{n+2}, any summation order."""
    return 2 * _gamma(W.shape[1] + 2, EPS64 / 2)


def _affine_interval(W, b, L, H):
    c, r = _mid_rad(L, H)
    yc = c @ W.T + b
    yr = r @ W.abs().T
    tol = _dot_tol(W) * (c.abs() @ W.abs().T + b.abs() + yr)
    return yc - yr - tol, yc + yr + tol


class _Trace(NamedTuple):
    ins: list[tuple[torch.Tensor, torch.Tensor]]  # input interval of each affine layer
    pre: list[tuple[torch.Tensor, torch.Tensor]]  # its output (pre-activation) interval
    zc: torch.Tensor | None
    zr: torch.Tensor | None


def _mlp_trace(p: _MLPParts, lo, hi) -> _Trace:
    L, H, zc, zr = _features(p.freqs, lo, hi)
    ins, pre = [], []
    for k, (W, b) in enumerate(p.affine):
        ins.append((L, H))
        L, H = _affine_interval(W, b, L, H)
        pre.append((L, H))
        if k < len(p.affine) - 1:
            L, H = _silu_range(L, H)
    return _Trace(ins, pre, zc, zr)


def _mlp_fp_error(p: _MLPParts, t: _Trace, lo, hi) -> torch.Tensor:
    r"""Bound on |computed V − exact V| for the network evaluated in ``p.dtype``, per box.

    Standard forward error analysis: a dot product of n terms plus a bias has error at most
    :math:`\gamma_{n+1}(|W||\hat x| + |b|)`; errors already in the input pass through
    :math:`|W|`; SiLU is 1.1-Lipschitz and is evaluated to a few ulps; cos/sin are evaluated at
    an argument carrying the rounding of :math:`2\pi Bu` (cos is 1-Lipschitz).  The input point
    itself is whatever representable point is evaluated (the sup is over all of them).
    """
    u = _unit_roundoff(p.dtype)
    m = lo.shape[0]
    d = lo.shape[1]
    if p.freqs is not None:
        ez = (_gamma(d, u) + 3 * u) * 2 * math.pi * (hi.abs() @ p.freqs.abs().T) + 4 * u
        E = torch.cat([torch.zeros(m, d, dtype=F64), ez, ez], -1)
    else:
        E = torch.zeros(m, d, dtype=F64)
    for k, (W, b) in enumerate(p.affine):
        L, H = t.ins[k]
        M = torch.maximum(L.abs(), H.abs())
        Wa = W.abs()
        g = _gamma(W.shape[1] + 1, u)
        E = E @ Wa.T + g * ((M + E) @ Wa.T + b.abs())
        if k < len(p.affine) - 1:
            pl, ph = t.pre[k]
            sl, sh = _silu_range(pl, ph)
            E = 1.1 * E + 4 * u * torch.maximum(sl.abs(), sh.abs()) + 1e-300
    return E.squeeze(-1)


def _mlp_value_bounds(p: _MLPParts, lo, hi, float_error: bool = False):
    t = _mlp_trace(p, lo, hi)
    L, H = t.pre[-1]
    L, H = L.squeeze(-1), H.squeeze(-1)
    if not float_error:
        return L, H
    E = _mlp_fp_error(p, t, lo, hi)
    return L - E, H + E


def _value_bounds(energy: Energy, lo, hi, float_error: bool):
    """Sound bounds of V over boxes: the exact-arithmetic function of the weights (MLPs, with the
    optional rigorous evaluation allowance) or the family's own ``interval_bounds``."""
    if isinstance(energy, MLPEnergy):
        return _mlp_value_bounds(_mlp_parts(energy), lo, hi, float_error)
    if isinstance(energy, LinearEnergy):
        return _linear_value_bounds(energy, lo, hi)
    vl, vh = energy.interval_bounds(lo, hi)
    return vl.to(F64), vh.to(F64)


class _JacTrace(NamedTuple):
    ins: list[tuple[torch.Tensor, torch.Tensor]]  # Jacobian of each affine layer's input (m, n, d)
    pre: list[tuple[torch.Tensor, torch.Tensor]]  # Jacobian of its output (m, n_out, d)


def _feature_jacobian(B, zc, zr, m, d):
    eye = torch.eye(d, dtype=F64).expand(m, d, d)
    if B is None:
        return eye, eye
    cl, ch = _cos_range(zc - zr, zc + zr)
    sl, sh = _cos_range(zc - zr - math.pi / 2, zc + zr - math.pi / 2)
    g = 2 * math.pi * B  # (F, d): d cos z / du = -sin z * g ;  d sin z / du = cos z * g
    al, ah = _imul(-sh[:, :, None], -sl[:, :, None], g[None], g[None])
    bl, bh = _imul(cl[:, :, None], ch[:, :, None], g[None], g[None])
    return torch.cat([eye, al, bl], 1), torch.cat([eye, ah, bh], 1)


def _jac_affine(W, JL, JH):
    Jc, Jr = _mid_rad(JL, JH)
    c = torch.einsum("mjd,kj->mkd", Jc, W)
    r = torch.einsum("mjd,kj->mkd", Jr, W.abs())
    r = r + _dot_tol(W) * (torch.einsum("mjd,kj->mkd", Jc.abs(), W.abs()) + r)
    return c - r, c + r


def _mlp_jac_trace(p: _MLPParts, t: _Trace, lo, hi) -> _JacTrace:
    """Forward-mode interval Jacobians of every layer over boxes."""
    m, d = lo.shape
    JL, JH = _feature_jacobian(p.freqs, t.zc, t.zr, m, d)
    ins, pre = [], []
    for k, (W, _b) in enumerate(p.affine):
        ins.append((JL, JH))
        JL, JH = _jac_affine(W, JL, JH)
        pre.append((JL, JH))
        if k < len(p.affine) - 1:
            pl, ph = t.pre[k]
            sl, sh = _dsilu_range(pl, ph)
            JL, JH = _imul(sl[:, :, None], sh[:, :, None], JL, JH)
    return _JacTrace(ins, pre)


def _mlp_gradient_bounds(p: _MLPParts, lo, hi):
    """Interval enclosure of the MLP's gradient over boxes, shape (m, d) each side."""
    t = _mlp_trace(p, lo, hi)
    JL, JH = _mlp_jac_trace(p, t, lo, hi).pre[-1]
    JL, JH = JL.squeeze(1), JH.squeeze(1)
    slack = 1e-12 * (JL.abs() + JH.abs()) + 1e-300
    return JL - slack, JH + slack


def _ddsilu(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s) * (2 + x * (1 - 2 * s))


def _ddsilu_range(a: torch.Tensor, b: torch.Tensor):
    """Exact range of SiLU'' (even; maximum 1/2 at 0, minimum at +-3.4358)."""
    fa, fb = _ddsilu(a), _ddsilu(b)
    lo, hi = torch.minimum(fa, fb), torch.maximum(fa, fb)
    hi = torch.where((a <= 0) & (b >= 0), torch.full_like(hi, 0.5), hi)
    has_min = ((a <= _DDSILU_ARGMIN) & (b >= _DDSILU_ARGMIN)) | (
        (a <= -_DDSILU_ARGMIN) & (b >= -_DDSILU_ARGMIN)
    )
    lo = torch.where(has_min, torch.full_like(lo, _DDSILU_MIN), lo)
    return lo - 1e-13, hi + 1e-13


def _intersect(a, b):
    return torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])


def _mlp_pair_intervals(pa: _MLPParts, pb: _MLPParts, lo, hi):
    r"""Interval enclosure of :math:`V_b - V_a` over boxes, propagating the layer differences:
    :math:`W_b x_b - W_a x_a = W_b\,\delta + \Delta W\,x_a = W_a\,\delta + \Delta W\,x_b` and
    :math:`\sigma(y_b) - \sigma(y_a) = \sigma'(\xi)(y_b - y_a)` (exact range of σ′ on the hull),
    each intersected with the naive difference.  First order: cheap, for large boxes."""
    ta, tb = _mlp_trace(pa, lo, hi), _mlp_trace(pb, lo, hi)
    m, d = lo.shape
    La0, Ha0 = ta.ins[0]
    Lb0, Hb0 = tb.ins[0]
    if pa.freqs is None or torch.equal(pa.freqs, pb.freqs):
        Ld = Hd = torch.zeros_like(La0)
    else:  # |cos z_b - cos z_a| <= |z_b - z_a|, z_b - z_a = 2π (B_b - B_a) u
        dB = pb.freqs - pa.freqs
        c, r = _mid_rad(lo, hi)
        dz = 2 * math.pi * ((c @ dB.T).abs() + r @ dB.abs().T) * (1 + 1e-12) + 1e-300
        dz2 = torch.cat([torch.zeros(m, d, dtype=F64), dz, dz], -1)
        Ld, Hd = torch.maximum(-dz2, Lb0 - Ha0), torch.minimum(dz2, Hb0 - La0)
    n = len(pa.affine)
    for k in range(n):
        (Wa, ba), (Wb, bb) = pa.affine[k], pb.affine[k]
        dW, db = Wb - Wa, bb - ba
        dc, dr = _mid_rad(Ld, Hd)
        out = []
        for W, (xl, xh) in ((Wb, ta.ins[k]), (Wa, tb.ins[k])):
            xc, xr = _mid_rad(xl, xh)
            c = dc @ W.T + xc @ dW.T + db
            r = dr @ W.abs().T + xr @ dW.abs().T
            t = _dot_tol(W) * (dc.abs() @ W.abs().T + xc.abs() @ dW.abs().T + db.abs() + r)
            out.append((c - r - t, c + r + t))
        Ld, Hd = _intersect(*out)
        (pla, pha), (plb, phb) = ta.pre[k], tb.pre[k]
        Ld, Hd = _intersect((Ld, Hd), (plb - pha, phb - pla))
        if k < n - 1:
            sl, sh = _dsilu_range(torch.minimum(pla, plb), torch.maximum(pha, phb))
            L2, H2 = _imul(sl, sh, Ld, Hd)
            t = 4 * EPS64 * torch.maximum(L2.abs(), H2.abs()) + 1e-300
            zla, zha = _silu_range(pla, pha)
            zlb, zhb = _silu_range(plb, phb)
            Ld, Hd = _intersect((L2 - t, H2 + t), (zlb - zha, zhb - zla))
    return Ld.squeeze(-1), Hd.squeeze(-1)


class _TM(NamedTuple):
    r"""Second-order Taylor models over boxes (neurons on the last axis):
    :math:`v(u) \in v_0 + a\cdot t + \tfrac12 t^\top H t \pm e` for :math:`t = u - c \in [-r, r]`.
    H is stored packed: one row per pair i <= j (``_pairs(d)``)."""

    v0: torch.Tensor  # (m, n)
    a: torch.Tensor  # (m, d, n)
    H: torch.Tensor  # (m, P, n), P = d(d+1)/2
    e: torch.Tensor  # (m, n), >= 0


_S3 = 0.3082  # sup |silu'''| = 0.308181515796...
_S4 = 0.5 + 1e-9  # sup |silu''''| = 1/2 (at 0)
_PAIRS: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _pairs(d: int):
    """Row/column indices of the packed upper triangle and the weights ½ (diagonal) / 1 (off)."""
    if d not in _PAIRS:
        iu, ju = torch.triu_indices(d, d)
        _PAIRS[d] = (iu, ju, torch.where(iu == ju, 0.5, 1.0).to(F64))
    return _PAIRS[d]


def _rr(r):
    """Weights of |H| in the quadratic radius: c_p r_i r_j, shape (m, P)."""
    iu, ju, cw = _pairs(r.shape[1])
    return r[:, iu] * r[:, ju] * cw


def _tm_parts(tm: _TM, r, rrw):
    """(linear radius, quadratic radius, total radius) of a Taylor model over its boxes."""
    lin = torch.einsum("mdn,md->mn", tm.a.abs(), r)
    quad = torch.einsum("mpn,mp->mn", tm.H.abs(), rrw)
    return lin, quad, lin + quad + tm.e


def _mm(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return (x.reshape(-1, x.shape[-1]) @ W.T).reshape(*x.shape[:-1], W.shape[0])


def _tm_affine(W, b, x: _TM, rho) -> _TM:
    """W x + b; ``rho`` is x's total radius (for the round-off allowance)."""
    Wa = W.abs()
    v0 = x.v0 @ W.T
    if b is not None:
        v0 = v0 + b
    tol = 2 * _dot_tol(W) * ((x.v0.abs() + rho) @ Wa.T + (0 if b is None else b.abs()))
    return _TM(v0, _mm(x.a, W), _mm(x.H, W), x.e @ Wa.T + tol)


def _tm_features(B, c, r) -> _TM:
    r"""[u, cos 2πBu, sin 2πBu]: with z = z0 + g·t exactly linear,
    :math:`\cos(z_0+\Delta) = \cos z_0 - \sin z_0\,\Delta - \tfrac12\cos z_0\,\Delta^2 + R`,
    :math:`|R| \le |\Delta|^3/6`."""
    m, d = c.shape
    iu, ju, _ = _pairs(d)
    eye = torch.eye(d, dtype=F64).expand(m, d, d)
    zH = torch.zeros(m, iu.numel(), d, dtype=F64)
    if B is None:
        return _TM(c, eye, zH, torch.zeros_like(c))
    g = 2 * math.pi * B  # (F, d)
    z0 = c @ g.T
    rho = r @ g.abs().T
    cz, sz = torch.cos(z0), torch.sin(z0)
    gg = (g[:, iu] * g[:, ju]).T  # (P, F)
    rem = rho**3 / 6 + 8 * EPS64 * (1 + z0.abs() + rho)
    v0 = torch.cat([c, cz, sz], -1)
    a = torch.cat([eye, -sz[:, None, :] * g.T[None], cz[:, None, :] * g.T[None]], -1)
    H = torch.cat([zH, -cz[:, None, :] * gg[None], -sz[:, None, :] * gg[None]], -1)
    e = torch.cat([torch.zeros_like(c), rem, rem], -1)
    return _TM(v0, a, H, e)


def _sig_derivs(x):
    s = torch.sigmoid(x)
    s1 = s * (1 + x * (1 - s))
    s2 = s * (1 - s) * (2 + x * (1 - 2 * s))
    return x * s, s1, s2


def _tm_silu(y: _TM, parts) -> _TM:
    r""":math:`\sigma(y_0+\Delta) = \sigma + \sigma'\Delta + \tfrac12\sigma''\Delta^2 + R_3`,
    :math:`|R_3| \le \sup|\sigma'''|\,\rho^3/6`; the part of :math:`\Delta^2` beyond
    :math:`(a\cdot t)^2` goes to the remainder."""
    lin, quad, rho = parts
    iu, ju, _ = _pairs(y.a.shape[1])
    x = y.v0
    s0, s1, s2 = _sig_derivs(x)
    qe = quad + y.e
    a = s1[:, None, :] * y.a
    H = y.H * s1[:, None, :]
    H.addcmul_(y.a[:, iu] * s2[:, None, :], y.a[:, ju])
    e = (
        s1.abs() * y.e
        + 0.5 * s2.abs() * (2 * lin * qe + qe**2)
        + _S3 * rho**3 / 6
        + 16 * EPS64 * (x.abs() + rho + 1)
    )
    return _TM(s0, a, H, e)


def _tm_silu_diff(y: _TM, dl: _TM, py, pd) -> _TM:
    r"""Taylor model of :math:`f(y, \delta) = \sigma(y + \delta) - \sigma(y)` (the difference of
    the two networks after a SiLU) from those of y (net A) and δ.

    Second-order expansion at :math:`(y_0, \delta_0)`:
    :math:`f_y = \sigma'(y_b) - \sigma'(y_a)`, :math:`f_\delta = \sigma'(y_b)`,
    :math:`f_{yy} = \sigma''(y_b) - \sigma''(y_a)`, :math:`f_{y\delta} = f_{\delta\delta} =
    \sigma''(y_b)`; the third-order remainder uses :math:`|f_{yyy}| \le \sup|\sigma''''|\,|\delta|`
    and :math:`|\sigma'''| \le 0.3082`.  Every term carries a factor of δ's size, so the model
    stays relatively accurate for nearby networks.
    """
    ly, qy, ry = py
    ld, qd, rd = pd
    iu, ju, _ = _pairs(y.a.shape[1])
    ya, yb = y.v0, y.v0 + dl.v0
    s0a, s1a, s2a = _sig_derivs(ya)
    s0b, s1b, s2b = _sig_derivs(yb)
    fy, fd, fyy, fdd = s1b - s1a, s1b, s2b - s2a, s2b  # f_yd = f_dd
    a = fy[:, None, :] * y.a + fd[:, None, :] * dl.a
    ay, ad = y.a, dl.a
    ab = ay + ad
    # fyy ay ay' + fdd (ay ad' + ad ay' + ad ad') = fyy ay ay' + fdd (ay ad' + ad ab')
    H = y.H * fy[:, None, :]
    H.addcmul_(dl.H, fd[:, None, :])
    H.addcmul_(ay[:, iu] * fyy[:, None, :], ay[:, ju])
    H.addcmul_(ay[:, iu] * fdd[:, None, :], ad[:, ju])
    H.addcmul_(ad[:, iu] * fdd[:, None, :], ab[:, ju])
    qey, qed = qy + y.e, qd + dl.e
    Byy = 2 * ly * qey + qey**2
    Byd = ly * qed + ld * qey + qey * qed
    Bdd = 2 * ld * qed + qed**2
    dmax = dl.v0.abs() + rd
    R3 = (_S4 * dmax * ry**3 + 3 * _S3 * (ry**2 * rd + ry * rd**2) + _S3 * rd**3) / 6
    e = (
        fy.abs() * y.e
        + fd.abs() * dl.e
        + 0.5 * fyy.abs() * Byy
        + fdd.abs() * Byd
        + 0.5 * fdd.abs() * Bdd
        + R3
    )
    tol = 16 * EPS64 * (yb.abs() + ya.abs() + 1 + ly + qy + ld + qd)
    return _TM(s0b - s0a, a, H, e + tol)


def _mlp_taylor(pa: _MLPParts, lo, hi, pb: _MLPParts | None = None):
    """Taylor model of V_a over boxes, and of V_b − V_a when ``pb`` is given (same architecture).

    Returns ``(tm_a, tm_delta)`` at the output (n = 1); ``tm_delta`` is None without ``pb``.
    """
    c, r = _mid_rad(lo, hi)
    rrw = _rr(r)
    x = _tm_features(pa.freqs, c, r)
    dl = None
    if pb is not None:
        if pa.freqs is None or torch.equal(pa.freqs, pb.freqs):
            dl = _TM(*(torch.zeros_like(t) for t in x))
        else:
            xb = _tm_features(pb.freqs, c, r)
            dl = _TM(xb.v0 - x.v0, xb.a - x.a, xb.H - x.H, xb.e + x.e)
    n = len(pa.affine)
    px = _tm_parts(x, r, rrw)
    for k in range(n):
        Wa, ba = pa.affine[k]
        y = _tm_affine(Wa, ba, x, px[2])
        if dl is not None:  # W_b δ + (W_b − W_a) x + (b_b − b_a)
            Wb, bb = pb.affine[k]
            t1 = _tm_affine(Wb, bb - ba, dl, _tm_parts(dl, r, rrw)[2])
            t2 = _tm_affine(Wb - Wa, None, x, px[2])
            dl = _TM(t1.v0 + t2.v0, t1.a.add_(t2.a), t1.H.add_(t2.H), t1.e + t2.e)
        if k < n - 1:
            py = _tm_parts(y, r, rrw)
            if dl is not None:
                dl = _tm_silu_diff(y, dl, py, _tm_parts(dl, r, rrw))
            x = _tm_silu(y, py)
            px = _tm_parts(x, r, rrw)
        else:
            x = y
    return x, dl


def _tm_range(tm: _TM, lo, hi):
    """Enclosure of a scalar Taylor model (n = 1) over its boxes, shape (m,) each side."""
    r = (hi - lo) / 2
    iu, ju, _ = _pairs(r.shape[1])
    lin = (tm.a[..., 0].abs() * r).sum(-1)
    H = tm.H[..., 0]
    rr = r[:, iu] * r[:, ju]
    dg = (iu == ju)[None]
    qlo = torch.where(dg, 0.5 * H.clamp_max(0) * rr, -(H.abs() * rr)).sum(-1)
    qhi = torch.where(dg, 0.5 * H.clamp_min(0) * rr, H.abs() * rr).sum(-1)
    v0, e = tm.v0[:, 0], tm.e[:, 0]
    slack = 8 * EPS64 * (v0.abs() + lin + qhi - qlo + e)
    return v0 - lin + qlo - e - slack, v0 + lin + qhi + e + slack


def _tm_first_order(tm: _TM, lo, hi):
    """(v0, gL, gH, e): V(u) ∈ v0 + g·(u − c) ± e with g in [gL, gH] (the Hessian term as an
    interval on the gradient), for combining with energies of other families."""
    r = (hi - lo) / 2
    d = r.shape[1]
    iu, ju, _ = _pairs(d)
    Ha = tm.H[..., 0].abs()
    half = torch.zeros_like(r)
    half.index_add_(1, iu, Ha * r[:, ju])
    off = iu != ju
    half.index_add_(1, ju[off], Ha[:, off] * r[:, iu[off]])
    half = 0.5 * half
    a = tm.a[..., 0]
    return tm.v0[:, 0], a - half, a + half, tm.e[:, 0]


# ============================================================================ linear energies
def _tensor_range(T: torch.Tensor, ranges: list[tuple[torch.Tensor, torch.Tensor]]):
    """Enclosure of :math:`\\sum_j T_j \\prod_i f_{j_i}` given per-axis ranges (m, K) of f."""
    L, H = ranges[0]
    m = L.shape[0]
    for l2, h2 in ranges[1:]:
        L, H = _imul(L[:, :, None], H[:, :, None], l2[:, None, :], h2[:, None, :])
        L, H = L.reshape(m, -1), H.reshape(m, -1)
    t = T.reshape(1, -1)
    vlo = torch.where(t >= 0, t * L, t * H).sum(1)
    vhi = torch.where(t >= 0, t * H, t * L).sum(1)
    slack = (
        4
        * _gamma(T.numel() + 2 * len(ranges), EPS64)
        * ((t.abs() * torch.maximum(L.abs(), H.abs())).sum(1) + 1)
    )
    return vlo - slack, vhi + slack


def _legendre_deriv(e: LegendreEnergy, t: torch.Tensor) -> torch.Tensor:
    """d/dt of the scaled Legendre basis, shape (n, K)."""
    x = 2 * t - 1
    P = [torch.ones_like(x), x]
    dP = [torch.zeros_like(x), torch.ones_like(x)]
    for k in range(1, e.degree):
        P.append(((2 * k + 1) * x * P[k] - k * P[k - 1]) / (k + 1))
        dP.append(dP[k - 1] + (2 * k + 1) * P[k])
    return 2 * torch.stack(dP[: e.n_basis], -1) * e._scale


_LEG_CACHE: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _legendre_deriv_crit(K: int):
    """Critical points on [0,1] of each basis derivative and the derivative's values there."""
    if K not in _LEG_CACHE:
        from numpy.polynomial import legendre as npleg

        crit = np.full((K, max(K - 3, 1)), np.nan)
        cval = np.full((K, max(K - 3, 1)), np.nan)
        for k in range(3, K):
            c = np.zeros(k + 1)
            c[k] = 1.0
            r = np.real(npleg.legroots(npleg.legder(c, 2)))
            crit[k, : r.size] = (r + 1) / 2
            cval[k, : r.size] = 2 * np.sqrt(2 * k + 1) * npleg.legval(r, npleg.legder(c))
        _LEG_CACHE[K] = (torch.as_tensor(crit, dtype=F64), torch.as_tensor(cval, dtype=F64))
    return _LEG_CACHE[K]


def _basis_deriv_range(e: LinearEnergy, a: torch.Tensor, b: torch.Tensor):
    if isinstance(e, LegendreEnergy):
        ends = torch.stack([_legendre_deriv(e, a), _legendre_deriv(e, b)])
        lo, hi = ends.amin(0), ends.amax(0)
        crit, cval = _legendre_deriv_crit(e.n_basis)
        inside = (crit[None] >= a[:, None, None]) & (crit[None] <= b[:, None, None])
        cv = cval[None].expand(a.shape[0], -1, -1)
        lo = torch.minimum(lo, torch.where(inside, cv, torch.inf).amin(-1))
        hi = torch.maximum(hi, torch.where(inside, cv, -torch.inf).amax(-1))
        slack = 64 * EPS64 * e.n_basis**3
        return lo - slack, hi + slack
    if isinstance(e, CosineEnergy):  # d/dt cos(πkt) = -πk sin(πkt), sin(πp) = cos(π(p - 1/2))
        k = e._k[None].to(F64)
        pa, pb = k * a[:, None] - 0.5, k * b[:, None] - 0.5
        ca, cb = torch.cos(math.pi * pa), torch.cos(math.pi * pb)
        lo, hi = torch.minimum(ca, cb), torch.maximum(ca, cb)
        hi = torch.where(torch.ceil(pa / 2) * 2 <= pb, torch.ones_like(hi), hi)
        lo = torch.where(torch.ceil((pa - 1) / 2) * 2 + 1 <= pb, -torch.ones_like(lo), lo)
        s = math.pi * k
        tol = 1e-13 * (1 + s)
        return -s * hi - tol, -s * lo + tol
    raise TypeError(f"no derivative ranges for {type(e).__name__}")


def _cubic_bspline_deriv(s: torch.Tensor) -> torch.Tensor:
    """N'(s) of the cardinal cubic B-spline (supported on [0, 4])."""
    d1 = s**2 / 2
    d2 = (-9 * s**2 + 24 * s - 12) / 6
    d3 = (9 * s**2 - 48 * s + 60) / 6
    d4 = -((4 - s) ** 2) / 2
    out = torch.where(s < 1, d1, torch.where(s < 2, d2, torch.where(s < 3, d3, d4)))
    return torch.where((s >= 0) & (s < 4), out, torch.zeros_like(s))


def _spline_basis_ranges(e: SplineEnergy, a: torch.Tensor, b: torch.Tensor, deriv: bool):
    """Exact ranges over [a, b] of every basis function B_j(t) = N((t − t_j)/h) (or of B_j′).

    N is C², zero outside [0, 4], increasing on [0, 2] and decreasing after (max 2/3 at 2);
    N′ has its extremes ±2/3 at s = 4/3 and 8/3 — so endpoints plus these points suffice.
    """
    from .energies.spline import cardinal_cubic

    knots, h = e._knots.to(F64), e.h
    sa = (a[:, None] - knots) / h
    sb = (b[:, None] - knots) / h
    if deriv:
        fa, fb = _cubic_bspline_deriv(sa) / h, _cubic_bspline_deriv(sb) / h
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


def _linear_value_bounds(e: LinearEnergy, lo, hi):
    """The family's bounds, for splines intersected with exact tensor-product basis ranges
    (the convex-hull bound does not shrink below the spread of neighbouring coefficients)."""
    vl, vh = e.interval_bounds(lo, hi)
    vl, vh = vl.to(F64), vh.to(F64)
    if isinstance(e, SplineEnergy):
        T = e.effective_coef().detach().to(F64)
        rl, rh = _tensor_range(
            T, [_spline_basis_ranges(e, lo[:, i], hi[:, i], False) for i in range(e.dim)]
        )
        vl, vh = torch.maximum(vl, rl), torch.minimum(vh, rh)
    return vl, vh


def _spline_gradient_bounds(e: SplineEnergy, lo, hi):
    """Convex hull: ∂_i V = Σ_j C_j(u_i) (Δ_i θ)_j / h ∏ B_j(u_k) with quadratic B-splines C
    (a partition of unity on [0,1]); its range on a box lies between the extreme coefficients
    whose basis functions are active there."""
    T = e.effective_coef().detach().to(F64)
    K, h, d = e.n_basis, e.h, e.dim
    knots = e._knots.to(F64)
    qk = knots[1:]  # quadratic C_j, j = 1..K-1, supported on [t_j, t_j + 3h]

    def active(kn, width, a, b):
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
    vals = [_spline_basis_ranges(e, lo[:, j], hi[:, j], False) for j in range(d)]
    ders = [_spline_basis_ranges(e, lo[:, j], hi[:, j], True) for j in range(d)]
    for i in range(d):  # intersect with the (convergent) tensor-product enclosure
        rl, rh = _tensor_range(T, [ders[j] if j == i else vals[j] for j in range(d)])
        glo[:, i] = torch.maximum(glo[:, i], rl)
        ghi[:, i] = torch.minimum(ghi[:, i], rh)
    return glo, ghi


def _linear_gradient_bounds(e: LinearEnergy, lo, hi):
    if isinstance(e, SplineEnergy):
        return _spline_gradient_bounds(e, lo, hi)
    T = e.effective_coef().detach().to(F64)
    vals = [e.basis1d_range(lo[:, i], hi[:, i]) for i in range(e.dim)]
    ders = [_basis_deriv_range(e, lo[:, i], hi[:, i]) for i in range(e.dim)]
    out = [
        _tensor_range(T, [ders[j] if j == i else vals[j] for j in range(e.dim)])
        for i in range(e.dim)
    ]
    return torch.stack([o[0] for o in out], -1), torch.stack([o[1] for o in out], -1)


def _linear_eval_slack(e: LinearEnergy) -> float:
    """Generous bound on the float64 round-off of evaluating a linear energy at a point."""
    T = e.effective_coef().detach().to(F64)
    bmax = math.sqrt(2 * e.n_basis + 1) if isinstance(e, LegendreEnergy) else 1.0
    return float(64 * e.n_basis * e.dim * EPS64 * T.abs().sum() * bmax**e.dim)


def _linear_difference(ea: LinearEnergy, eb: LinearEnergy) -> LinearEnergy | None:
    """:math:`V_b - V_a` as one linear energy when both use the same basis (nested Legendre or
    cosine bases are embedded in the larger one; splines need equal knots)."""
    if type(ea) is not type(eb) or ea.dim != eb.dim:
        return None
    if isinstance(ea, SplineEnergy) and ea.n_basis != eb.n_basis:
        return None
    big = ea if ea.n_basis >= eb.n_basis else eb
    out = copy.deepcopy(big).double()
    K, d = big.n_basis, big.dim

    def embed(e):
        T = torch.zeros([K] * d, dtype=F64)
        T[tuple(slice(0, e.n_basis) for _ in range(d))] = e.effective_coef().detach().to(F64)
        return T

    with torch.no_grad():
        out.mask.fill_(1.0)
        out.coef.copy_(embed(eb) - embed(ea))
    return out


# ============================================================================ gradient bounds
def gradient_bounds(energy: Energy, lo: torch.Tensor, hi: torch.Tensor):
    r"""Sound enclosure of :math:`\nabla V` over boxes ``[lo_k, hi_k]`` (shape (m, d)).

    Returns ``(glo, ghi)``, each of shape (m, d), or ``None`` when the family has no rule
    (e.g. :class:`~ebmfit.energies.CallableEnergy`).  Rules: MLP (forward-mode interval
    Jacobian), Legendre / cosine (exact 1-D derivative ranges in interval products), spline
    (convex hull of coefficient differences), quadratic (exact, linear in u), and any energy
    with a ``gradient_bounds`` method (e.g. :class:`MixtureEnergy`).
    """
    lo, hi = lo.to(F64), hi.to(F64)
    with torch.no_grad():
        if hasattr(energy, "gradient_bounds"):
            return energy.gradient_bounds(lo, hi)
        if isinstance(energy, MLPEnergy):
            return _mlp_gradient_bounds(_mlp_parts(energy), lo, hi)
        if isinstance(energy, (LegendreEnergy, CosineEnergy, SplineEnergy)):
            return _linear_gradient_bounds(energy, lo, hi)
        if isinstance(energy, QuadraticEnergy):
            P = ((energy.precision + energy.precision.T) / 2).detach().to(F64)
            mu = energy.mean.detach().to(F64)
            c, r = _mid_rad(lo - mu, hi - mu)
            gc, gr = c @ P.T, r @ P.abs().T
            tol = 8 * EPS64 * (c.abs() @ P.abs().T + gr) + 1e-300
            return gc - gr - tol, gc + gr + tol
    return None


# ============================================================================ mixtures / targets
class _ZeroEnergy(Energy):
    """V ≡ 0: the base measure P itself as a mixture component."""

    family = "zero"

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)

    def forward(self, u):
        return torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)

    def interval_bounds(self, lo, hi):
        z = torch.zeros(lo.shape[0], dtype=F64)
        return z, z

    def gradient_bounds(self, lo, hi):
        z = torch.zeros_like(lo, dtype=F64)
        return z, z


def _simplex_max(c: torch.Tensor, plo: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """max Σ_k π_k c_k over plo <= π <= phi, Σ π = 1 (fractional knapsack), along the last axis."""
    base = (plo * c).sum(-1)
    rest = (1 - plo.sum(-1)).clamp_min(0)
    order = torch.argsort(c, dim=-1, descending=True)
    cs = torch.gather(c, -1, order)
    cap = torch.gather((phi - plo).clamp_min(0), -1, order)
    before = torch.cumsum(cap, -1) - cap
    take = torch.minimum(cap, (rest[..., None] - before).clamp_min(0))
    return base + (take * cs).sum(-1)


class MixtureEnergy(Energy):
    r"""The energy of a mixture: :math:`V(u) = -\log \sum_k w_k e^{-V_k(u)}`.

    ``components`` are energies (``None`` stands for V ≡ 0, the base measure P itself) and
    ``log_weights`` the :math:`\log w_k`, shape (K,).  With :math:`V_k` the *normalized*
    energies (:math:`V_k + \log Z_k`), this is :math:`-\log` of the mixture density
    :math:`\sum_k w_k q_k` with respect to P.

    Sound bounds: V is increasing in every :math:`V_k`, so interval bounds map through exactly;
    :math:`\nabla V = \sum_k \pi_k \nabla V_k` with :math:`\pi = \mathrm{softmax}(\log w - V)`,
    enclosed by bounding π on the simplex from the component bounds.
    """

    family = "mixture"

    def __init__(self, components: list[Energy | None], log_weights):
        super().__init__()
        dims = {c.dim for c in components if c is not None}
        if len(dims) != 1:
            raise ValueError("mixture components must share one dimension (and not all be None)")
        self.dim = dims.pop()
        self.components = nn.ModuleList(
            [c if c is not None else _ZeroEnergy(self.dim) for c in components]
        )
        lw = torch.as_tensor(log_weights, dtype=F64).reshape(-1)
        if lw.numel() != len(components):
            raise ValueError("need one log-weight per component")
        self.register_buffer("log_weights", lw)

    def spec(self) -> dict:
        raise TypeError("MixtureEnergy is an analysis object; it is not saved to model files")

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        Vk = torch.stack([c(u).to(F64) for c in self.components], -1)
        return -torch.logsumexp(self.log_weights - Vk, -1)

    @torch.no_grad()
    def _component_bounds(self, lo, hi):
        bs = [c.interval_bounds(lo, hi) for c in self.components]
        return torch.stack([b[0].to(F64) for b in bs], -1), torch.stack(
            [b[1].to(F64) for b in bs], -1
        )

    @torch.no_grad()
    def interval_bounds(self, lo, hi):
        Vl, Vh = self._component_bounds(lo.to(F64), hi.to(F64))
        vlo = -torch.logsumexp(self.log_weights - Vl, -1)
        vhi = -torch.logsumexp(self.log_weights - Vh, -1)
        tol = 8 * EPS64 * (1 + vlo.abs() + vhi.abs())
        return vlo - tol, vhi + tol

    @torch.no_grad()
    def gradient_bounds(self, lo, hi):
        lo, hi = lo.to(F64), hi.to(F64)
        Vl, Vh = self._component_bounds(lo, hi)
        g = [gradient_bounds(c, lo, hi) for c in self.components]
        if any(x is None for x in g):
            return None
        Gl = torch.stack([x[0] for x in g], -1)  # (m, d, K)
        Gh = torch.stack([x[1] for x in g], -1)
        a_hi, a_lo = self.log_weights - Vl, self.log_weights - Vh  # logits' range
        K = a_hi.shape[-1]
        eye = torch.eye(K, dtype=torch.bool)
        # π_k >= 1 / (1 + Σ_{j≠k} e^{a_hi_j - a_lo_k}),  π_k <= 1 / (1 + Σ_{j≠k} e^{a_lo_j - a_hi_k})
        x = torch.where(eye, -torch.inf, a_hi[:, None, :] - a_lo[:, :, None])
        plo = torch.exp(-torch.logaddexp(torch.zeros(()), torch.logsumexp(x, -1)))
        y = torch.where(eye, -torch.inf, a_lo[:, None, :] - a_hi[:, :, None])
        phi = torch.exp(-torch.logaddexp(torch.zeros(()), torch.logsumexp(y, -1)))
        plo = (plo * (1 - 1e-12)).clamp(0, 1)[:, None, :].expand_as(Gl)
        phi = (phi * (1 + 1e-12) + 1e-300).clamp(0, 1)[:, None, :].expand_as(Gl)
        ghi = _simplex_max(Gh, plo, phi)
        glo = -_simplex_max(-Gl, plo, phi)
        slack = 1e-10 * torch.maximum(Gl.abs(), Gh.abs()).amax(-1) + 1e-300
        return glo - slack, ghi + slack


def base_mixture(
    model: EnergyModel, n: float, *, log_partition: float | None = None
) -> MixtureEnergy:
    r"""The energy of :math:`Q_n = (1 - 1/n)\,Q + (1/n)\,P` (seed §3(c)), Q the model's law.

    :math:`V_n = -\log\big((1-1/n)\,e^{-V - \log Z} + 1/n\big)` is bounded (by :math:`\log n`)
    even where Q has zeros.  ``log_partition`` defaults to the model's (quadrature/QMC) log Z.
    """
    if not n > 1:
        raise ValueError("need n > 1")
    lz = float(model.log_partition().value) if log_partition is None else float(log_partition)
    return MixtureEnergy([model.energy_fn, None], [math.log1p(-1 / n) - lz, -math.log(n)])


class _AffineInput(Energy):
    """V(lo + w ⊙ u): an energy given in x-coordinates seen on the unit cube (w > 0)."""

    family = "affine-input"

    def __init__(self, inner: Energy, low, width):
        super().__init__()
        self.inner = inner
        self.dim = inner.dim
        self.register_buffer("low", torch.as_tensor(low, dtype=F64))
        self.register_buffer("width", torch.as_tensor(width, dtype=F64))

    def spec(self) -> dict:
        raise TypeError("target energies are analysis objects; they are not saved to model files")

    def forward(self, u):
        return self.inner(self.low + self.width * u.to(F64))

    def interval_bounds(self, lo, hi):
        return self.inner.interval_bounds(
            self.low + self.width * lo.to(F64), self.low + self.width * hi.to(F64)
        )

    def gradient_bounds(self, lo, hi):
        g = gradient_bounds(self.inner, self.low + self.width * lo, self.low + self.width * hi)
        return None if g is None else (g[0] * self.width, g[1] * self.width)


def target_energy(target, domain: Box | None = None, *, lipschitz: float | None = None) -> Energy:
    r"""The energy :math:`V^*(u) = -\log q^*(x(u))` of a known target, with sound bounds.

    ``target`` is an :mod:`ebmfit.datasets` target (or any object with ``log_prob`` and
    ``dim``); ``domain`` the model's box (default the unit cube), which must lie inside the
    target's support :math:`[0,1]^d`.

    * ``gaussian_mixture`` and ``correlated_gaussian`` are mixtures of quadratics: exact
      interval and gradient rules (:class:`MixtureEnergy` of
      :class:`~ebmfit.energies.QuadraticEnergy`).
    * Any other smooth target: give ``lipschitz``, a Lipschitz constant of :math:`\log q^*` in
      x (Euclidean); the result is a :class:`~ebmfit.energies.CallableEnergy` with Lipschitz
      bounds (sound, but branch-and-bound then converges slowly).
    * A target with zeros (e.g. ``checkerboard``) has :math:`V^* = +\infty` on a set of
      positive measure: no energy, no finite oscillation and **no finite certificate** exists
      (and :math:`\mathrm{KL}(Q_m\|Q^*) = \infty` for every model).  This raises
      ``ValueError``; compare with the mixture :math:`(1-1/n)Q^* + (1/n)P` instead (seed §3(c))
      or compute :math:`\mathrm{KL}(Q^*\|Q_m)` by quadrature.
    """
    d = int(target.dim)
    domain = domain if domain is not None else Box.unit(d)
    if domain.dim != d:
        raise ValueError(f"domain dimension {domain.dim} != target dimension {d}")
    name = getattr(target, "name", type(target).__name__)
    if not getattr(target, "smooth", True):
        raise ValueError(
            f"target {name!r} has zero-density regions: -log q* is +inf there, so osc(V_m - V*) "
            "is infinite and no finite KL certificate exists (KL(model || target) is infinite "
            "for every positive model). Certify against the mixture (1-1/n) Q* + (1/n) P "
            "instead (seed §3(c)), or compute KL(target || model) by quadrature."
        )
    low, high = np.asarray(domain.low), np.asarray(domain.high)
    if np.any(low < 0) or np.any(high > 1):
        raise ValueError(
            f"domain {domain} leaves the support [0,1]^{d} of target {name!r}: q* = 0 there and "
            "no finite certificate exists"
        )
    inner: Energy | None = None
    if name == "gaussian_mixture":
        s = float(target.std)
        means = np.asarray(target.means, dtype=np.float64)
        logmass = np.log(special.ndtr((1 - means) / s) - special.ndtr(-means / s)).sum(1)
        lw = -math.log(len(means)) - d * math.log(math.sqrt(2 * math.pi) * s) - logmass
        comps = [QuadraticEnergy(d, m, np.eye(d) / s**2) for m in means]
        inner = MixtureEnergy(comps, lw)
    elif name == "correlated_gaussian":
        prec = np.linalg.inv(np.asarray(target.cov, dtype=np.float64))
        inner = MixtureEnergy(
            [QuadraticEnergy(d, np.asarray(target.mean), prec)], [-float(target.log_normalizer)]
        )
    if inner is not None:
        for p in inner.parameters():
            p.requires_grad_(False)
        return _AffineInput(inner, low, high - low)
    if lipschitz is None:
        raise ValueError(
            f"no analytic bounds for target {name!r}: pass lipschitz= (a Lipschitz constant of "
            "log q* in x) for sound Lipschitz bounds"
        )
    width = torch.as_tensor(high - low)
    lo_t = torch.as_tensor(low)

    def fn(u: torch.Tensor) -> torch.Tensor:
        x = (lo_t + width * u.detach().to(F64)).numpy()
        return torch.as_tensor(-target.log_prob(x), dtype=F64)

    L = float(lipschitz) * float(np.linalg.norm(high - low, ord=np.inf))
    return CallableEnergy(fn, d, lipschitz=L, name=f"-log q* ({name})")


# ============================================================================ pairs
class _Pair:
    """Sound enclosures of h = V_b − V_a over boxes, and float64 evaluation of h."""

    method = "independent intervals"

    def __init__(self, ea: Energy, eb: Energy, float_error: bool = False):
        # the dtypes the models evaluate in (for float_error); all work is on CPU float64 copies
        self.dtypes = (ea.param_dtype(), eb.param_dtype())
        self.ea, self.eb = _as64(ea), _as64(eb)
        self.ea64, self.eb64 = self.ea, self.eb
        self.dim = ea.dim
        self.float_error = float_error

    def h(self, u: torch.Tensor) -> torch.Tensor:
        return self.eb64(u).to(F64) - self.ea64(u).to(F64)

    def h_and_grad(self, u: torch.Tensor):
        u = u.detach().clone().requires_grad_(True)
        v = self.h(u)
        (g,) = torch.autograd.grad(v.sum(), u)
        return v.detach(), g

    def bounds(self, lo, hi):
        al, ah = _value_bounds(self.ea, lo, hi, False)
        bl, bh = _value_bounds(self.eb, lo, hi, False)
        if self.float_error:
            ea_, eb_ = self.fp(lo, hi)
            al, ah, bl, bh = al - ea_, ah + ea_, bl - eb_, bh + eb_
        return bl - ah, bh - al

    def fp(self, lo, hi):
        """Evaluation-error allowances of both models in their own dtypes (MLPs; 0 otherwise)."""
        return (
            _fp_allowance(self.ea, lo, hi, self.dtypes[0]),
            _fp_allowance(self.eb, lo, hi, self.dtypes[1]),
        )


def _fp_allowance(energy: Energy, lo, hi, dtype: torch.dtype) -> torch.Tensor | float:
    """Rigorous evaluation-error bound of an MLP evaluated in ``dtype`` over boxes (0 for other
    families, whose ``interval_bounds`` carry their own allowance)."""
    if isinstance(energy, MLPEnergy):
        p = _mlp_parts(energy, dtype)
        return _mlp_fp_error(p, _mlp_trace(p, lo, hi), lo, hi)
    return 0.0


def _first_order(energy: Energy, lo, hi):
    """(v0, gL, gH, e) with V(u) ∈ v0 + g·(u − c) ± e, g ∈ [gL, gH], over each box, or None.

    MLPs: a second-order Taylor model on the boxes small enough for it (NaN rows elsewhere:
    no information); other families: a sound enclosure of V at the centre and
    :func:`gradient_bounds` over the box (mean-value form).
    """
    if isinstance(energy, MLPEnergy):
        p = _mlp_parts(energy)
        m, d = lo.shape
        out = (
            torch.full((m,), math.nan, dtype=F64),
            torch.full((m, d), math.nan, dtype=F64),
            torch.full((m, d), math.nan, dtype=F64),
            torch.full((m,), math.nan, dtype=F64),
        )
        small = torch.ones(m, dtype=torch.bool)
        if p.freqs is not None:
            spread = ((hi - lo) / 2 @ (2 * math.pi * p.freqs.abs()).T).amax(-1)
            small = spread <= TM_PHASE_THRESHOLD
        idx = small.nonzero().squeeze(-1)
        if idx.numel():
            tm, _ = _mlp_taylor(p, lo[idx], hi[idx])
            for o, v in zip(out, _tm_first_order(tm, lo[idx], hi[idx]), strict=True):
                o[idx] = v
        return out
    g = gradient_bounds(energy, lo, hi)
    if g is None:
        return None
    c = (lo + hi) / 2
    vl, vh = _value_bounds(energy, c, c, False)
    return (vl + vh) / 2, g[0], g[1], (vh - vl) / 2


class _GenericPair(_Pair):
    """Any two energies: independent intervals ∩ first-order forms of both (when available)."""

    def __init__(self, ea, eb, float_error=False):
        super().__init__(ea, eb, float_error)
        x = torch.full((1, self.dim), 0.5, dtype=F64)
        self.mean_value = (
            _first_order(self.ea, x, x) is not None and _first_order(self.eb, x, x) is not None
        )
        if self.mean_value:
            self.method = "intervals ∩ first-order forms (Taylor model / mean-value)"

    def bounds(self, lo, hi):
        l1, h1 = super().bounds(lo, hi)
        if not self.mean_value:
            return l1, h1
        fa, fb = _first_order(self.ea, lo, hi), _first_order(self.eb, lo, hi)
        if fa is None or fb is None:
            return l1, h1
        (a0, agl, agh, ae), (b0, bgl, bgh, be) = fa, fb
        r = (hi - lo) / 2
        s = (torch.maximum((bgh - agl).abs(), (bgl - agh).abs()) * r).sum(-1) + ae + be
        h0 = b0 - a0
        s = s + 8 * EPS64 * (a0.abs() + b0.abs())
        if self.float_error:
            fa_, fb_ = self.fp(lo, hi)
            s = s + fa_ + fb_
        return _meet(l1, h1, h0 - s, h0 + s)


class _LinearPair(_Pair):
    def __init__(self, ea, eb, diff, float_error=False):
        super().__init__(ea, eb, float_error)
        self.diff = diff
        self.slack = _linear_eval_slack(ea) + _linear_eval_slack(eb) if float_error else 0.0
        self.method = "difference energy: intervals ∩ mean-value form"

    def h(self, u):
        return self.diff(u.to(F64))

    def bounds(self, lo, hi):
        l1, h1 = _linear_value_bounds(self.diff, lo, hi)
        c, r = _mid_rad(lo, hi)
        hcl, hch = _linear_value_bounds(self.diff, c, c)
        gl, gh = gradient_bounds(self.diff, lo, hi)
        s = (torch.maximum(gl.abs(), gh.abs()) * r).sum(-1)
        lo_, hi_ = _meet(l1, h1, hcl - s, hch + s)
        return lo_ - self.slack, hi_ + self.slack


TM_PHASE_THRESHOLD = 1.5  # Taylor models on boxes where Fourier phases spread by <= this


class _MLPPair(_Pair):
    method = "joint Taylor models of net A and of the difference B − A"

    def __init__(self, ea, eb, float_error=False):
        super().__init__(ea, eb, float_error)
        self.pa = _mlp_parts(self.ea, self.dtypes[0])
        self.pb = _mlp_parts(self.eb, self.dtypes[1])
        B = self.pa.freqs
        self.phase_rate = None if B is None else 2 * math.pi * B.abs()  # (F, d)
        self.tm_threshold = TM_PHASE_THRESHOLD

    def bounds(self, lo, hi):
        hL, hH = _mlp_pair_intervals(self.pa, self.pb, lo, hi)
        # Taylor models pay off once the Fourier phases vary by less than ~1 rad over a box
        r = (hi - lo) / 2
        # the largest phase spread of a Fourier feature over the box
        rho = (r @ self.phase_rate.T).amax(-1) if self.phase_rate is not None else r.sum(-1)
        small = rho <= self.tm_threshold
        if bool(small.any()):
            idx = small.nonzero().squeeze(-1)
            _, dl = _mlp_taylor(self.pa, lo[idx], hi[idx], self.pb)
            tl, th = _tm_range(dl, lo[idx], hi[idx])
            hL[idx], hH[idx] = _meet(hL[idx], hH[idx], tl, th)
        if self.float_error:
            E = _mlp_fp_error(self.pa, _mlp_trace(self.pa, lo, hi), lo, hi) + _mlp_fp_error(
                self.pb, _mlp_trace(self.pb, lo, hi), lo, hi
            )
            hL, hH = hL - E, hH + E
        return hL, hH


def _same_mlp_architecture(ea, eb) -> bool:
    return (
        isinstance(ea, MLPEnergy)
        and isinstance(eb, MLPEnergy)
        and ea.dim == eb.dim
        and ea.hidden == eb.hidden
        and ea.n_fourier == eb.n_fourier
    )


def _make_pair(ea: Energy, eb: Energy, float_error: bool = False) -> _Pair:
    if ea.dim != eb.dim:
        raise ValueError(f"energies have dimensions {ea.dim} and {eb.dim}")
    if _same_mlp_architecture(ea, eb):
        return _MLPPair(ea, eb, float_error)
    if isinstance(ea, LinearEnergy) and isinstance(eb, LinearEnergy):
        diff = _linear_difference(_as64(ea), _as64(eb))
        if diff is not None:
            return _LinearPair(ea, eb, diff, float_error)
    return _GenericPair(ea, eb, float_error)


# ============================================================================ branch and bound
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


def _local_opt(pair: _Pair, starts: np.ndarray, sign: float, maxiter: int = 60):
    """L-BFGS-B on the cube from each start; returns the best (value, point) of sign·h."""
    best_v, best_x = -math.inf, None

    def fun(x):
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
    pair = _make_pair(energy_a, energy_b, float_error)
    d = pair.dim
    # ---- incumbents from a point sample and local optimisation
    pts = torch.as_tensor(qmc.Sobol(d, scramble=True, seed=random_state).random_base2(13))
    if d <= 12:  # the corners, where extremes of smooth energies often sit
        corners = np.array(np.meshgrid(*[[0.0, 1.0]] * d, indexing="ij")).reshape(d, -1).T
        pts = torch.cat([pts, torch.as_tensor(corners)])
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
    idx = torch.stack(
        [
            g.reshape(-1)
            for g in torch.meshgrid(*([torch.arange(cells, dtype=F64)] * d), indexing="ij")
        ],
        -1,
    )
    lo, hi = idx / cells, (idx + 1) / cells  # shared faces are computed identically: no gaps

    def evaluate(lo, hi):
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


# ============================================================================ exact KL (d <= 3)
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


def _kl_on_grid(ta: torch.Tensor, tb: torch.Tensor, lw: torch.Tensor) -> float:
    r"""KL between the grid laws :math:`\pi_a \propto w e^{-t_a}` and :math:`\pi_b \propto w e^{-t_b}`.

    :math:`\mathrm{KL} = \mathbb{E}_{\pi_a}[s] + \log Z_b - \log Z_a`, :math:`s = t_b - t_a`.
    Where :math:`\pi_a > 0` at every node, :math:`\log Z_b - \log Z_a = \log\mathbb{E}_{\pi_a}
    [e^{-s}]` and, with :math:`c = \mathbb{E}_{\pi_a}[s]`, :math:`\mathrm{KL} =
    \operatorname{log1p}(\mathbb{E}_{\pi_a}[\operatorname{expm1}(-(s - c))])`, accurate even for
    tiny KL; otherwise (:math:`Q_a` has zeros) the two normalizers are summed separately.
    """
    la, lb = lw - ta, lw - tb
    lza, lzb = torch.logsumexp(la, 0), torch.logsumexp(lb, 0)
    pa = torch.exp(la - lza)
    on = pa > 0
    if not bool(torch.isfinite(tb[on]).all()):
        return math.inf
    s = (tb - ta)[on]
    p = pa[on]
    c = (p * s).sum() / p.sum()
    if bool(on.all()):
        e = (p * torch.expm1(-(s - c))).sum() / p.sum()
        return float(torch.log1p(e).clamp_min(0.0))
    return float((c + lzb - lza).clamp_min(0.0))


def _grid_terms(energy: Energy, base: BaseMeasure, axes, weights):
    """(t, log w) on the grid with t = V − log dP/du (so the density is ∝ w e^{−t})."""
    li = grid_log_integrand(energy, base, axes, weights)
    lw = torch.zeros((), dtype=F64)
    for w in weights:
        lw = (lw[..., None] + torch.log(w)).reshape(-1)
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


def _kl_both(model_a, model_b, n_cells, n_nodes):
    d = model_a.dim
    if d > 3:
        raise ValueError(f"quadrature KL needs d <= 3 (got d = {d})")
    c0, q0 = {1: (512, 8), 2: (64, 4), 3: (16, 4)}[d]
    n_cells, n_nodes = int(n_cells or c0), int(n_nodes or q0)
    res = []
    for cells in (n_cells, 2 * n_cells):
        ax, w = gauss_legendre_1d(cells, n_nodes)
        ta, lw = _grid_terms(model_a.energy_fn, model_a.base, [ax] * d, [w] * d)
        tb, _ = _grid_terms(model_b.energy_fn, model_b.base, [ax] * d, [w] * d)
        res.append((_kl_on_grid(ta, tb, lw), _kl_on_grid(tb, ta, lw), 2 * ta.numel()))
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
    :math:`\mathbb{E}_{Q_a}[t_b - t_a] + \log Z_b - \log Z_a` with :math:`t = V - \log dP/du`
    (the form :func:`_kl_on_grid` evaluates without cancellation), at ``n_cells`` and
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
    **osc_kwargs,
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


# ============================================================================ compression
def _prune_(energy: Energy, amount: float) -> None:
    """Zero the fraction ``amount`` of smallest-magnitude weights of every weight tensor."""
    with torch.no_grad():
        if isinstance(energy, LinearEnergy):
            tensors = [(energy.coef, energy.mask > 0)]
        else:
            tensors = [
                (p, torch.ones_like(p, dtype=torch.bool))
                for n, p in energy.named_parameters()
                if p.dim() >= 2 or n.endswith("coef")
            ]
        for p, sel in tensors:
            vals = p[sel].abs()
            k = int(math.floor(amount * vals.numel()))
            if k == 0:
                continue
            thr = torch.kthvalue(vals.flatten().to(F64), k).values
            p[sel & (p.abs().to(F64) <= thr)] = 0.0


def _distil(teacher: Energy, student: Energy, *, max_iter: int = 500) -> Energy:
    """Least-squares fit of the student to the teacher energy (up to a constant) on a grid."""
    d = teacher.dim
    n = {1: 2048, 2: 96, 3: 32}.get(d, 0)
    if n:
        ax, _ = gauss_legendre_1d(n // 4, 4)
        from .energies.base import tensor_grid

        U = tensor_grid([ax] * d)
    else:
        U = torch.as_tensor(qmc.Sobol(d, scramble=True, seed=0).random_base2(15))
    with torch.no_grad():
        target = torch.cat([teacher(c.to(teacher.param_dtype())).to(F64) for c in U.split(65536)])
    target = target - target.mean()
    if isinstance(student, LinearEnergy):
        Phi = student.features(U.to(student.coef.dtype))
        Phi = Phi - Phi.mean(0)
        cols = student.mask.reshape(-1) > 0
        sol = torch.linalg.lstsq(Phi[:, cols], target[:, None].to(Phi.dtype)).solution[:, 0]
        with torch.no_grad():
            c = torch.zeros_like(student.coef).reshape(-1)
            c[cols] = sol
            student.coef.copy_(c.reshape(student.coef.shape))
        return student
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(max_iter):
        idx = torch.randint(0, U.shape[0], (min(4096, U.shape[0]),), generator=g)
        v = student(U[idx].to(student.param_dtype())).to(F64)
        r = v - target[idx]
        loss = ((r - r.mean()) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student


def compress(
    model: EnergyModel,
    how: str = "float16",
    *,
    amount: float = 0.5,
    student: Energy | None = None,
    tol: float = 0.1,
    **osc_kwargs,
) -> tuple[EnergyModel, KLCertificate]:
    r"""Compress a model and certify the KL between the compressed and the original law.

    ``how``:

    * ``"float16"`` / ``"bfloat16"``: every parameter rounded to that format (kept in the
      model's dtype, so evaluation is unchanged and saving the weights as 16-bit is lossless);
    * ``"prune"``: magnitude pruning, the fraction ``amount`` of smallest weights of every
      weight matrix (or of the coefficients of a linear energy) set to zero;
    * ``"distil"``: fit ``student`` (a smaller energy) to the original energy by least squares
      on a grid (exactly for linear students), i.e. a small :math:`\|V_s - V - c\|_2`.

    Returns ``(compressed_model, certificate)`` with the certificate of
    :func:`kl_bound` (original = A, compressed = B).
    """
    energy = model.energy_fn
    if how in ("float16", "bfloat16"):
        new = copy.deepcopy(energy)
        dt = torch.float16 if how == "float16" else torch.bfloat16
        with torch.no_grad():
            for p in new.parameters():
                p.copy_(p.to(dt).to(p.dtype))
    elif how == "prune":
        if not 0 <= amount < 1:
            raise ValueError("amount must be in [0, 1)")
        new = copy.deepcopy(energy)
        _prune_(new, amount)
    elif how == "distil":
        if student is None:
            raise ValueError("how='distil' needs student=, e.g. LegendreEnergy(d, 8)")
        new = _distil(energy, copy.deepcopy(student))
    else:
        raise ValueError(
            f"unknown compression {how!r}: use 'float16', 'bfloat16', 'prune' or 'distil'"
        )
    for p in new.parameters():
        p.requires_grad_(False)
    out = EnergyModel(new, model.domain, model.base)
    cert = kl_bound(model, out, tol=tol, labels=("original", f"compressed ({how})"), **osc_kwargs)
    return out, cert
