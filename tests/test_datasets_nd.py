"""Targets in 5 to 50 dimensions: exact normalizers, exact samplers, torch log-densities.

The checks are independent of the code under test where it matters:

* ``log_prob`` against a reference written with ``scipy.stats.truncnorm.logpdf`` (whose
  normalization is scipy's), to 1e-10;
* the normalizer by Monte Carlo: scrambled Sobol QMC of :math:`\\int q` at d = 5, and at every d
  importance sampling :math:`\\mathbb E_r[q/r] = 1` from a wider proposal r (each component's
  scales × 1.2, normalized and sampled by scipy), within 4 SE;
* the sampler against the density with the exact **Rosenblatt transform** of the mixture,
  :math:`F(x_i \\mid x_{<i}) = \\sum_c \\pi_c(x_{<i})\\,F_c(x_i \\mid x_{<i})` with posterior
  component weights :math:`\\pi_c \\propto w_c q_c(x_{<i})` (all from scipy): for exact samples
  every coordinate of the transform is U(0, 1); KS per coordinate, Bonferroni-corrected.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats
from scipy.stats import qmc

from ebmfit.datasets import (
    TARGETS,
    TARGETS_ND,
    TruncatedARMixture,
    TruncatedProductMixture,
    load_target,
)

ALPHA = 1e-3


@pytest.fixture(scope="module", params=TARGETS_ND)
def target(request):
    return load_target(request.param)


# ----------------------------------------------------------------------------- references
def _cond_column(t, x: np.ndarray, i: int, scale_mult: float = 1.0):
    """Per component c: (w_c, loc, scale) of x_i | x_{<i}, loc and scale of shape (n,)."""
    n = x.shape[0]
    if isinstance(t, TruncatedProductMixture):
        return [
            (w, np.full(n, m), np.full(n, s * scale_mult))
            for w, m, s in zip(t.weights, t.means[:, i], t.stds[:, i], strict=True)
        ]
    out = []
    for c, (w, mu, rho, s) in enumerate(t.components):
        if i == 0:
            out.append((w, np.full(n, mu), np.full(n, t.s0[c] * scale_mult)))
        else:
            out.append((w, mu + rho * (x[:, i - 1] - mu), np.full(n, s * scale_mult)))
    return out


def _conditionals(t, x: np.ndarray, scale_mult: float = 1.0):
    """Per component c: truncated-normal (w, a, b, loc, scale) of every x_i | x_{<i}, (n, d)."""
    cols = [_cond_column(t, x, i, scale_mult) for i in range(t.dim)]
    out = []
    for c in range(len(cols[0])):
        loc = np.stack([col[c][1] for col in cols], 1)
        sc = np.stack([col[c][2] for col in cols], 1)
        out.append((cols[0][c][0], -loc / sc, (1 - loc) / sc, loc, sc))
    return out


def _ref_log_prob(t, x: np.ndarray, scale_mult: float = 1.0) -> np.ndarray:
    """log-density from scipy's truncnorm (optionally with every scale multiplied)."""
    comps = [
        math.log(w) + stats.truncnorm.logpdf(x, a, b, loc=loc, scale=sc).sum(1)
        for w, a, b, loc, sc in _conditionals(t, x, scale_mult)
    ]
    return special.logsumexp(np.stack(comps, 1), axis=1)


def _ref_sample(t, n: int, rng: np.random.Generator, scale_mult: float) -> np.ndarray:
    """Exact draws of the same family with every scale multiplied (sequential, via scipy)."""
    x = np.zeros((n, t.dim))
    weights = np.array([w for w, *_ in _cond_column(t, x, 0)])
    comp = rng.choice(len(weights), size=n, p=weights)
    rows = np.arange(n)
    for i in range(t.dim):  # x_i | x_{<i}: the columns it depends on are drawn already
        col = _cond_column(t, x, i, scale_mult)
        loc = np.stack([c[1] for c in col], 1)[rows, comp]
        sc = np.stack([c[2] for c in col], 1)[rows, comp]
        x[:, i] = stats.truncnorm.rvs(
            -loc / sc, (1 - loc) / sc, loc=loc, scale=sc, random_state=rng
        )
    return x


def _rosenblatt(t, x: np.ndarray) -> np.ndarray:
    """Exact Rosenblatt transform of the mixture, shape (n, d); U(0,1)^d under exact samples."""
    cond = _conditionals(t, x)
    logw = np.stack([np.full(x.shape[0], math.log(c[0])) for c in cond], 1)  # (n, C)
    u = np.empty_like(x)
    for i in range(t.dim):
        post = special.softmax(logw, axis=1)
        cdf = np.stack(
            [stats.truncnorm.cdf(x[:, i], a[:, i], b[:, i], loc=lc[:, i], scale=sc[:, i])
             for _, a, b, lc, sc in cond], 1,
        )  # fmt: skip
        u[:, i] = (post * cdf).sum(1)
        logw = logw + np.stack(
            [stats.truncnorm.logpdf(x[:, i], a[:, i], b[:, i], loc=lc[:, i], scale=sc[:, i])
             for _, a, b, lc, sc in cond], 1,
        )  # fmt: skip
    return u


# ----------------------------------------------------------------------------- registry
def test_registry():
    assert {"mixture_5d", "mixture_10d", "mixture_20d", "mixture_50d", "correlated_10d"} <= set(
        TARGETS_ND
    )
    assert not set(TARGETS) & set(TARGETS_ND)
    assert all(load_target(n).dim == 2 for n in TARGETS)  # the 2-D API is unchanged
    for n in TARGETS_ND:
        t = load_target(n)
        assert t.name == n and t.dim == int(n.split("_")[1][:-1]) and t.smooth
        assert t.normalizer_rel_error == 0.0 and isinstance(t.description, str)
    with pytest.raises(ValueError, match="unknown target"):
        load_target("mixture_7d")


