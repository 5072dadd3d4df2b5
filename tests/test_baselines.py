"""Tests for the peer baselines: normalization over the cube, sampler/density agreement, fit.

Quadrature rules (tensor products of 1-D composite Gauss–Legendre rules on [0, 1]):

- ReflectedKDE with bandwidth h is a sum of Gaussians of std h restricted to the square; with
  panels of width <= h/3 and 8 nodes the rule's error is far below 1e-10, so the tolerance on
  the total mass is set by the tree tolerance ``rtol`` (1e-8 relative error per point).
- LogitGMM's u-density is g(logit u) / (u (1 - u)), which can be sharply peaked against a face
  when a component sits at large |z|. The rule is graded: geometric panels 0.05 * r^-k against
  each face down to ~1e-14 and uniform panels of width 0.05 inside. The tolerance 1e-6 is
  justified by ``test_logit_gmm_rule_converged``: the rule used (r = 4, 8 nodes) and a different
  one (r = 2, 6 nodes) agree to ~1e-10 per cell (1e-8 asserted), and the mass closer than 1e-14
  to a face is negligible.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from ebmfit.baselines import LogitGMM, ReflectedKDE
from ebmfit.datasets import load_target


def _composite(edges: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    t, w = np.polynomial.legendre.leggauss(order)
    mid, half = 0.5 * (edges[:-1] + edges[1:]), 0.5 * np.diff(edges)
    return (mid[:, None] + half[:, None] * t).ravel(), (half[:, None] * w).ravel()


def _uniform_rule(width: float, order: int = 8):
    return _composite(np.linspace(0.0, 1.0, round(1 / width) + 1), order)


def _graded_rule(ratio: float = 4.0, order: int = 8):
    geo = 0.05 * ratio ** -np.arange(math.ceil(math.log(0.05 / 1e-14) / math.log(ratio)) + 1)
    edges = np.unique(np.concatenate([[0.0, 1.0], geo, 1.0 - geo, np.linspace(0, 1, 21)]))
    return _composite(edges, order)


def _cell_masses(log_density, rule) -> np.ndarray:
    """Mass of each cell of the 10x10 grid of [0,1]^2 (the rules have breakpoints at k/10)."""
    x, w = rule
    X1, X2 = np.meshgrid(x, x, indexing="ij")
    dens = np.exp(log_density(np.stack([X1.ravel(), X2.ravel()], axis=1))).reshape(X1.shape)
    onehot = np.eye(10)[np.minimum(np.floor(x * 10).astype(int), 9)]
    return onehot.T @ (dens * w[:, None] * w[None, :]) @ onehot


def _chi2_pvalue(samples: np.ndarray, masses: np.ndarray) -> float:
    counts, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=10, range=[[0, 1], [0, 1]])
    exp = (samples.shape[0] * masses / masses.sum()).ravel()
    obs = counts.ravel()
    small = exp < 5
    o = np.append(obs[~small], obs[small].sum())
    e = np.append(exp[~small], exp[small].sum())
    keep = e > 0
    chi2 = float(np.sum((o[keep] - e[keep]) ** 2 / e[keep]))
    return float(stats.chi2.sf(chi2, df=keep.sum() - 1))


@pytest.fixture(scope="module")
def banana():
    t = load_target("banana")
    # banana has mass against the faces x1 = 0 and x1 = 1, which exercises the boundary handling
    return t, t.sample(800, random_state=0), t.sample(2000, random_state=1)


@pytest.fixture(scope="module")
def gmm(banana):
    _, X, _ = banana
    return LogitGMM(max_components=5, n_init=1, random_state=0).fit(X)


@pytest.fixture(scope="module")
def gmm_masses(gmm):
    return _cell_masses(gmm.score_samples, _graded_rule())


# ---------------------------------------------------------------------------- ReflectedKDE
@pytest.mark.parametrize("h", [0.08, 0.3])
def test_reflected_kde_mass(banana, h):
    _, X, _ = banana
    X = X[:100]
    rule = _uniform_rule(0.025 if h < 0.1 else 0.1)  # panels of width <= h/3
    raw = ReflectedKDE(h, normalize=False).fit(X)
    mass = _cell_masses(raw.score_samples, rule).sum()
    # the mass lost beyond one mirror is exactly m_h = exp(log_mass_), and bounded as documented
    assert abs(mass - math.exp(raw.log_mass_)) < 1e-7
    assert (1 - 2 * special.ndtr(-1 / h)) ** 2 - 1e-12 <= math.exp(raw.log_mass_) <= 1.0
    if h == 0.3:
        assert raw.log_mass_ < -1e-5  # the loss is visible at a large bandwidth ...
    norm = ReflectedKDE(h).fit(X)  # ... and corrected exactly: mass / m_h = 1
    assert abs(mass / math.exp(norm.log_mass_) - 1.0) < 1e-7
    np.testing.assert_allclose(
        norm.score_samples(X[:5]), raw.score_samples(X[:5]) - raw.log_mass_, rtol=1e-12
    )


def test_reflected_kde_augment_matches_product(banana):
    _, X, Xt = banana
    a = ReflectedKDE(0.03, method="augment", rtol=0.0).fit(X[:300])
    p = ReflectedKDE(0.03, method="product").fit(X[:300])
    assert a.method_ == "augment" and p.method_ == "product"
    np.testing.assert_allclose(a.score_samples(Xt[:200]), p.score_samples(Xt[:200]), atol=1e-10)


def test_reflected_kde_reflection_at_faces():
    # one point on the face x1 = 0: the reflected estimate is symmetric about that face,
    # so the density at the face equals twice the plain kernel (both images coincide)
    X = np.array([[0.0, 0.5]])
    k = ReflectedKDE(0.05, normalize=False).fit(X)
    plain = -math.log(2 * math.pi * 0.05**2)
    assert k.score_samples(X)[0] == pytest.approx(plain + math.log(2.0), abs=1e-7)
    assert np.isneginf(k.score_samples(np.array([[-0.1, 0.5], [0.5, 1.2]]))).all()


def test_reflected_kde_cv_and_fit(banana):
    target, X, Xt = banana
    k = ReflectedKDE(random_state=0).fit(X)
    grid = k.cv_results_["bandwidth"]
    assert grid.size == 12 and grid[0] < k.bandwidth_ < grid[-1]
    assert k.bandwidth_ == grid[np.argmax(k.cv_results_["mean_test_score"])]
    # better than uniform (log-density 0) by a wide margin: KL(q || kde) estimated on held-out
    kl = float(np.mean(target.log_prob(Xt) - k.score_samples(Xt)))
    kl_uniform = float(np.mean(target.log_prob(Xt)))
    assert k.score(Xt) > 0 and kl < 0.1 * kl_uniform, (kl, kl_uniform)
    again = ReflectedKDE(random_state=0).fit(X)
    assert again.bandwidth_ == k.bandwidth_


def test_reflected_kde_sample_matches_density(banana):
    _, X, _ = banana
    k = ReflectedKDE(0.1).fit(X[:100])
    s = k.sample(20_000, random_state=7)
    assert s.shape == (20_000, 2) and np.all((s >= 0) & (s <= 1))
    np.testing.assert_array_equal(k.sample(500, random_state=7), k.sample(500, random_state=7))
    masses = _cell_masses(k.score_samples, _uniform_rule(0.05))  # error << 1e-6 at h = 0.1
    assert _chi2_pvalue(s, masses) > 1e-3


# ---------------------------------------------------------------------------- LogitGMM
def test_logit_gmm_normalized(gmm_masses):
    assert abs(gmm_masses.sum() - 1.0) < 1e-6, gmm_masses.sum()


def test_logit_gmm_rule_converged(gmm, gmm_masses):
    other = _cell_masses(gmm.score_samples, _graded_rule(ratio=2.0, order=6))
    assert np.max(np.abs(gmm_masses - other)) < 1e-8


def test_logit_gmm_density_formula(gmm):
    u = np.array([[0.2, 0.7], [0.01, 0.5]])
    z = special.logit(u)
    expected = gmm.gmm_.score_samples(z) - np.sum(np.log(u * (1 - u)), axis=1)
    np.testing.assert_allclose(gmm.score_samples(u), expected, rtol=1e-12)
    edge = np.array([[0.0, 0.5], [0.5, 1.0], [1.5, 0.5]])
    assert np.isneginf(gmm.score_samples(edge)).all()
    with pytest.raises(ValueError, match="open cube"):
        LogitGMM().fit(edge)


def test_logit_gmm_bic_and_fit(banana, gmm):
    target, X, Xt = banana
    assert gmm.bic_.shape == (5,) and gmm.n_components_ == int(np.argmin(gmm.bic_)) + 1
    kl = float(np.mean(target.log_prob(Xt) - gmm.score_samples(Xt)))
    kl_uniform = float(np.mean(target.log_prob(Xt)))
    assert gmm.score(Xt) > 0 and kl < 0.1 * kl_uniform, (kl, kl_uniform)
    again = LogitGMM(max_components=5, n_init=1, random_state=0).fit(X)
    np.testing.assert_array_equal(again.score_samples(Xt[:20]), gmm.score_samples(Xt[:20]))


def test_logit_gmm_sample_matches_density(gmm, gmm_masses):
    s = gmm.sample(20_000, random_state=3)
    assert s.shape == (20_000, 2) and np.all((s > 0) & (s < 1))
    np.testing.assert_array_equal(s, gmm.sample(20_000, random_state=3))
    assert _chi2_pvalue(s, gmm_masses) > 1e-3


def test_reflected_kde_high_dimension_uses_product():
    from ebmfit.datasets import load_real

    X = load_real("wine")  # d = 13: 3^13 mirror images per point would not fit in memory
    k = ReflectedKDE(0.2).fit(X[:60])
    assert k.method_ == "product"
    lp = k.score_samples(X[60:80])
    assert lp.shape == (20,) and np.all(np.isfinite(lp))
    # exact normalization: the per-point masses factorize, so log m_h is a closed form
    per = special.ndtr((1 + X[:60]) / 0.2) - special.ndtr((X[:60] - 2) / 0.2)
    assert k.log_mass_ == pytest.approx(math.log(np.mean(np.prod(per, axis=1))), rel=1e-12)
