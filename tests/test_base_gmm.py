"""TruncatedGMMBase: an exactly normalized, exactly sampled base measure fitted to data."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.stats import qmc

from ebmfit import Box, EnergyModel
from ebmfit.base import TruncatedGMMBase, Uniform, base_from_dict
from ebmfit.energies import MLPEnergy, QuadraticEnergy
from ebmfit.energies.base import tensor_grid
from ebmfit.io import load_model, save_model
from ebmfit.partition import gauss_legendre_1d
from ebmfit.samplers import mcse_mean


def _base(dim=2, uniform_weight=0.1):
    """Three components, one centred outside the cube's bulk and one almost at a face."""
    g = np.random.default_rng(dim)
    means = np.vstack([np.full(dim, 0.3), np.full(dim, 0.97), g.uniform(0.2, 0.8, dim)])
    stds = np.vstack([np.full(dim, 0.1), np.full(dim, 0.05), g.uniform(0.04, 0.3, dim)])
    return TruncatedGMMBase([0.5, 0.2, 0.3], means, stds, uniform_weight=uniform_weight)


def _marginal_cdf(base, j, t):
    """Exact CDF of coordinate j of the base (uniform part + truncated normals)."""
    m, s = base.means[:, j], base.stds[:, j]
    c = stats.truncnorm.cdf(np.asarray(t)[:, None], -m / s, (1 - m) / s, loc=m, scale=s)
    return base.uniform_weight * np.asarray(t) + c @ base.weights


def test_integrates_to_one_in_2d_by_quadrature():
    b = _base(2)
    ax, w = gauss_legendre_1d(96, 8)
    pts = tensor_grid([ax, ax])
    integral = float(((w[:, None] * w[None, :]).reshape(-1) * b.log_prob(pts).exp()).sum())
    assert integral == pytest.approx(1.0, abs=1e-9)


def test_integrates_to_one_in_5d_by_qmc_within_4_se():
    b = _base(5)
    reps = []
    for r in range(16):
        u = torch.as_tensor(qmc.Sobol(5, scramble=True, seed=r).random_base2(14))
        reps.append(float(b.log_prob(u).exp().mean()))
    reps = np.asarray(reps)
    se = reps.std(ddof=1) / math.sqrt(reps.size)
    assert abs(reps.mean() - 1.0) < 4 * se + 1e-12


def test_log_prob_is_minus_inf_outside_and_shapes():
    b = _base(3)
    u = torch.tensor([[0.5, 0.5, 0.5], [1.2, 0.5, 0.5], [0.5, -0.1, 0.5]], dtype=torch.float64)
    lp = b.log_prob(u)
    assert lp.shape == (3,) and math.isfinite(float(lp[0])) and torch.isinf(lp[1:]).all()


def test_sampler_matches_marginals_ks_and_joint_chi_square():
    b = _base(2)
    x = b.sample(20000, generator=torch.Generator().manual_seed(0)).numpy()
    assert x.shape == (20000, 2) and ((x >= 0) & (x <= 1)).all()
    for j in range(2):
        assert stats.kstest(x[:, j], lambda t, j=j: _marginal_cdf(b, j, t)).pvalue > 1e-3
    # joint: 8×8 cells, exact cell probabilities from products of Φ differences
    edges = np.linspace(0, 1, 9)
    cdf = [_component_cdfs(b, j, edges) for j in range(2)]  # (K+1, 9) each
    cell = np.einsum("ka,kb->kab", np.diff(cdf[0], axis=1), np.diff(cdf[1], axis=1))
    probs = np.einsum("k,kab->ab", np.append(b.weights, b.uniform_weight), cell).ravel()
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges, edges])
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    assert stats.chisquare(counts.ravel(), probs * x.shape[0]).pvalue > 1e-3


def _component_cdfs(b, j, t):
    m, s = b.means[:, j], b.stds[:, j]
    c = stats.truncnorm.cdf(
        t[None, :], (-m / s)[:, None], ((1 - m) / s)[:, None], m[:, None], s[:, None]
    )
    return np.vstack([c, t[None, :]])  # last row: the uniform component


def test_sampler_is_accurate_far_in_a_tail():
    """A component whose mass in the cube lies 8-9 standard deviations out: still exact."""
    b = TruncatedGMMBase([1.0], [[-0.8]], [[0.1]])  # the cube is [8σ, 10σ] from the mean
    x = b.sample(5000, generator=torch.Generator().manual_seed(1)).numpy()[:, 0]
    assert ((x >= 0) & (x <= 1)).all()
    assert torch.isfinite(b.log_prob(torch.as_tensor(x[:, None]))).all()
    assert stats.kstest(x, lambda t: _marginal_cdf(b, 0, t)).pvalue > 1e-3


