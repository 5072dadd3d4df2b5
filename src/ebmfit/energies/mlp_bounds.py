r"""The one interval propagator of SiLU MLPs on Fourier features (value, gradient, Taylor models).

:class:`~ebmfit.energies.MLPEnergy` implements the bounds protocol
(:mod:`ebmfit.energies.interval`) with these rules; the exact sampler and the certificates
therefore rest on the same soundness code.

* **intervals**: boxes through the encoding (exact cos/sin ranges), affine maps in centre-radius
  form with Higham allowances, and SiLU (exact range);
* **gradients**: forward-mode interval Jacobians (exact range of SiLU′);
* **Taylor models** (second order): value, gradient and packed Hessian coefficients in
  :math:`t = u - c` plus a rigorous remainder, layer by layer — of one network, and jointly of
  the difference of two networks of one architecture,
  :math:`W_b x_b - W_a x_a = W_b\,\delta + (W_b - W_a)\,x_a`, SiLU differences by a
  two-variable expansion whose remainder carries a factor of δ (the overestimate is third
  order in the width and proportional to the difference);
* **evaluation error**: a worst-case forward error bound of the network run in its own dtype.

All arithmetic is float64 on the weights' device.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .interval import (
    EPS64,
    F64,
    FirstOrder,
    Interval,
    cos_range,
    dot_tol,
    gamma,
    imul,
    meet,
    mid_rad,
    unit_roundoff,
)

__all__ = [
    "TM_PHASE_THRESHOLD",
    "MLPDifference",
    "evaluation_error",
    "first_order",
    "silu_range",
    "value_bounds",
]

_SILU_ARGMIN = -1.2784645427610738  # silu'(x) = 0: silu decreases before, increases after

_DSILU_ARGMAX = 2.399357280515467  # root of silu''(x) = 0, i.e. x tanh(x/2) = 2; silu' max
_DSILU_MAX = 1.0998393201288668
_DSILU_MIN = -0.09983932012886691
_DDSILU_ARGMIN = 3.4358409935351107  # root of the third derivative of SiLU
_DDSILU_MIN = -0.036914373199893186


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def silu_range(a: torch.Tensor, b: torch.Tensor) -> Interval:
    """Exact range of SiLU over [a, b]: it decreases on (-inf, x*] and increases after."""
    hi = torch.maximum(_silu(a), _silu(b))
    lo = _silu(torch.clamp(torch.full_like(a, _SILU_ARGMIN), a, b))
    tol = 4 * torch.finfo(a.dtype).eps * (1 + torch.maximum(a.abs(), b.abs()))
    return lo - tol, hi + tol


def _dsilu(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _dsilu_range(a: torch.Tensor, b: torch.Tensor) -> Interval:
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


def _mlp_parts(e: nn.Module, dtype: torch.dtype | None = None) -> _MLPParts:
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


def _features(
    B: torch.Tensor | None, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Interval enclosure of the encoding [u, cos 2πBu, sin 2πBu] over boxes, plus z's centre
    and radius (for the Jacobian rule)."""
    if B is None:
        return lo, hi, None, None
    c, r = mid_rad(lo, hi)
    zc = 2 * math.pi * (c @ B.T)
    zr = 2 * math.pi * (r @ B.abs().T)
    zr = zr + 8 * EPS64 * (zc.abs() + zr + 1)
    cl, ch = cos_range(zc - zr, zc + zr)
    sl, sh = cos_range(zc - zr - math.pi / 2, zc + zr - math.pi / 2)
    return torch.cat([lo, cl, sl], -1), torch.cat([hi, ch, sh], -1), zc, zr


def _affine_interval(
    W: torch.Tensor, b: torch.Tensor, L: torch.Tensor, H: torch.Tensor
) -> Interval:
    c, r = mid_rad(L, H)
    yc = c @ W.T + b
    yr = r @ W.abs().T
    tol = dot_tol(W) * (c.abs() @ W.abs().T + b.abs() + yr)
    return yc - yr - tol, yc + yr + tol


class _Trace(NamedTuple):
    ins: list[tuple[torch.Tensor, torch.Tensor]]  # input interval of each affine layer
    pre: list[tuple[torch.Tensor, torch.Tensor]]  # its output (pre-activation) interval
    zc: torch.Tensor | None
    zr: torch.Tensor | None


