"""Soundness of the certificates: every enclosure is checked against dense evaluation.

A certified bound that fails once is a bug, not a tolerance: every comparison below is exact
(no slack is added on the test side).  Energies are float64, so dense evaluation is the exact
function up to ~1e-15 relative round-off, far inside the round-off allowances the bounds carry.

The KL property test is exact too: Gauss–Legendre weights are positive, so the quadrature KL is
the KL between two tilts of a *discrete* base measure (the grid), and Hoeffding's bound holds
for any base measure with the oscillation over the grid points, which is at most the
oscillation over the cube.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebmfit import Box, EnergyModel
from ebmfit.certify import (
    MixtureEnergy,
    gradient_bounds,
    kl_bound,
    kl_from_osc,
    kl_quadrature,
    oscillation_bounds,
)
from ebmfit.certify.pairs import value_bounds
from ebmfit.energies import (
    CosineEnergy,
    LegendreEnergy,
    MLPEnergy,
    QuadraticEnergy,
    SplineEnergy,
)
from ebmfit.energies.mlp_bounds import (
    _DDSILU_ARGMIN,
    _DDSILU_MIN,
    _DSILU_ARGMAX,
    _DSILU_MAX,
    _DSILU_MIN,
    _S3,
    _S4,
    _mlp_pair_intervals,
    _mlp_parts,
    _mlp_taylor,
    _tm_first_order,
    _tm_range,
)

F64 = torch.float64


# ----------------------------------------------------------------------------- builders
def make_energy(family: str, dim: int, seed: int, scale: float = 1.0):
    """A random float64 energy of a family, deterministic in ``seed``."""
    g = torch.Generator().manual_seed(seed)
    if family == "mlp":
        e = MLPEnergy(dim, hidden=(12, 12), n_fourier=4, fourier_scale=1.5, seed=seed, dtype=F64)
        with torch.no_grad():
            for p in e.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.6 * scale)
        return e
    if family == "quadratic":
        A = torch.randn(dim, dim, generator=g, dtype=F64)
        mean = torch.rand(dim, generator=g, dtype=F64)
        return QuadraticEnergy(dim, mean, scale * (A @ A.T + 0.1 * torch.eye(dim, dtype=F64)))
    if family == "mixture":
        comps = [make_energy("quadratic", dim, seed + k, 5 * scale) for k in range(2)] + [None]
        return MixtureEnergy(comps, torch.randn(3, generator=g, dtype=F64))
    cls, k = {
        "legendre": (LegendreEnergy, 4),
        "cosine": (CosineEnergy, 4),
        "spline": (SplineEnergy, 6),
    }[family]
    e = cls(dim, k)
    with torch.no_grad():
        e.coef.copy_(torch.randn(e.coef.shape, generator=g, dtype=F64) * scale)
    return e


def perturbed(e, seed: int, eps: float):
    """A copy with every parameter moved by eps * N(0, 1) (a 'nearby' model)."""
    out = copy.deepcopy(e)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(eps * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return out


def dense_grid(dim: int, n: int) -> torch.Tensor:
    ax = torch.linspace(0, 1, n, dtype=F64)
    return torch.stack(torch.meshgrid(*([ax] * dim), indexing="ij"), -1).reshape(-1, dim)


def random_boxes(dim: int, m: int, seed: int, max_width: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(m, dim, generator=g, dtype=F64) * max_width
    lo = torch.rand(m, dim, generator=g, dtype=F64) * (1 - w)
    return lo, lo + w


def points_in(lo, hi, k: int, seed: int):
    """k random points in every box plus its corners' extremes: shape (m, k + 2, d)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(lo.shape[0], k, lo.shape[1], generator=g, dtype=F64)
    pts = lo[:, None] + t * (hi - lo)[:, None]
    return torch.cat([pts, lo[:, None], hi[:, None]], 1)


FAMILIES = ["mlp", "legendre", "cosine", "spline", "quadratic", "mixture"]


# ----------------------------------------------------------------------------- constants
def test_silu_derivative_constants_match_dense_evaluation():
    x = torch.linspace(-40, 40, 800_001, dtype=F64).requires_grad_(True)
    y = torch.nn.functional.silu(x)
    (d1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x, create_graph=True)
    (d3,) = torch.autograd.grad(d2.sum(), x, create_graph=True)
    (d4,) = torch.autograd.grad(d3.sum(), x)
    d1, d2, d3 = d1.detach(), d2.detach(), d3.detach()
    assert float(d1.max()) <= _DSILU_MAX and float(d1.min()) >= _DSILU_MIN
    assert abs(float(d1.max()) - _DSILU_MAX) < 1e-9 and abs(float(d1.min()) - _DSILU_MIN) < 1e-9
    x = x.detach()
    assert abs(float(x[d1.argmax()]) - _DSILU_ARGMAX) < 1e-3
    assert float(d2.max()) <= 0.5 and float(d2.min()) >= _DDSILU_MIN
    assert abs(float(x[d2.argmin()].abs()) - _DDSILU_ARGMIN) < 1e-3
    assert float(d3.abs().max()) <= _S3 and float(d4.abs().max()) <= _S4


