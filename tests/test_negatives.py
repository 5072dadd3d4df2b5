"""Negative phases: their common interface and diagnostics, the exactness of the chains, the
stability monitor of the fit loop, and a persistent-chain fit against the exact-negative fit."""

import math
import warnings

import numpy as np
import pytest
import torch

from ebmfit.base import TruncatedGMMBase, Uniform
from ebmfit.energies import MLPEnergy, QuadraticEnergy
from ebmfit.energies.base import tensor_grid
from ebmfit.partition import gauss_legendre_1d
from ebmfit.samplers import mcse_mean
from ebmfit.samplers.types import State
from ebmfit.training import (
    FitError,
    FitWarning,
    ImportanceNegatives,
    NegativesInfo,
    PersistentChains,
    ShiftedGridNegatives,
    ShortRunChains,
    StabilityMonitor,
    fit_sgd,
)
from ebmfit.training.negatives import chain_energy, independence_step

DATA = torch.as_tensor(
    np.clip(np.random.default_rng(0).normal([0.35, 0.6], [0.12, 0.08], (1500, 2)), 1e-3, 1 - 1e-3)
)
GMM = TruncatedGMMBase([0.6, 0.4], [[0.3, 0.6], [0.7, 0.4]], [[0.1, 0.1], [0.15, 0.2]], 0.05)

STRATEGIES = {
    "grid": lambda: ShiftedGridNegatives(2, 32),
    "importance": lambda: ImportanceNegatives(2, 512),
    "importance-pool": lambda: ImportanceNegatives(2, 512, base=GMM, refresh=64),
    "pcd-mala": lambda: PersistentChains(2, 64, "mala", 3),
    "pcd-hmc-gmm": lambda: PersistentChains(
        2, 64, "hmc", 2, base=GMM, buffer_size=128, num_integration_steps=3
    ),
    "pcd-hard": lambda: PersistentChains(2, 64, "mala", 2, 0.5, reinit="hard"),
    "cd-base": lambda: ShortRunChains(2, 64, 2, "base"),
    "cd-data-ula": lambda: ShortRunChains(2, 64, 1, "data", DATA, "ula", step_size=0.01),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_interface_shapes_and_diagnostics(name):
    strat = STRATEGIES[name]()
    e = MLPEnergy(2, hidden=(16,), n_fourier=4)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        neg = strat(e, g)
    m = neg.points.shape[0]
    assert neg.points.shape == (m, 2) and neg.log_weights.shape == (m,)
    assert neg.log_weights.dtype == torch.float64
    assert ((neg.points >= 0) & (neg.points <= 1)).all()
    chains = isinstance(strat, (PersistentChains, ShortRunChains))
    assert neg.self_normalize is not chains  # chain output is a model sample: π ∝ w, w equal
    info = strat.last_info
    assert isinstance(info, NegativesInfo)
    if chains:
        assert None not in (info.acceptance_rate, info.step_size, info.divergences, info.mean_jump)
        assert 0 <= info.acceptance_rate <= 1 and info.step_size > 0
    else:
        assert info.n_points == m and info.kernel is None and info.acceptance_rate is None
        assert torch.allclose(neg.log_weights.exp().sum(), torch.ones((), dtype=torch.float64))


def test_chains_are_deterministic_given_the_generator():
    e = MLPEnergy(2, hidden=(16,), n_fourier=4)
    out = []
    for _ in range(2):
        s = PersistentChains(2, 32, n_steps=3)
        g = torch.Generator().manual_seed(3)
        out.append(torch.cat([s(e, g).points for _ in range(3)]))
    assert torch.equal(out[0], out[1])


def test_argument_validation():
    with pytest.raises(ValueError, match="unknown kernel"):
        PersistentChains(2, kernel="gibbs")
    with pytest.raises(ValueError, match="reinit"):
        PersistentChains(2, reinit="soft")
    with pytest.raises(ValueError, match="buffer_size"):
        PersistentChains(2, 64, buffer_size=10)
    with pytest.raises(ValueError, match="init='data'"):
        ShortRunChains(2, init="data")
    with pytest.raises(ValueError, match="unit cube"):
        ShortRunChains(2, init="data", data=DATA + 2)


def _exact_mean(energy, base):
    ax, w = gauss_legendre_1d(128, 4)
    u = tensor_grid([ax, ax])
    lw = (torch.log(w)[:, None] + torch.log(w)[None, :]).reshape(-1)
    with torch.no_grad():
        pi = torch.softmax(lw - energy(u) + base.log_prob(u), 0)
    return (pi[:, None] * u).sum(0).numpy()


@pytest.mark.parametrize("base", [Uniform(2), GMM], ids=["uniform", "gmm"])
def test_persistent_chains_target_the_model(base):
    """With θ fixed, the chains (MALA + Metropolis restarts from P) sample e^{-V} dP / Z:
    the chain mean is within 4 Monte Carlo standard errors (from the ESS) of quadrature."""
    e = QuadraticEnergy(2, mean=[0.2, 0.85], precision=[[60.0, 25.0], [25.0, 40.0]])
    s = PersistentChains(2, 128, "mala", 2, 0.3, base)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):  # burn-in (and step-size adaptation)
        s(e, g)
    s.adapt = False  # a time-homogeneous chain from here on
    draws = torch.stack([s(e, g).points for _ in range(150)], 1)  # (chains, draws, d)
    err = np.abs(draws.reshape(-1, 2).mean(0).numpy() - _exact_mean(e, base))
    assert (err < 4 * mcse_mean(draws)).all(), (err, mcse_mean(draws))
    assert 0.3 < s.last_info.acceptance_rate < 0.9


