"""Numbers that must not be silently wrong: log Z of densities with features narrower than the
quadrature cells.

A tensor rule misses or double-counts the mass of a peak narrower than its panels, and its two
resolutions can agree on the wrong value (two tight far-apart clusters gave a density that
integrates to ≈ 2 or ≈ 0.3).  ``log_partition_quadrature`` checks itself against an adaptive
rule refined where the integrand is peaked; the contract tested here is that the reported
error bar *holds* against an independent high-order rule built around the peaks.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from ebmfit.energies import QuadraticEnergy, SplineEnergy
from ebmfit.partition import quadrature as quad
from ebmfit.partition.quadrature import (
    QuadratureWarning,
    gauss_legendre_1d,
    log_partition_quadrature,
)


def _spikes(d: int, centres, height: float, n_basis: int = 48) -> SplineEnergy:
    """A spline energy with deep narrow wells at the given basis indices (a fitted density on
    tight clusters looks like this: huge coefficients on a few basis functions)."""
    e = SplineEnergy(d, n_basis=n_basis)
    with torch.no_grad():
        e.coef.zero_()
        for c in centres:
            e.coef[tuple(c)] = -height
    return e


@torch.no_grad()
def _local_reference(energy, centres, half_width: float, cells: int = 100) -> float:
    """log Z by a fine Gauss–Legendre rule on small boxes around each well (the rest of the
    cube carries e^{-V} <= 1, added as its volume bound)."""
    h = 1.0 / (energy.n_basis - 3)
    parts = []
    for c in centres:
        axes, ws = [], []
        for j in c:
            peak = (j - 1) * h  # the cubic B-spline B_j peaks at knot_j + 2h
            x, w = gauss_legendre_1d(cells, 8)
            axes.append(peak - half_width + 2 * half_width * x)
            ws.append(2 * half_width * w)
        V = energy.grid_values(axes).to(torch.float64)
        logw = torch.zeros((), dtype=torch.float64)
        for w in ws:
            logw = (logw[..., None] + torch.log(w)).reshape(-1)
        parts.append(torch.logsumexp(logw - V, 0))
    return float(torch.logsumexp(torch.stack(parts), 0))


@pytest.mark.parametrize(
    ("d", "centres", "height"),
    [
        (1, [(17,), (40,)], 4000.0),
        (2, [(15, 30), (35, 10)], 3000.0),
        (2, [(20, 20), (21, 33)], 1500.0),
    ],
)
def test_error_bar_holds_for_narrow_wells(d, centres, height):
    e = _spikes(d, centres, height, n_basis={1: 48, 2: 48, 3: 20}[d])
    ref = _local_reference(e, centres, half_width=0.02, cells={1: 100, 2: 100, 3: 20}[d])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuadratureWarning)
        lz = log_partition_quadrature(e)
    assert abs(lz.value - ref) <= max(lz.stderr, 1e-9 * abs(ref)), (lz, ref)
    assert lz.stderr < 0.05  # and it is not honest by being vague


@pytest.mark.parametrize("d", [1, 2, 3])
def test_error_bar_holds_for_a_narrow_gaussian_bump(d):
    """V = ½ (u−m)ᵀ P (u−m) with sd 3e-4 at an off-grid point: Z = (2π)^{d/2} / √det P."""
    sd = 3e-4
    m = torch.tensor([0.3137, 0.6211, 0.4573][:d], dtype=torch.float64)
    e = QuadraticEnergy(d, mean=m, precision=torch.eye(d, dtype=torch.float64) / sd**2)
    exact = 0.5 * d * math.log(2 * math.pi) + d * math.log(sd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuadratureWarning)
        lz = log_partition_quadrature(e)
    assert abs(lz.value - exact) <= max(lz.stderr, 1e-9), (lz, exact)


def test_smooth_densities_keep_the_tensor_rule_and_its_error():
    e = SplineEnergy(2, n_basis=12)
    with torch.no_grad():
        e.coef.copy_(torch.randn(e.coef.shape, generator=torch.Generator().manual_seed(0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuadratureWarning)  # nothing to warn about
        lz = log_partition_quadrature(e)
    plain = log_partition_quadrature(e, check=False)
    assert lz.method == "gauss-legendre"
    assert lz.value == plain.value and lz.stderr == plain.stderr


def test_unresolved_features_warn_and_widen_the_error(monkeypatch):
    """With too small a budget the adaptive rule cannot resolve the wells: a warning says so
    and the error bar still covers the truth."""
    centres = [(15, 30), (35, 10)]
    e = _spikes(2, centres, 3000.0)
    ref = _local_reference(e, centres, half_width=0.02)
    monkeypatch.setitem(quad.ADAPTIVE_MAX_BOXES, 2, 1100)
    with pytest.warns(QuadratureWarning, match="only known to"):
        lz = log_partition_quadrature(e)
    assert abs(lz.value - ref) <= lz.stderr, (lz, ref)


def test_adaptive_rule_with_a_fitted_base_integrates_the_base():
    """Non-uniform base: the adaptive rule integrates e^{-V} p (V = 0 gives log Z = 0)."""
    from ebmfit.base import TruncatedGMMBase

    base = TruncatedGMMBase([1.0], [[0.4, 0.6]], [[0.01, 0.02]])
    e = SplineEnergy(2, n_basis=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuadratureWarning)
        lz = log_partition_quadrature(e, base)
    assert abs(lz.value) <= max(lz.stderr, 1e-8), lz


# --------------------------------------------------------------------------- model selection
def _bimodal(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return (np.where(rng.random(n) < 0.5, -3.0, 3.0) + 0.6 * rng.standard_t(4, n))[:, None]


def test_grid_search_with_the_data_derived_box_is_meaningful():
    """Held-out rows beyond their fold's box used to score -inf for every candidate (an
    arbitrary best_params_); censored at the box they give finite scores that rank a
    unimodal model (degree 2) below a bimodal one (degree 16)."""
    import numpy as np
    from sklearn.model_selection import GridSearchCV, KFold

    from ebmfit import Box, EnergyDensity
    from ebmfit._heldout import CensoredRowsWarning

    X = _bimodal(300)
    cv = KFold(3, shuffle=True, random_state=0)
    outside = 0
    for tr, te in cv.split(X):  # the precondition: some held-out rows leave their fold's box
        box = Box.from_data(X[tr], 0.05)
        outside += int(((X[te] < box.low[0]) | (X[te] > box.high[0])).sum())
    assert outside > 0
    est = EnergyDensity("legendre", base="uniform", random_state=0)
    gs = GridSearchCV(est, {"energy_params": [{"degree": 2}, {"degree": 16}]}, cv=cv)
    with pytest.warns(CensoredRowsWarning, match="outside the box derived from the training"):
        gs.fit(X)
    scores = gs.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all()
    assert gs.best_params_ == {"energy_params": {"degree": 16}}
    # censoring only changes `score`; `score_samples` is still the model's density (-inf out)
    lo = gs.best_estimator_.domain_.low[0]
    assert gs.best_estimator_.score_samples(np.array([[lo - 1.0]]))[0] == -np.inf


def test_censored_rows_are_scored_at_the_box_and_a_user_box_stays_minus_inf():
    import numpy as np

    from ebmfit import EnergyDensity

    X = _bimodal(200, seed=1)
    est = EnergyDensity("legendre", base="uniform", random_state=0).fit(X)
    lo, hi = est.domain_.low[0], est.domain_.high[0]
    T = np.array([[lo - 5.0], [0.0], [hi + 1.0]])
    with pytest.warns(UserWarning, match="2 of 3 row"):
        s = est.score(T)
    expected = est.score_samples(np.clip(T, lo, hi)).mean()
    assert s == pytest.approx(expected, rel=1e-12)
    user = EnergyDensity("legendre", base="uniform", low=-9.0, high=9.0, random_state=0).fit(X)
    assert user.score(np.array([[0.0], [9.5]])) == -np.inf