# ----------------------------------------------------------------------------- enclosures
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_value_and_gradient_bounds_enclose_dense_evaluation(family, dim):
    e = make_energy(family, dim, seed=11 * dim)
    lo, hi = random_boxes(dim, 64, seed=dim)
    pts = points_in(lo, hi, 48, seed=dim).requires_grad_(True)
    v = e(pts.reshape(-1, dim)).reshape(pts.shape[:2])
    (g,) = torch.autograd.grad(v.sum(), pts)
    v = v.detach()
    for vlo, vhi in (e.interval_bounds(lo, hi), value_bounds(e, lo, hi)):
        assert bool((vlo[:, None] <= v).all() and (v <= vhi[:, None]).all())
    glo, ghi = gradient_bounds(e, lo, hi)
    assert bool((glo[:, None] <= g).all() and (g <= ghi[:, None]).all())
    # convergent: the enclosures shrink to the point values on small boxes (branch-and-bound
    # relies on it)
    c = (lo + hi) / 2
    scale = 1 + float(g.abs().max()) + float(v.abs().max())
    vl2, vh2 = value_bounds(e, c - 1e-6, c + 1e-6)
    gl2, gh2 = gradient_bounds(e, c - 1e-6, c + 1e-6)
    assert float((vh2 - vl2).max()) < 1e-4 * scale
    assert float((gh2 - gl2).max()) < 1e-3 * scale


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_mlp_taylor_models_enclose_dense_evaluation(dim):
    ea = make_energy("mlp", dim, seed=3)
    eb = perturbed(ea, seed=3, eps=0.02)
    pa, pb = _mlp_parts(ea), _mlp_parts(eb)
    lo, hi = random_boxes(dim, 64, seed=5, max_width=0.1)
    pts = points_in(lo, hi, 48, seed=6)
    with torch.no_grad():
        va = ea(pts.reshape(-1, dim)).reshape(pts.shape[:2])
        h = eb(pts.reshape(-1, dim)).reshape(pts.shape[:2]) - va
    tma, tmd = _mlp_taylor(pa, lo, hi, pb)
    for (L, H), vals in (
        (_tm_range(tma, lo, hi), va),
        (_tm_range(tmd, lo, hi), h),
        (_mlp_pair_intervals(pa, pb, lo, hi), h),
    ):
        assert bool((L[:, None] <= vals).all() and (vals <= H[:, None]).all())
    # the first-order form: V(u) in v0 + g (u - c) ± e with g in [gL, gH]
    v0, gL, gH, e = _tm_first_order(tma, lo, hi)
    c = (lo + hi) / 2
    t = pts - c[:, None]
    lin_hi = torch.maximum(gL[:, None] * t, gH[:, None] * t).sum(-1)
    lin_lo = torch.minimum(gL[:, None] * t, gH[:, None] * t).sum(-1)
    assert bool((va <= v0[:, None] + lin_hi + e[:, None]).all())
    assert bool((va >= v0[:, None] + lin_lo - e[:, None]).all())
    # second order: the enclosure exceeds h's range over the box corners (exact for the linear
    # part) by O(width^2): quartering the width cuts the excess by ~16 (at least 8 here)
    signs = torch.cartesian_prod(*([torch.tensor([-1.0, 1.0], dtype=F64)] * dim)).reshape(-1, dim)
    excess = []
    for half in (1e-3, 2.5e-4):
        L, H = _tm_range(_mlp_taylor(pa, c - half, c + half, pb)[1], c - half, c + half)
        corners = (c[:, None] + half * signs[None]).reshape(-1, dim)
        with torch.no_grad():
            hc = (eb(corners) - ea(corners)).reshape(c.shape[0], -1)
        excess.append((H - L) - (hc.amax(1) - hc.amin(1)))
    assert float(excess[0].min()) >= 0 and float(excess[1].min()) >= 0
    assert float(excess[0].max()) > 8 * float(excess[1].max())


# ----------------------------------------------------------------------------- properties
PAIR = st.tuples(
    st.sampled_from(["mlp", "legendre", "cosine", "spline", "quadratic", "mixture"]),
    st.sampled_from(["same", "nearby", "legendre", "mlp", "mixture"]),
    st.integers(0, 10_000),
    st.sampled_from([0.3, 1.0, 3.0]),
)