def _mlp_trace(p: _MLPParts, lo: torch.Tensor, hi: torch.Tensor) -> _Trace:
    L, H, zc, zr = _features(p.freqs, lo, hi)
    ins, pre = [], []
    for k, (W, b) in enumerate(p.affine):
        ins.append((L, H))
        L, H = _affine_interval(W, b, L, H)
        pre.append((L, H))
        if k < len(p.affine) - 1:
            L, H = silu_range(L, H)
    return _Trace(ins, pre, zc, zr)


def _mlp_fp_error(p: _MLPParts, t: _Trace, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    r"""Bound on |computed V − exact V| for the network evaluated in ``p.dtype``, per box.

    Standard forward error analysis: a dot product of n terms plus a bias has error at most
    :math:`\gamma_{n+1}(|W||\hat x| + |b|)`; errors already in the input pass through
    :math:`|W|`; SiLU is 1.1-Lipschitz and is evaluated to a few ulps; cos/sin are evaluated at
    an argument carrying the rounding of :math:`2\pi Bu` (cos is 1-Lipschitz).  The input point
    itself is whatever representable point is evaluated (the sup is over all of them).
    """
    u = unit_roundoff(p.dtype)
    m = lo.shape[0]
    d = lo.shape[1]
    if p.freqs is not None:
        ez = (gamma(d, u) + 3 * u) * 2 * math.pi * (hi.abs() @ p.freqs.abs().T) + 4 * u
        E = torch.cat([torch.zeros(m, d, dtype=F64, device=lo.device), ez, ez], -1)
    else:
        E = torch.zeros(m, d, dtype=F64, device=lo.device)
    for k, (W, b) in enumerate(p.affine):
        L, H = t.ins[k]
        M = torch.maximum(L.abs(), H.abs())
        Wa = W.abs()
        g = gamma(W.shape[1] + 1, u)
        E = E @ Wa.T + g * ((M + E) @ Wa.T + b.abs())
        if k < len(p.affine) - 1:
            pl, ph = t.pre[k]
            sl, sh = silu_range(pl, ph)
            E = 1.1 * E + 4 * u * torch.maximum(sl.abs(), sh.abs()) + 1e-300
    return E.squeeze(-1)


def _mlp_value_bounds(p: _MLPParts, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
    L, H = _mlp_trace(p, lo, hi).pre[-1]
    return L.squeeze(-1), H.squeeze(-1)


class _JacTrace(NamedTuple):
    ins: list[tuple[torch.Tensor, torch.Tensor]]  # Jacobian of each affine layer's input (m, n, d)
    pre: list[tuple[torch.Tensor, torch.Tensor]]  # Jacobian of its output (m, n_out, d)


def _feature_jacobian(
    B: torch.Tensor | None,
    zc: torch.Tensor | None,
    zr: torch.Tensor | None,
    m: int,
    d: int,
    device: torch.device,
) -> Interval:
    eye = torch.eye(d, dtype=F64, device=device).expand(m, d, d)
    if B is None:
        return eye, eye
    cl, ch = cos_range(zc - zr, zc + zr)
    sl, sh = cos_range(zc - zr - math.pi / 2, zc + zr - math.pi / 2)
    g = 2 * math.pi * B  # (F, d): d cos z / du = -sin z * g ;  d sin z / du = cos z * g
    al, ah = imul(-sh[:, :, None], -sl[:, :, None], g[None], g[None])
    bl, bh = imul(cl[:, :, None], ch[:, :, None], g[None], g[None])
    return torch.cat([eye, al, bl], 1), torch.cat([eye, ah, bh], 1)


def _jac_affine(W: torch.Tensor, JL: torch.Tensor, JH: torch.Tensor) -> Interval:
    Jc, Jr = mid_rad(JL, JH)
    c = torch.einsum("mjd,kj->mkd", Jc, W)
    r = torch.einsum("mjd,kj->mkd", Jr, W.abs())
    r = r + dot_tol(W) * (torch.einsum("mjd,kj->mkd", Jc.abs(), W.abs()) + r)
    return c - r, c + r


def _mlp_jac_trace(p: _MLPParts, t: _Trace, lo: torch.Tensor, hi: torch.Tensor) -> _JacTrace:
    """Forward-mode interval Jacobians of every layer over boxes."""
    m, d = lo.shape
    JL, JH = _feature_jacobian(p.freqs, t.zc, t.zr, m, d, lo.device)
    ins, pre = [], []
    for k, (W, _b) in enumerate(p.affine):
        ins.append((JL, JH))
        JL, JH = _jac_affine(W, JL, JH)
        pre.append((JL, JH))
        if k < len(p.affine) - 1:
            pl, ph = t.pre[k]
            sl, sh = _dsilu_range(pl, ph)
            JL, JH = imul(sl[:, :, None], sh[:, :, None], JL, JH)
    return _JacTrace(ins, pre)


def _mlp_gradient_bounds(p: _MLPParts, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
    """Interval enclosure of the MLP's gradient over boxes, shape (m, d) each side."""
    t = _mlp_trace(p, lo, hi)
    JL, JH = _mlp_jac_trace(p, t, lo, hi).pre[-1]
    JL, JH = JL.squeeze(1), JH.squeeze(1)
    slack = 1e-12 * (JL.abs() + JH.abs()) + 1e-300
    return JL - slack, JH + slack


def _intersect(a: Interval, b: Interval) -> Interval:
    return torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])


def _mlp_pair_intervals(
    pa: _MLPParts, pb: _MLPParts, lo: torch.Tensor, hi: torch.Tensor
) -> Interval:
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
        c, r = mid_rad(lo, hi)
        dz = 2 * math.pi * ((c @ dB.T).abs() + r @ dB.abs().T) * (1 + 1e-12) + 1e-300
        dz2 = torch.cat([torch.zeros(m, d, dtype=F64, device=lo.device), dz, dz], -1)
        Ld, Hd = torch.maximum(-dz2, Lb0 - Ha0), torch.minimum(dz2, Hb0 - La0)
    n = len(pa.affine)
    for k in range(n):
        (Wa, ba), (Wb, bb) = pa.affine[k], pb.affine[k]
        dW, db = Wb - Wa, bb - ba
        dc, dr = mid_rad(Ld, Hd)
        out = []
        for W, (xl, xh) in ((Wb, ta.ins[k]), (Wa, tb.ins[k])):
            xc, xr = mid_rad(xl, xh)
            c = dc @ W.T + xc @ dW.T + db
            r = dr @ W.abs().T + xr @ dW.abs().T
            t = dot_tol(W) * (dc.abs() @ W.abs().T + xc.abs() @ dW.abs().T + db.abs() + r)
            out.append((c - r - t, c + r + t))
        Ld, Hd = _intersect(*out)
        (pla, pha), (plb, phb) = ta.pre[k], tb.pre[k]
        Ld, Hd = _intersect((Ld, Hd), (plb - pha, phb - pla))
        if k < n - 1:
            sl, sh = _dsilu_range(torch.minimum(pla, plb), torch.maximum(pha, phb))
            L2, H2 = imul(sl, sh, Ld, Hd)
            t = 4 * EPS64 * torch.maximum(L2.abs(), H2.abs()) + 1e-300
            zla, zha = silu_range(pla, pha)
            zlb, zhb = silu_range(plb, phb)
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
#: (linear radius, quadratic radius, total radius) of a Taylor model, each (m, n).
_Radii = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _pairs(d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row/column indices of the packed upper triangle and the weights ½ (diagonal) / 1 (off)."""
    if d not in _PAIRS:
        iu, ju = torch.triu_indices(d, d)
        _PAIRS[d] = (iu, ju, torch.where(iu == ju, 0.5, 1.0).to(F64))
    return _PAIRS[d]


def _rr(r: torch.Tensor) -> torch.Tensor:
    """Weights of |H| in the quadratic radius: c_p r_i r_j, shape (m, P)."""
    iu, ju, cw = _pairs(r.shape[1])
    return r[:, iu] * r[:, ju] * cw


def _tm_parts(tm: _TM, r: torch.Tensor, rrw: torch.Tensor) -> _Radii:
    """(linear radius, quadratic radius, total radius) of a Taylor model over its boxes."""
    lin = torch.einsum("mdn,md->mn", tm.a.abs(), r)
    quad = torch.einsum("mpn,mp->mn", tm.H.abs(), rrw)
    return lin, quad, lin + quad + tm.e


def _mm(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return (x.reshape(-1, x.shape[-1]) @ W.T).reshape(*x.shape[:-1], W.shape[0])


def _tm_affine(W: torch.Tensor, b: torch.Tensor | None, x: _TM, rho: torch.Tensor) -> _TM:
    """W x + b; ``rho`` is x's total radius (for the round-off allowance)."""
    Wa = W.abs()
    v0 = x.v0 @ W.T
    if b is not None:
        v0 = v0 + b
    tol = 2 * dot_tol(W) * ((x.v0.abs() + rho) @ Wa.T + (0 if b is None else b.abs()))
    return _TM(v0, _mm(x.a, W), _mm(x.H, W), x.e @ Wa.T + tol)


def _tm_features(B: torch.Tensor | None, c: torch.Tensor, r: torch.Tensor) -> _TM:
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


def _sig_derivs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = torch.sigmoid(x)
    s1 = s * (1 + x * (1 - s))
    s2 = s * (1 - s) * (2 + x * (1 - 2 * s))
    return x * s, s1, s2


def _tm_silu(y: _TM, parts: _Radii) -> _TM:
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


def _tm_silu_diff(y: _TM, dl: _TM, py: _Radii, pd: _Radii) -> _TM:
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


def _mlp_taylor(
    pa: _MLPParts, lo: torch.Tensor, hi: torch.Tensor, pb: _MLPParts | None = None
) -> tuple[_TM, _TM | None]:
    """Taylor model of V_a over boxes, and of V_b − V_a when ``pb`` is given (same architecture).

    Returns ``(tm_a, tm_delta)`` at the output (n = 1); ``tm_delta`` is None without ``pb``.
    """
    c, r = mid_rad(lo, hi)
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


def _tm_range(tm: _TM, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
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


def _tm_first_order(
    tm: _TM, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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


# ============================================================================ the protocol
TM_PHASE_THRESHOLD = 1.5  # Taylor models on boxes where Fourier phases spread by <= this


def value_bounds(p: _MLPParts, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
    """Sound bounds of the exact-arithmetic network over boxes, shape (m,) each."""
    return _mlp_value_bounds(p, lo.to(F64), hi.to(F64))


def evaluation_error(p: _MLPParts, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Bound on |V evaluated in ``p.dtype`` − exact V| over boxes, shape (m,)."""
    lo, hi = lo.to(F64), hi.to(F64)
    return _mlp_fp_error(p, _mlp_trace(p, lo, hi), lo, hi)


def first_order(p: _MLPParts, lo: torch.Tensor, hi: torch.Tensor) -> FirstOrder:
    """A second-order Taylor model reduced to a first-order form on the boxes small enough
    for it (Fourier phases spread by at most ``TM_PHASE_THRESHOLD``); NaN rows elsewhere."""
    m, d = lo.shape
    out = FirstOrder(
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


class MLPDifference:
    r"""Joint enclosures of :math:`V_b - V_a` for two MLPs of one architecture: the first-order
    interval rule on every box, intersected with Taylor models of the difference where the
    Fourier phases vary by less than ``TM_PHASE_THRESHOLD`` over a box."""

    method = "joint Taylor models of net A and of the difference B − A"

    def __init__(self, ea: nn.Module, eb: nn.Module):
        self.ea, self.eb = ea, eb
        self.pa, self.pb = _mlp_parts(ea), _mlp_parts(eb)
        B = self.pa.freqs
        self.phase_rate = None if B is None else 2 * math.pi * B.abs()  # (F, d)
        self.tm_threshold = TM_PHASE_THRESHOLD

    def h(self, u: torch.Tensor) -> torch.Tensor:
        return self.eb(u).to(F64) - self.ea(u).to(F64)

    def bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        hL, hH = _mlp_pair_intervals(self.pa, self.pb, lo, hi)
        r = (hi - lo) / 2
        # the largest phase spread of a Fourier feature over the box
        rho = (r @ self.phase_rate.T).amax(-1) if self.phase_rate is not None else r.sum(-1)
        small = rho <= self.tm_threshold
        if bool(small.any()):
            idx = small.nonzero().squeeze(-1)
            _, dl = _mlp_taylor(self.pa, lo[idx], hi[idx], self.pb)
            tl, th = _tm_range(dl, lo[idx], hi[idx])
            hL[idx], hH[idx] = meet(hL[idx], hH[idx], tl, th)
        return hL, hH