def test_parameters_are_pinned():
    """The design is a formula (no RNG stream), so these numbers never change."""
    t = load_target("mixture_5d")
    assert t.means[0, 0] == pytest.approx(0.05 + 0.9 * (math.sqrt(2) % 1.0), abs=1e-15)
    assert t.stds[0, 1] == pytest.approx(0.04 + 0.11 * ((5 * math.sqrt(3)) % 1.0), abs=1e-15)
    assert t.weights.sum() == pytest.approx(1.0, abs=1e-15)
    assert load_target("correlated_10d").components[0] == (0.6, 0.35, 0.9, 0.06)


# ----------------------------------------------------------------------------- densities
def test_log_prob_matches_scipy_reference(target):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random((300, target.dim)), target.sample(300, rng)])
    x[0] = 0.0  # a corner: truncation is exact up to the faces
    x[1] = 1.0
    assert np.allclose(target.log_prob(x), _ref_log_prob(target, x), rtol=0, atol=1e-10)
    out = x[:3].copy()
    out[:, 0] = [-0.1, 1.1, np.nan]
    lp = target.log_prob(out)
    assert lp[0] == -np.inf and lp[1] == -np.inf and np.isnan(lp[2])
    assert np.all(target.log_prob(x) <= target.log_prob_bound)


def test_torch_log_prob_and_energy(target):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.random((200, target.dim)), np.zeros((1, target.dim)),
                        np.ones((1, target.dim))])  # fmt: skip
    xt = torch.tensor(x, requires_grad=True)
    lp = target.torch_log_prob(xt)
    assert lp.dtype == torch.float64 and lp.shape == (x.shape[0],)
    assert np.allclose(lp.detach().numpy(), target.log_prob(x), rtol=0, atol=1e-10)
    (g,) = torch.autograd.grad(lp.sum(), xt)
    assert torch.isfinite(g).all()
    # central differences of the numpy log-density along coordinate 0
    h = 1e-6
    xp, xm = x[:5].copy(), x[:5].copy()
    xp[:, 0] += h
    xm[:, 0] -= h
    fd = (target.log_prob(xp) - target.log_prob(xm)) / (2 * h)
    assert np.allclose(g[:5, 0].numpy(), fd, rtol=1e-5, atol=1e-5)
    e = target.energy()
    assert e.dim == target.dim
    assert torch.allclose(e(xt.detach()), -lp.detach())


# ----------------------------------------------------------------------------- normalizers
def test_normalizer_by_qmc():
    """∫ q over [0,1]^5 by 16 scrambled Sobol sets of 2^13 points: 1 within 4 SE.

    (Plain QMC only works at d = 5 for the mixture; the correlated targets are sharper, and every
    target is checked by importance sampling below.)"""
    t = load_target("mixture_5d")
    rng = np.random.default_rng(2)
    means = [
        np.exp(t.log_prob(qmc.Sobol(5, scramble=True, seed=rng).random_base2(13))).mean()
        for _ in range(16)
    ]
    est, se = np.mean(means), np.std(means, ddof=1) / 4
    assert abs(est - 1.0) <= 4 * se and se < 0.05


def test_normalizer_by_importance_sampling(target):
    """E_r[q/r] = 1 with r the same family with scales × 1.1 (scipy-normalized and sampled).

    Per coordinate E_r[(q/r)^2] is about 1.015 for one Gaussian factor, so the variance stays
    small even at d = 50."""
    rng = np.random.default_rng(3)
    n = 4000
    x = _ref_sample(target, n, rng, 1.1)
    w = np.exp(target.log_prob(x) - _ref_log_prob(target, x, 1.1))
    se = w.std(ddof=1) / math.sqrt(n)
    assert abs(w.mean() - 1.0) <= 4 * se and se < 0.05


# ----------------------------------------------------------------------------- samplers
def test_samples_in_cube_and_reproducible(target):
    x = target.sample(500, random_state=4)
    assert x.shape == (500, target.dim) and x.dtype == np.float64
    assert np.all((x >= 0) & (x <= 1))
    assert np.array_equal(x, target.sample(500, random_state=4))
    assert target.sample(0, random_state=4).shape == (0, target.dim)


def test_sampler_matches_density_rosenblatt(target):
    x = target.sample(1500, random_state=5)
    u = _rosenblatt(target, x)
    p = np.array([stats.kstest(u[:, i], "uniform").pvalue for i in range(target.dim)])
    assert p.min() > ALPHA / target.dim


def test_mixture_marginals_ks():
    t = load_target("mixture_10d")
    x = t.sample(3000, random_state=6)
    p = [stats.kstest(x[:, i], lambda s, i=i: t.marginal_cdf(i, s)).pvalue for i in range(t.dim)]
    assert min(p) > ALPHA / t.dim


def test_ar_conditional_cdf_matches_reference():
    t = load_target("correlated_5d")
    assert isinstance(t, TruncatedARMixture)
    x = t.sample(50, random_state=7)
    for c, (_, a, b, loc, sc) in enumerate(_conditionals(t, x)):
        ref = stats.truncnorm.cdf(x, a, b, loc=loc, scale=sc)
        assert np.allclose(t.conditional_cdf(x, c), ref, atol=1e-12)