def _pair(dim, spec):
    fam, other, seed, scale = spec
    ea = make_energy(fam, dim, seed, scale)
    if other == "same":
        eb = make_energy(fam, dim, seed + 1, scale)
    elif other == "nearby":
        eb = perturbed(ea, seed, 0.01)
    else:
        eb = make_energy(other, dim, seed + 2, scale)
    return ea, eb


@pytest.mark.parametrize("dim,n_grid", [(1, 20_001), (2, 201)])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=PAIR)
def test_certified_oscillation_bounds_dense_grid(dim, n_grid, spec):
    ea, eb = _pair(dim, spec)
    U = dense_grid(dim, n_grid)
    with torch.no_grad():
        h = eb(U) - ea(U)
    res = oscillation_bounds(ea, eb, tol=0.2, time_limit=3.0, batch=512, n_starts=4)
    assert res.sup_upper >= float(h.max())
    assert res.inf_lower <= float(h.min())
    assert res.upper >= float(h.max() - h.min())
    assert res.lower <= res.upper
    # the lower end is attained: h takes those values at the reported points
    with torch.no_grad():
        hx = eb(torch.tensor([res.argmax, res.argmin], dtype=F64))
        hx = hx - ea(torch.tensor([res.argmax, res.argmin], dtype=F64))
    assert math.isclose(float(hx[0] - hx[1]), res.lower, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("dim", [1, 2])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=PAIR)
def test_quadrature_kl_never_exceeds_certified_bound(dim, spec):
    ea, eb = _pair(dim, spec)
    box = Box([-1.0] * dim, [2.0] * dim)  # any box: the certificate lives on the unit cube
    cert = kl_bound(
        EnergyModel(ea, box), EnergyModel(eb, box), tol=0.3, time_limit=3.0, batch=512, n_starts=4
    )
    assert cert.kl_ab is not None and cert.kl_ba is not None
    assert cert.kl_ab.value <= cert.kl_upper
    assert cert.kl_ba.value <= cert.kl_upper
    assert cert.holds
    assert cert.kl_upper == kl_from_osc(cert.osc.upper)


def test_kl_from_osc_is_hoeffding_and_linear_branch():
    assert kl_from_osc(2.0) == 0.5  # osc^2/8 below osc = 8
    assert kl_from_osc(8.0) == 8.0
    assert kl_from_osc(9.0) == 9.0
    assert kl_from_osc(math.inf) == math.inf


def test_budget_exhaustion_is_reported_and_bound_stays_sound():
    ea = make_energy("mlp", 2, seed=7, scale=3.0)
    eb = make_energy("mlp", 2, seed=8, scale=3.0)
    res = oscillation_bounds(ea, eb, tol=1e-6, max_boxes=1000, batch=256)
    assert not res.converged and "budget" in res.stop_reason
    U = dense_grid(2, 201)
    with torch.no_grad():
        h = eb(U) - ea(U)
    assert res.upper >= float(h.max() - h.min())


def test_float_error_allowance_covers_float32_evaluation():
    ea = MLPEnergy(2, hidden=(16, 16), n_fourier=8, seed=1)
    eb = perturbed(ea, 1, 1e-3)
    exact = oscillation_bounds(ea, eb, tol=0.1, time_limit=5.0)
    cover = oscillation_bounds(ea, eb, tol=0.5, time_limit=5.0, float_error=True)
    U = dense_grid(2, 201).float()
    with torch.no_grad():
        h32 = eb(U).double() - ea(U).double()
    assert cover.upper >= exact.lower
    assert cover.upper >= float(h32.max() - h32.min())


def test_kl_quadrature_matches_closed_form_exponential_tilt():
    """V = t u on [0,1]: log Z = log((1 - e^{-t})/t), E[u] = 1/t - 1/(e^t - 1)."""

    def lz(t):
        return math.log(-math.expm1(-t) / t)

    def mean(t):
        return 1 / t - 1 / math.expm1(t)

    s, t = 2.0, 5.0
    models = []
    for v in (s, t):
        e = LegendreEnergy(1, 1)
        with torch.no_grad():  # t u = t/2 + t/(2√3) · √3 (2u - 1)
            e.coef[1] = v / (2 * math.sqrt(3))
        models.append(EnergyModel(e, Box.unit(1)))
    exact = (t - s) * mean(s) + lz(t) - lz(s)
    est = kl_quadrature(*models)
    assert abs(est.value - exact) < 1e-12
    assert est.error < 1e-12