def test_sampling_is_deterministic_given_the_generator():
    b = _base(3)
    a1 = b.sample(100, generator=torch.Generator().manual_seed(5))
    a2 = b.sample(100, generator=torch.Generator().manual_seed(5))
    a3 = b.sample(100, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)


def test_fit_selects_components_by_bic_and_is_normalized():
    g = np.random.default_rng(0)
    U = np.vstack([g.normal(0.25, 0.05, (1500, 2)), g.normal(0.7, 0.08, (1500, 2))])
    b = TruncatedGMMBase.fit(np.clip(U, 0, 1), max_components=5, uniform_weight=0.02)
    assert b.n_components == 2
    assert b.weights.sum() + b.uniform_weight == pytest.approx(1.0)
    assert sorted(np.round(b.means[:, 0], 1)) == [0.2, 0.7] or sorted(
        np.round(b.means[:, 0], 1)
    ) == [0.3, 0.7]
    with pytest.raises(ValueError, match="unit cube"):
        TruncatedGMMBase.fit(U + 1.0)


def test_round_trip_through_dict_and_model_file(tmp_path):
    b = _base(3)
    b2 = base_from_dict(b.to_dict())
    u = b.sample(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(b.log_prob(u), b2.log_prob(u))
    e = MLPEnergy(3, hidden=(8,), n_fourier=4)
    m = EnergyModel(e, Box([0, 0, 0], [2, 1, 1]), b)
    m.log_partition()
    save_model(m, tmp_path / "m.ebm")
    m2 = load_model(tmp_path / "m.ebm")
    assert isinstance(m2.base, TruncatedGMMBase)
    x = m.domain.from_unit(u).numpy()
    np.testing.assert_array_equal(m.log_prob(x), m2.log_prob(x))
    with pytest.raises(ValueError, match="unknown base"):
        base_from_dict({"kind": "nope"})


def test_model_with_gmm_base_is_normalized_2d():
    b = _base(2)
    e = MLPEnergy(2, hidden=(16, 16), n_fourier=8, seed=3)
    with torch.no_grad():
        for p in e.parameters():
            p.mul_(3.0)
    m = EnergyModel(e, Box([-1, 0], [1, 2]), b)
    ax, w = gauss_legendre_1d(128, 8)
    u = tensor_grid([ax, ax])
    p = np.exp(m.log_prob(m.domain.from_unit(u).numpy())) * 4.0  # density in x, |box| = 4
    assert float(((w[:, None] * w[None, :]).reshape(-1).numpy() * p).sum()) == pytest.approx(
        1, abs=1e-6
    )


def _exact_mean(model):
    ax, w = gauss_legendre_1d(128, 4)
    u = tensor_grid([ax, ax])
    lw = (torch.log(w)[:, None] + torch.log(w)[None, :]).reshape(-1)
    with torch.no_grad():
        li = lw - model.energy_fn(u) + model.base.log_prob(u)
    pi = torch.softmax(li, 0)
    return (pi[:, None] * u).sum(0).numpy()


def test_model_sample_exact_rejection_from_the_base():
    b = _base(2)
    e = QuadraticEnergy(2, mean=[0.4, 0.6], precision=[[8.0, 2.0], [2.0, 6.0]])
    m = EnergyModel(e, Box.unit(2), b)
    x = m.sample(4000, generator=torch.Generator().manual_seed(0))
    assert m.last_sample_info.method == "exact"
    se = x.std(0, ddof=1) / math.sqrt(len(x))
    assert (np.abs(x.mean(0) - _exact_mean(m)) < 4 * se).all()


def test_model_sample_mcmc_from_the_base():
    b = _base(2)
    e = QuadraticEnergy(2, mean=[0.4, 0.6], precision=[[8.0, 2.0], [2.0, 6.0]])
    m = EnergyModel(e, Box.unit(2), b)
    g = torch.Generator().manual_seed(1)
    x = m.sample(64 * 40, generator=g, method="mcmc", n_chains=64, burn_in=200, thin=2)
    draws = x.reshape(40, 64, 2).transpose(1, 0, 2)  # (chains, draws, d)
    info = m.last_sample_info
    assert info.method == "mcmc" and 0.3 < info.acceptance_rate < 0.9
    assert (np.abs(x.mean(0) - _exact_mean(m)) < 4 * mcse_mean(draws)).all()


def test_uniform_base_sampling_unchanged_in_2d():
    e = QuadraticEnergy(2, mean=[0.4, 0.6], precision=[[8.0, 2.0], [2.0, 6.0]])
    m = EnergyModel(e, Box.unit(2), Uniform(2))
    m.sample(10, generator=torch.Generator().manual_seed(0))
    assert m.last_sample_info.method == "exact"
    with pytest.raises(ValueError, match="unknown sampling method"):
        m.sample(10, method="gibbs")
