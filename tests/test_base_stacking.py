"""Stacked density estimation (ebmfit.base.stacking) and the stacked logit-GMM base: the
weights against a closed-form MLE and a slow EM reference, invariants (hypothesis), and the
stacked base exact on the cube (quadrature, sampler KS, save/load, refit)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import integrate, special, stats

from ebmfit.base import LogitGMMBase, base_from_dict
from ebmfit.base.stacking import stack_loglik, stack_or_select, stack_weights


def _em_reference(R: np.ndarray, iters: int = 20000) -> np.ndarray:
    """Plain EM on the weights, alpha_j <- mean_i r_ij, run long (the slow reference)."""
    a = np.full(R.shape[1], 1.0 / R.shape[1])
    for _ in range(iters):
        with np.errstate(divide="ignore"):
            lw = R + np.log(a)
        a = np.exp(lw - special.logsumexp(lw, axis=1, keepdims=True)).mean(0)
    return a


def test_weights_of_two_known_densities_match_the_closed_form_mle():
    """Rows from 0.3 N(-1, 1) + 0.7 N(2, 0.5²) with the two true densities as candidates: the
    stacking weight is the MLE of the mixing proportion, within 4 SE of the truth (SE from
    the Fisher information, I = E[((q1 - q2) / p)²])."""
    rng = np.random.default_rng(0)
    n = 4000
    first = rng.random(n) < 0.3
    x = np.where(first, rng.normal(-1, 1, n), rng.normal(2, 0.5, n))
    q1, q2 = stats.norm(-1, 1).pdf(x), stats.norm(2, 0.5).pdf(x)
    a = stack_weights(np.log(np.stack([q1, q2], 1)))
    p = 0.3 * q1 + 0.7 * q2
    se = 1.0 / math.sqrt(n * np.mean(((q1 - q2) / p) ** 2))
    assert abs(a[0] - 0.3) < 4 * se
    assert a.sum() == pytest.approx(1.0, abs=1e-12)


def test_weights_reach_the_optimum_of_a_slow_em_reference():
    rng = np.random.default_rng(1)
    R = rng.normal(size=(300, 6)) + np.array([0.0, 0.3, -0.2, 0.1, 0.25, -1.0])
    ours = stack_loglik(R, stack_weights(R)).mean()
    ref = stack_loglik(R, _em_reference(R)).mean()
    assert ours >= ref - 1e-6


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 5)), elements=st.floats(-30, 5))
)
def test_weights_are_on_the_simplex_and_never_below_the_best_candidate(R):
    a = stack_weights(R)
    assert np.all(a >= 0) and a.sum() == pytest.approx(1.0, abs=1e-9)
    best = R.mean(axis=0).max()
    assert stack_loglik(R, a).mean() >= best - 1e-6 * (1 + abs(best))


def test_a_candidate_that_fails_a_row_gets_no_weight():
    R = np.array([[0.0, 1.0], [0.0, -np.inf], [0.0, 2.0]])
    np.testing.assert_array_equal(stack_weights(R), [1.0, 0.0])
    with pytest.raises(ValueError, match="non-finite"):
        stack_weights(np.full((3, 2), -np.inf))
    with pytest.raises(ValueError, match="shape"):
        stack_weights(np.zeros(3))


def test_stack_or_select_keeps_the_single_candidate_when_stacking_cannot_help():
    """Three candidates, one the true density of the rows and two far worse: the nested
    cross-validation finds no gain and keeps the one-hot selection."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=500)
    R = np.stack(
        [stats.norm(0, 1).logpdf(x), stats.norm(3, 1).logpdf(x), stats.norm(0, 5).logpdf(x)], 1
    )
    out = stack_or_select(R, seed=0)
    if out["stack"]:  # a gain by noise must be tiny and the true density dominant
        assert out["gain"] < 4 * out["gain_se"] and out["weights"][0] > 0.9
    else:
        np.testing.assert_array_equal(out["weights"], [1.0, 0.0, 0.0])


