"""ESS, MCSE and R-hat on chains with known answers (AR(1), i.i.d., shifted / scaled chains)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.signal import lfilter

from ebmfit.samplers import diagnostics as D

P_MIN = 1e-3


def ar1(rng: np.random.Generator, m: int, n: int, d: int, rho: float) -> np.ndarray:
    """m stationary AR(1) chains x_t = rho x_{t-1} + e_t, unit innovations; shape (m, n, d)."""
    e = rng.standard_normal((m, n, d))
    e[:, 0] /= np.sqrt(1 - rho**2)
    return lfilter([1.0], [1.0, -rho], e, axis=1)


def ar1_ess(m: int, n: int, rho: float) -> float:
    """Exact ESS of the pooled mean: mn / [1 + 2 Σ_k (1 - k/n) ρ^k] ≈ mn(1-ρ)/(1+ρ)."""
    k = np.arange(1, n)
    return m * n / (1 + 2 * np.sum((1 - k / n) * rho**k))


def test_autocovariance_matches_direct_sum():
    x = np.random.default_rng(0).standard_normal((3, 257, 2)).cumsum(axis=1)
    acov = D.autocovariance(x)
    xc = x - x.mean(axis=1, keepdims=True)
    n = x.shape[1]
    for t in [0, 1, 5, 100, 256]:
        direct = (xc[:, : n - t] * xc[:, t:]).sum(axis=1) / n
        np.testing.assert_allclose(acov[:, t], direct, rtol=1e-10, atol=1e-10)


def test_accepts_torch_and_2d_input():
    x = np.random.default_rng(1).standard_normal((4, 100))
    for f in (D.effective_sample_size, D.split_rhat, D.mcse_mean):
        a, b = f(x), f(torch.from_numpy(x)[:, :, None])
        assert a.shape == (1,) and isinstance(a, np.ndarray)
        np.testing.assert_allclose(a, b)
    with pytest.raises(ValueError, match="shape"):
        D.effective_sample_size(np.zeros((2, 3, 4, 5)))


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, -0.3])
def test_ess_of_ar1_chains(rho):
    """R = 50 independent replicates (as 50 coordinates) of 4 AR(1) chains of 4000 draws.

    The replicate mean of ESS/truth - 1 must be within 4 standard errors (from the replicate
    spread) plus sqrt(2/N): Geyer's initial-sequence truncation keeps positive noise pairs, an
    upward bias in τ of the order of one autocorrelation's standard error, O(N^{-1/2}).
    """
    m, n, reps = 4, 4000, 50
    x = ar1(np.random.default_rng(100 + int(10 * rho)), m, n, reps, rho)
    rel = D.effective_sample_size(x) / ar1_ess(m, n, rho) - 1
    tol = 4 * rel.std(ddof=1) / np.sqrt(reps) + np.sqrt(2 / (m * n))
    assert abs(rel.mean()) < tol, (rel.mean(), tol)
    if rho < 0:
        assert (D.effective_sample_size(x) > m * n).mean() > 0.9  # antithetic chains


def test_mcse_is_calibrated_on_ar1():
    """z = (mean - 0) / MCSE over 1000 replicates has variance 1 (chi-square interval)."""
    reps = 1000
    x = ar1(np.random.default_rng(7), 4, 2000, reps, 0.8)
    z = x.mean(axis=(0, 1)) / D.mcse_mean(x)
    lo, hi = stats.chi2.ppf([P_MIN / 2, 1 - P_MIN / 2], reps) / reps
    assert lo < np.mean(z**2) < hi


def test_rhat_of_iid_chains_follows_its_null_distribution():
    """For i.i.d. draws, split R-hat² = (n-1)/n + F/n with F ~ F(k-1, k(n-1)), k split chains."""
    m, n, d = 4, 1000, 200
    x = np.random.default_rng(2).standard_normal((m, n, d))
    k, h = 2 * m, n // 2
    f_lo, f_hi = stats.f.ppf([P_MIN / d, 1 - P_MIN / d], k - 1, k * (h - 1))  # Bonferroni
    r = D.split_rhat(x)
    assert (r > np.sqrt((h - 1) / h + f_lo / h)).all()
    assert (r < np.sqrt((h - 1) / h + f_hi / h)).all()
    assert (r < 1.01).all() and (D.split_rhat(x, rank_normalize=True) < 1.01).all()


def test_rhat_flags_unmixed_chains():
    m, n, d = 4, 1000, 20
    x = np.random.default_rng(3).standard_normal((m, n, d))
    shifted = x.copy()
    shifted[3] += 2.0  # one chain stuck elsewhere
    assert (D.split_rhat(shifted) > 1.1).all()
    assert (D.split_rhat(shifted, rank_normalize=True) > 1.1).all()
    scaled = x.copy()
    scaled[3] *= 4.0  # same mean, different spread: only the folded (tail) R-hat sees it
    assert (D.split_rhat(scaled) < 1.05).all()
    assert (D.split_rhat(scaled, rank_normalize=True) > 1.1).all()
    trend = x.copy()
    trend[0] += np.linspace(-3, 3, n)[:, None]  # non-stationary chain: splitting exposes it
    assert (D.split_rhat(trend) > 1.1).all()


def test_rank_normalize_gives_normal_scores():
    x = np.random.default_rng(4).exponential(size=(4, 500, 3)) ** 3  # heavy right tail
    z = D.rank_normalize(x)
    assert z.shape == x.shape
    np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-12)
    assert np.all(np.abs(z.reshape(-1, 3).std(0) - 1) < 0.01)
    order = np.argsort(x[:, :, 0], axis=None)
    assert np.all(np.diff(z[:, :, 0].ravel()[order]) > 0)


def reference_ess(x: np.ndarray) -> float:
    """Loop-by-loop port of Stan's / ArviZ's ESS for one coordinate, x of shape (m, n) (split)."""
    m, n = x.shape
    acov = np.array([[np.sum((c[: n - t] - c.mean()) * (c[t:] - c.mean())) / n for t in range(n)]
                     for c in x])  # fmt: skip
    mean_var = np.mean(acov[:, 0]) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n + (np.var(x.mean(axis=1), ddof=1) if m > 1 else 0.0)
    rho = np.zeros(n)
    rho_even, rho_odd = 1.0, 1.0 - (mean_var - np.mean(acov[:, 1])) / var_plus
    rho[0], rho[1] = rho_even, rho_odd
    t = 1
    while t < n - 3 and rho_even + rho_odd > 0.0:
        rho_even = 1.0 - (mean_var - np.mean(acov[:, t + 1])) / var_plus
        rho_odd = 1.0 - (mean_var - np.mean(acov[:, t + 2])) / var_plus
        if rho_even + rho_odd >= 0:
            rho[t + 1], rho[t + 2] = rho_even, rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0:
        rho[max_t + 1] = rho_even
    t = 1
    while t <= max_t - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2.0
        t += 2
    tau = -1.0 + 2.0 * np.sum(rho[: max_t + 1]) + np.sum(rho[max_t + 1 : max_t + 2])
    tau = max(tau, 1 / np.log10(m * n))
    return m * n / tau


@pytest.mark.parametrize("n_draws", [10, 13, 301])
@pytest.mark.parametrize("rho", [0.0, 0.6, 0.95, -0.5])
def test_ess_matches_loop_reference(rho, n_draws):
    x = ar1(np.random.default_rng(5), 3, n_draws, 2, rho)
    split = D.split_chains(x)
    expected = [reference_ess(split[:, :, j]) for j in range(2)]
    np.testing.assert_allclose(D.effective_sample_size(x), expected, rtol=1e-9)