def test_independence_step_leaves_the_target_invariant():
    """Start from exact draws of π ∝ e^{-V} p (1-D, inverse CDF on a fine grid): one move
    later the draws still follow π (first two moments within 4 SE)."""
    base = TruncatedGMMBase([1.0], [[0.3]], [[0.2]], 0.1)
    e = QuadraticEnergy(1, mean=[0.7], precision=[[30.0]])
    t = torch.linspace(0, 1, 200001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        dens = (-e(t) + base.log_prob(t)).exp()
    cdf = torch.cumsum(dens, 0) / dens.sum()
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = t[torch.searchsorted(cdf, torch.rand(n, generator=g, dtype=torch.float64))]
    fn = chain_energy(e, base)
    with torch.no_grad():
        st = State(x0, fn(x0), torch.zeros_like(x0))
    st1, prob = independence_step(g, st, fn, base)
    assert 0.2 < float(prob.mean()) < 0.95
    for f in (lambda x: x, lambda x: x**2):
        a, b = f(x0[:, 0]), f(st1.position[:, 0])
        se = math.sqrt(2 * float(a.var()) / n)
        assert abs(float(b.mean() - a.mean())) < 4 * se


def _fit(neg, max_iter=200, lr=5e-3, seed=0, **kw):
    e = MLPEnergy(2, hidden=(32, 32), n_fourier=8, fourier_scale=2.0, seed=seed)
    res = fit_sgd(
        e,
        DATA[:1200],
        DATA[1200:],
        neg,
        max_iter=max_iter,
        lr=lr,
        val_every=50,
        patience=100,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )
    return e, res


def _log_density_on_grid(e, ax, w):
    u = tensor_grid([ax, ax])
    lw = (torch.log(w)[:, None] + torch.log(w)[None, :]).reshape(-1)
    with torch.no_grad():
        v = e(u.float()).double()
    return -v - torch.logsumexp(lw - v, 0), lw


def test_persistent_chain_fit_matches_the_exact_negative_fit():
    """Same data, same initial MLP, same 200 Adam steps: the PCD fit lands within a small KL of
    the exact (shifted-grid) fit; KL by quadrature between the two normalized models.

    Calibration (measured over 3×3 seeds): two exact fits that differ only in the grid shifts
    are 0.007–0.009 nats apart, exact vs PCD 0.025–0.030, both fits ≈ 1.8 nats from the start.
    """
    e_exact, _ = _fit(ShiftedGridNegatives(2, 48))
    e_pcd, res = _fit(PersistentChains(2, 256, "mala", 5, 0.25))
    ax, w = gauss_legendre_1d(96, 4)
    lp_exact, lw = _log_density_on_grid(e_exact, ax, w)
    lp_pcd, _ = _log_density_on_grid(e_pcd, ax, w)
    p = (lw + lp_exact).exp()
    kl = float((p * (lp_exact - lp_pcd)).sum())
    kl_start = float((p * lp_exact).sum())  # KL(exact fit ‖ uniform start)
    assert kl < 0.05, (kl, kl_start)
    assert kl_start > 1.0
    rows = [h for h in res.history if "val_nll" in h and h["iter"] > 0]
    assert all("acceptance_rate" in h and "energy_gap" in h for h in rows)
    assert res.warnings == []


def test_cd1_with_a_large_learning_rate_is_reported():
    """CD-1 from the base with a too large learning rate: the energy gap runs away.  The loop
    says so (a history row and a FitWarning) and, once the gap passes ``max_gap`` again after
    every restore-and-halve, stops at its best validated state with a FitWarning."""

    def cd1():
        return ShortRunChains(2, 128, 1, "base", step_size=0.01, adapt=False)

    mon = StabilityMonitor(window=10, max_gap=1e9)
    with pytest.warns(FitWarning) as rec:
        _, res = _fit(cd1(), max_iter=40, lr=0.3, monitor=mon)
    assert any("energy gap" in str(r.message) for r in rec)
    assert "gap" in [ev["warning"] for ev in res.warnings]
    assert any(h.get("warning") == "gap" for h in res.history)
    with pytest.warns(FitWarning) as rec:
        _, res = _fit(cd1(), max_iter=100, lr=1.0)
    msgs = [str(r.message) for r in rec]
    assert any("divergence" in m for m in msgs)
    assert any("energy gap" in m and "kept the best validated state" in m for m in msgs)
    assert res.stop_reason == "diverged"


def test_importance_sampling_collapse_is_reported():
    """A sharp model and a uniform base: the SNIS effective sample size collapses."""
    sharp = QuadraticEnergy(2, mean=[0.3, 0.6], precision=[[4e4, 0.0], [0.0, 4e4]])
    mon = StabilityMonitor(window=5)
    with pytest.warns(FitWarning, match="ESS"):
        res = fit_sgd(
            sharp,
            DATA[:200],
            DATA[200:300],
            ImportanceNegatives(2, 256),
            max_iter=8,
            lr=1e-9,
            monitor=mon,
            generator=torch.Generator().manual_seed(0),
        )
    assert res.warnings[0]["warning"] == "ess"
    assert any(h.get("warning") == "ess" for h in res.history)


def test_frozen_chains_are_reported_and_raise_on_request():
    """Chains with a fixed huge step on a sharp energy accept nothing: 'not mixing'."""
    sharp = QuadraticEnergy(2, mean=[0.3, 0.6], precision=[[4e3, 0.0], [0.0, 4e3]])

    def run(action):
        neg = PersistentChains(2, 64, "mala", 1, 0.0, step_size=1.0, adapt=False)
        return fit_sgd(
            sharp,
            DATA[:200],
            DATA[200:300],
            neg,
            max_iter=15,
            lr=1e-9,
            monitor=StabilityMonitor(window=10, action=action),
            generator=torch.Generator().manual_seed(0),
        )

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "record" must not warn
        res = run("record")
    assert [ev["warning"] for ev in res.warnings] == ["mixing"]
    with pytest.raises(FitError, match="not mixing"):
        run("raise")
    with pytest.raises(ValueError, match="action"):
        StabilityMonitor(action="ignore")


# --------------------------------------------------------------------------- importance pool
def test_importance_pool_replaces_the_oldest_draws_by_exact_ones():
    """With ``refresh=k`` the first call draws n points from the base and every later call
    replaces the k oldest (cyclically) by k fresh draws made with the same generator: the
    pool is exactly what drawing n, then k at a time, gives."""
    n, k = 40, 16
    strat = ImportanceNegatives(2, n, base=GMM, refresh=k)
    e = QuadraticEnergy(2)
    g, ref_g = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ref = GMM.sample(n, generator=ref_g)
    first = strat(e, g).points
    assert torch.equal(first, ref)
    cursor = 0
    for _ in range(4):
        fresh = GMM.sample(k, generator=ref_g)
        idx = (cursor + torch.arange(k)) % n
        ref = ref.index_copy(0, idx, fresh)
        cursor = (cursor + k) % n
        out = strat(e, g)
        assert torch.equal(out.points, ref)
        assert torch.allclose(out.log_weights, torch.full((n,), -math.log(n), dtype=torch.float64))
    assert torch.equal(first, GMM.sample(n, generator=torch.Generator().manual_seed(5)))  # kept


def test_importance_pool_state_round_trips_and_reset_forgets_it():
    e = QuadraticEnergy(2)
    a = ImportanceNegatives(2, 64, base=GMM, refresh=8)
    g = torch.Generator().manual_seed(0)
    a(e, g)
    a(e, g)
    state = a.state_dict()
    b = ImportanceNegatives(2, 64, base=GMM, refresh=8)
    b.load_state_dict(state)
    g_state = g.get_state()
    g2 = torch.Generator()
    g2.set_state(g_state)
    assert torch.equal(a(e, g).points, b(e, g2).points)
    a.reset()
    assert a.state_dict() == {}
    assert ImportanceNegatives(2, 64).state_dict() == {}  # fresh draws: no state
    with pytest.raises(ValueError, match="refresh"):
        ImportanceNegatives(2, 64, refresh=65)


def test_importance_pool_gradient_estimate_is_unbiased_for_the_model_mean():
    """A pool made of exact base draws weighted by e^{-V} estimates E_Q[u] for
    Q ∝ e^{-V} dP: against quadrature of the same expectation, within 4 SE over repeats."""
    energy = QuadraticEnergy(2, mean=[0.2, 0.7], precision=[[8.0, 3.0], [3.0, 5.0]])
    rules = [gauss_legendre_1d(64, 8) for _ in range(2)]
    pts = tensor_grid([r[0] for r in rules])
    w = (rules[0][1][:, None] * rules[1][1][None, :]).reshape(-1)
    with torch.no_grad():
        dens = w * torch.exp(-energy(pts).double() + GMM.log_prob(pts))
    truth = (dens[:, None] * pts).sum(0) / dens.sum()
    strat = ImportanceNegatives(2, 2000, base=GMM, refresh=500)
    g = torch.Generator().manual_seed(11)
    ests = []
    for _ in range(40):
        neg = strat(energy, g)
        with torch.no_grad():
            lw = -energy(neg.points).double()
        pi = torch.softmax(lw, 0)
        ests.append((pi[:, None] * neg.points).sum(0))
    # consecutive pools share 3/4 of their draws; every 4th pool is disjoint from the last
    # one taken, so those 10 estimates are independent
    disjoint = torch.stack(ests)[::4]
    se = disjoint.std(0) / math.sqrt(disjoint.shape[0])
    assert torch.all((disjoint.mean(0) - truth).abs() < 4 * se)