def test_stack_or_select_stacks_two_halves_of_a_mixture():
    """Rows from an equal mixture, each candidate one of its components: stacking is far
    better than either (log 2 ≈ 0.69 nats/row and more), and the nested CV sees it."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-3, 1, 200), rng.normal(3, 1, 200)])
    R = np.stack([stats.norm(-3, 1).logpdf(x), stats.norm(3, 1).logpdf(x)], 1)
    out = stack_or_select(R, seed=0)
    assert out["stack"] and out["gain"] > 4 * out["gain_se"]
    np.testing.assert_allclose(out["weights"], [0.5, 0.5], atol=0.1)


def _peaked_1d(n=150, seed=0):
    """expit of Laplace rows: a cusp no small Gaussian mixture in logit coordinates fits, so
    the search's configurations are worth stacking (nested-CV gain 0.034 ± 0.011 here)."""
    rng = np.random.default_rng(seed)
    return special.expit(rng.laplace(0.0, 0.7, n))[:, None]


@pytest.fixture(scope="module")
def stacked_base():
    U = _peaked_1d()
    base = LogitGMMBase.fit(U[:120], U[120:], random_state=0)
    assert "stack" in base.selected, "the fixture must exercise the stacked path"
    return base, U


def test_the_stack_is_recorded_and_its_weights_are_its_mixture(stacked_base):
    base, _ = stacked_base
    stack = base.selected["stack"]
    members = stack["members"]
    assert len(members) >= 2 and sum(m["weight"] for m in members) == pytest.approx(1.0)
    assert stack["gain"] > 0
    assert base.n_components == sum(m["n_components"] for m in members)
    assert base.weights.sum() == pytest.approx(1.0 - base.uniform_weight)
    assert [r for r in base.fit_info if "stack" in r] == [
        {"stack": True, "gain": stack["gain"], "se": stack["gain_se"]}
    ]


def test_the_stacked_base_is_normalized_by_quadrature(stacked_base):
    base, _ = stacked_base

    def f(u):
        return float(torch.exp(base.log_prob(torch.tensor([[u]], dtype=torch.float64))))

    total, err = integrate.quad(f, 0.0, 1.0, points=[0.3, 0.5, 0.7], limit=500)
    assert abs(total - 1.0) <= max(4 * err, 1e-8)


def test_the_stacked_base_sampler_matches_its_density(stacked_base):
    """KS of 4 000 exact draws against the CDF of the density by quadrature."""
    base, _ = stacked_base
    g = torch.Generator().manual_seed(0)
    draws = base.sample(4000, generator=g).numpy().ravel()
    grid = np.concatenate([[0.0], np.sort(draws), [1.0]])
    dens = torch.exp(base.log_prob(torch.as_tensor(np.linspace(0, 1, 200001)[:, None]))).numpy()
    cdf_grid = integrate.cumulative_trapezoid(dens, dx=1 / 200000, initial=0.0)
    cdf = np.interp(grid[1:-1], np.linspace(0, 1, 200001), cdf_grid / cdf_grid[-1])
    ks = np.max(np.maximum(np.arange(1, 4001) / 4000 - cdf, cdf - np.arange(4000) / 4000))
    assert stats.kstwo.sf(ks, 4000) > 1e-3


def test_the_stacked_base_round_trips_and_refits_every_member(stacked_base):
    base, U = stacked_base
    again = base_from_dict(base.to_dict(), base.tensors())
    Ut = torch.as_tensor(U)
    np.testing.assert_allclose(again.log_prob(Ut).numpy(), base.log_prob(Ut).numpy(), rtol=1e-12)
    refit = base.refit(U, random_state=0)
    assert refit.n_components == base.n_components
    assert refit.selected["refit_rows"] == len(U)
    per_member = [m["weight"] for m in base.selected["stack"]["members"]]
    sizes = [m["n_components"] for m in base.selected["stack"]["members"]]
    blocks = np.split(refit.weights, np.cumsum(sizes)[:-1])
    np.testing.assert_allclose(
        [b.sum() for b in blocks], np.array(per_member) * (1 - refit.uniform_weight), rtol=1e-12
    )


def test_stacked_false_keeps_the_single_best_configuration():
    U = _peaked_1d()
    base = LogitGMMBase.fit(U[:120], U[120:], random_state=0, stacked=False)
    assert "stack" not in base.selected
    assert base.n_components == base.selected["n_components"]
