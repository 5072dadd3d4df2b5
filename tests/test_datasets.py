"""Contract tests for the built-in targets and the real-data loaders.

Quadrature reference: a composite tensor Gauss–Legendre rule whose panel edges contain every
multiple of 0.1 (the histogram cells) and of 0.25 (the checkerboard cells), each interval split
into panels of width <= 0.025 with 12 nodes. On the checkerboard the integrand is constant on
every panel, so the rule is exact. For the smooth targets the narrowest feature has std 0.025
(one panel width); a 12-point rule on a Gaussian spanning one standard deviation has error far
below 1e-12, which ``test_reference_rule_converged`` confirms by comparing with a rule of
higher order (observed differences ~1e-16). The normalization tolerance below, 1e-10, is
therefore far above the quadrature error of this rule and far below any error that matters;
it checks the targets' own normalizers, which are computed independently (closed forms, or
1-D reductions by adaptive quadrature, see ``ebmfit.datasets``).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from ebmfit.datasets import REAL_DATASETS, TARGETS, load_real, load_target, real_feature_names

HIST_BINS = 10
N_CHI2 = 20_000


def _rule(max_width: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """1-D composite Gauss–Legendre rule on [0, 1] with breakpoints at k/10 and k/4."""
    brk = np.unique(np.round(np.concatenate([np.linspace(0, 1, 11), np.linspace(0, 1, 5)]), 12))
    t, w = np.polynomial.legendre.leggauss(order)
    nodes, weights = [], []
    for a, b in itertools.pairwise(brk):
        k = math.ceil((b - a) / max_width - 1e-9)
        e = np.linspace(a, b, k + 1)
        mid, half = 0.5 * (e[:-1] + e[1:]), 0.5 * np.diff(e)
        nodes.append((mid[:, None] + half[:, None] * t).ravel())
        weights.append((half[:, None] * w).ravel())
    return np.concatenate(nodes), np.concatenate(weights)


def _cell_masses(target, max_width: float = 0.025, order: int = 12) -> np.ndarray:
    """Probability of each of the 10x10 histogram cells, shape (10, 10), by the rule above."""
    x, w = _rule(max_width, order)
    # Nodes are interior to panels, and panel edges include every k/10, so floor is exact.
    cell = np.floor(x * HIST_BINS).astype(int)
    X1, X2 = np.meshgrid(x, x, indexing="ij")
    dens = target.prob(np.stack([X1.ravel(), X2.ravel()], axis=1)).reshape(X1.shape)
    ww = dens * w[:, None] * w[None, :]
    onehot = np.eye(HIST_BINS)[cell]  # (n_nodes, 10)
    return onehot.T @ ww @ onehot


@pytest.fixture(scope="module", params=TARGETS)
def target(request):
    return load_target(request.param)


@pytest.fixture(scope="module")
def masses(target):
    return _cell_masses(target)


def test_registry():
    assert len(TARGETS) >= 6
    for name in (
        "gaussian_mixture",
        "rings",
        "banana",
        "correlated_gaussian",
        "checkerboard",
        "two_moons",
    ):
        assert name in TARGETS
        t = load_target(name)
        assert t.name == name and t.dim == 2 and isinstance(t.description, str)
    assert load_target("checkerboard").smooth is False
    assert all(load_target(n).smooth for n in TARGETS if n != "checkerboard")
    with pytest.raises(ValueError, match="unknown target"):
        load_target("nope")


def test_normalized(target, masses):
    total = masses.sum()
    # see the module docstring: the rule is exact for the checkerboard and ~1e-12 otherwise
    assert abs(total - 1.0) < 1e-10, total
    assert target.normalizer_rel_error < 1e-9


def test_checkerboard_exact_cells():
    t = load_target("checkerboard")
    centers = (np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1) + 0.5) / 4
    lp = t.log_prob(centers.reshape(-1, 2)).reshape(4, 4)
    black = (np.add.outer(np.arange(4), np.arange(4)) % 2) == 0
    assert np.all(lp[black] == math.log(2.0)) and np.all(np.isneginf(lp[~black]))
    assert np.exp(lp[black]).sum() / 16 == 1.0  # per-cell integral, exact
    assert t.log_prob(np.array([[1.0, 1.0], [0.0, 0.0]])).tolist() == [math.log(2.0)] * 2


def test_reference_rule_converged():
    # The 1e-6 tolerance rests on the reference rule being converged: check against a finer one.
    for name in ("gaussian_mixture", "rings"):
        t = load_target(name)
        a = _cell_masses(t)
        b = _cell_masses(t, max_width=0.025, order=16)
        assert np.max(np.abs(a - b)) < 1e-12
        assert abs(a.sum() - b.sum()) < 1e-12


def test_log_prob_contract(target):
    rng = np.random.default_rng(1)
    x = rng.random((50, 2))
    lp = target.log_prob(x)
    assert lp.shape == (50,) and lp.dtype == np.float64
    assert np.all(lp <= target.log_prob_bound + 1e-12)
    out = np.array([[-0.01, 0.5], [0.5, 1.01], [2.0, 2.0], [np.nan, 0.5]])
    lo = target.log_prob(out)
    assert np.all(np.isneginf(lo[:3])) and np.isnan(lo[3])
    with pytest.raises(ValueError):
        target.log_prob(np.zeros((3, 3)))
    if target.smooth:
        assert np.all(np.isfinite(lp))


def test_bound_on_fine_grid(target):
    # Not a proof (the bounds are analytic, see the docstrings) but catches a wrong formula.
    g = np.linspace(0, 1, 401)
    X = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    assert np.max(target.log_prob(X)) <= target.log_prob_bound + 1e-12


def test_samples_inside_and_reproducible(target):
    a = target.sample(500, random_state=3)
    b = target.sample(500, random_state=3)
    c = target.sample(500, random_state=4)
    assert a.shape == (500, 2) and a.dtype == np.float64
    assert np.all((a >= 0) & (a <= 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(target.sample(10, g1), target.sample(10, g2))
    assert target.sample(0, 0).shape == (0, 2)
    assert np.all(target.log_prob(a) > -np.inf)  # never a sample where the density is zero


def test_sampler_matches_density(target, masses):
    """Chi-square goodness of fit on the 10x10 cell histogram, expected counts by quadrature."""
    x = target.sample(N_CHI2, random_state=12345)
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=HIST_BINS, range=[[0, 1], [0, 1]])
    expected = N_CHI2 * masses / masses.sum()
    obs, exp = counts.ravel(), expected.ravel()
    zero = exp == 0.0
    assert zero.any() == (not target.smooth)  # only the checkerboard has empty cells
    assert obs[zero].sum() == 0
    small = (exp < 5) & ~zero  # pool sparse cells into one bin (standard validity rule)
    o = np.append(obs[~small & ~zero], obs[small].sum())
    e = np.append(exp[~small & ~zero], exp[small].sum())
    if e[-1] == 0:
        o, e = o[:-1], e[:-1]
    chi2 = float(np.sum((o - e) ** 2 / e))
    p = stats.chi2.sf(chi2, df=len(e) - 1)
    assert p > 1e-3, (target.name, chi2, len(e), p)


def test_correlated_gaussian_box_probability():
    t = load_target("correlated_gaussian")
    ref = stats.multivariate_normal(t.mean, t.cov).cdf([1.0, 1.0], lower_limit=[0.0, 0.0])
    assert abs(t.box_probability - ref) < 1e-5  # Genz's algorithm is accurate to ~1e-6


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_real_loaders(name):
    X = load_real(name)
    expected = {"iris": (150, 4), "wine": (178, 13), "breast_cancer": (569, 30)}[name]
    assert X.shape == expected and X.dtype == np.float64
    assert np.all(np.isfinite(X)) and np.all((X > 0) & (X < 1))
    np.testing.assert_allclose(X.min(axis=0), 0.05)
    np.testing.assert_allclose(X.max(axis=0), 0.95)
    X2 = load_real(name, n_features=2)
    np.testing.assert_array_equal(X2, X[:, :2])
    assert len(real_feature_names(name)) == X.shape[1]
    assert len(real_feature_names(name, n_features=2)) == 2
    with pytest.raises(ValueError):
        load_real(name, n_features=0)


def test_real_unknown():
    with pytest.raises(ValueError, match="unknown real data set"):
        load_real("mnist")


def test_rejection_sampler_refuses_a_wrong_bound():
    from ebmfit.datasets import _rejection_from_uniform

    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError, match="bound violated"):
        # log q~ = log 2 somewhere but the claimed bound is log 1
        _rejection_from_uniform(lambda x: np.log(2 * x[:, 0]), 0.0, 0.5, 2, 100, rng)
