"""LogitGMMBase: exact on the cube — density against an independent formula, normalization by
quadrature and Monte Carlo, the exact sampler against the closed-form CDF, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from ebmfit.base import LogitGMMBase, Uniform, base_from_dict
from ebmfit.base.logit_gmm import logit


def _base_2d(uniform_weight=0.02, cov="full"):
    chols = np.array([[[0.8, 0.0], [0.5, 0.4]], [[0.3, 0.0], [-0.2, 1.1]]])
    if cov == "diag":
        chols = chols * np.eye(2)
    return LogitGMMBase(
        [0.3, 0.7], [[-1.0, 0.5], [1.2, -0.3]], chols, uniform_weight=uniform_weight
    )


def _reference_log_prob(base: LogitGMMBase, U: np.ndarray) -> np.ndarray:
    """scipy's multivariate normal on logit(u), plus the log-Jacobian and the uniform part."""
    Y = special.logit(U)
    comps = [
        np.log(w) + stats.multivariate_normal(m, c @ c.T).logpdf(Y)
        for w, m, c in zip(base.weights, base.means, base.chols, strict=True)
    ]
    lg = special.logsumexp(np.stack(comps, -1), -1) - np.sum(np.log(U) + np.log1p(-U), -1)
    return np.logaddexp(lg, math.log(base.uniform_weight)) if base.uniform_weight else lg


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_log_prob_matches_an_independent_formula(cov):
    base = _base_2d(cov=cov)
    U = np.random.default_rng(0).uniform(1e-6, 1 - 1e-6, (500, 2))
    ours = base.log_prob(torch.as_tensor(U)).numpy()
    np.testing.assert_allclose(ours, _reference_log_prob(base, U), rtol=1e-10, atol=1e-10)
    out = base.log_prob(torch.tensor([[1.2, 0.5], [-0.1, 0.5]], dtype=torch.float64))
    assert torch.isneginf(out).all()


def test_normalized_in_1d_by_adaptive_quadrature():
    base = LogitGMMBase(
        [0.5, 0.5], [[-2.5], [1.0]], [[[0.4]], [[1.5]]], uniform_weight=0.01
    )  # mass piled near the face u = 0 and a wide component

    def f(u):
        return float(torch.exp(base.log_prob(torch.tensor([[u]], dtype=torch.float64))))

    total, err = integrate.quad(f, 0.0, 1.0, points=[special.expit(-2.5), 0.5], limit=400)
    assert abs(total - 1.0) <= max(4 * err, 1e-9)


def test_normalized_in_2d_by_monte_carlo():
    """E_{u ~ U(0,1)^2}[p(u)] = 1, within 4 standard errors."""
    base = _base_2d()
    U = torch.rand(2_000_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = torch.exp(base.log_prob(U))
    se = float(p.std() / math.sqrt(p.numel()))
    assert abs(float(p.mean()) - 1.0) < 4 * se


def test_sampler_matches_the_closed_form_cdf():
    """Kolmogorov–Smirnov on each coordinate: F(u) = w0 u + Σ π_k Φ((logit u − μ_k)/σ_k)."""
    base = _base_2d()
    S = base.sample(20_000, generator=torch.Generator().manual_seed(1)).numpy()
    assert S.shape == (20_000, 2) and ((S >= 0) & (S <= 1)).all()
    for j in range(2):
        sd = np.sqrt(np.einsum("kij,kij->ki", base.chols, base.chols)[:, j])

        def cdf(u, j=j, sd=sd):
            z = (special.logit(np.clip(u, 1e-300, 1 - 1e-16))[..., None] - base.means[:, j]) / sd
            return base.uniform_weight * u + (base.weights * special.ndtr(z)).sum(-1)

        assert stats.kstest(S[:, j], cdf).pvalue > 1e-3


def test_sampler_is_deterministic_given_the_generator():
    base = _base_2d()
    a = base.sample(100, generator=torch.Generator().manual_seed(5))
    b = base.sample(100, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_fit_recovers_a_correlated_density_and_beats_diagonal():
    """Data from a full-covariance logit mixture: the fitted base is within the estimation
    error of the truth on held-out rows, and its structure is not axis-aligned."""
    truth = _base_2d(uniform_weight=0.0)
    g = torch.Generator().manual_seed(2)
    U = truth.sample(3000, generator=g).numpy()
    test = truth.sample(20_000, generator=g)
    base = LogitGMMBase.fit(U[:2400], U[2400:], random_state=0)
    delta = base.log_prob(test) - truth.log_prob(test)
    se = float(delta.std() / math.sqrt(delta.numel()))
    assert float(delta.mean()) <= 4 * se  # not better than the truth (normalized)
    assert float(delta.mean()) >= -0.05  # and close to it (KL < 0.05 nats)
    assert base.selected["covariance_type"] in ("full", "tied")
    assert base.fit_info and "scored_by" in base.selected


def test_fit_is_well_posed_when_d_exceeds_rows_per_component():
    """64-D with 150 rows: covariance regularisation keeps every factor finite."""
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(150, 4)) @ rng.normal(size=(4, 64))  # rank-4 data in 64-D
    U = special.expit(Z / 4 + 0.01 * rng.normal(size=Z.shape))
    base = LogitGMMBase.fit(U[:120], U[120:], random_state=0)
    lp = base.log_prob(torch.as_tensor(U))
    assert torch.isfinite(lp).all()
    assert np.all(np.isfinite(base.chols))


def test_faces_are_safe():
    base = _base_2d()
    U = torch.tensor([[0.0, 0.5], [1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    lp = base.log_prob(U)
    assert torch.isfinite(lp).all()  # the continuous extension to the closed faces
    u = torch.rand(8, 2, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(base.log_prob(u).sum(), u)  # differentiable inside
    assert torch.isfinite(g).all()
    y = logit(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert y[0] == -y[1] and abs(float(y[1]) - 53 * math.log(2)) < 1e-12  # |y| <= 36.74


def test_round_trip_through_spec_and_tensors():
    base = _base_2d()
    again = base_from_dict(base.to_dict(), base.tensors())
    U = torch.rand(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.log_prob(U), base.log_prob(U), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        base_from_dict(base.to_dict(), {**base.tensors(), "means": torch.zeros(3, 2)})
    assert isinstance(base_from_dict(Uniform(3).to_dict()), Uniform)


def test_constructor_refuses_bad_parameters():
    with pytest.raises(ValueError, match="lower triangular"):
        LogitGMMBase([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="positive diagonal"):
        LogitGMMBase([1.0], [[0.0]], [[[-1.0]]])
    with pytest.raises(ValueError, match="uniform_weight"):
        LogitGMMBase([1.0], [[0.0]], [[[1.0]]], uniform_weight=1.0)


# --------------------------------------------------------------------------- the flow base
def _flow_base():
    pytest.importorskip("zuko")  # an optional extra, ebmfit[flows]; the test extra installs it
    from ebmfit.base import FlowBase

    rng = np.random.default_rng(0)
    U = special.expit(rng.normal(size=(600, 2)) @ np.array([[1.0, 0.6], [0.0, 0.5]]))
    return FlowBase.fit(U[:480], U[480:], hidden=(16, 16), transforms=2, max_steps=200)


def test_flow_base_is_normalized_samples_and_round_trips():
    from ebmfit.base import FlowBase

    base = _flow_base()
    U = torch.rand(400_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        p = torch.exp(base.log_prob(U))
    se = float(p.std() / math.sqrt(p.numel()))
    assert abs(float(p.mean()) - 1.0) < 4 * se
    S = base.sample(300, generator=torch.Generator().manual_seed(1))
    assert S.shape == (300, 2) and ((S >= 0) & (S <= 1)).all()
    assert torch.equal(S, base.sample(300, generator=torch.Generator().manual_seed(1)))
    again = FlowBase.from_parts(base.to_dict(), base.tensors())
    with torch.no_grad():
        torch.testing.assert_close(again.log_prob(S), base.log_prob(S))


def test_coupling_flow_is_normalized_and_its_sampler_matches_its_density():
    """``passes=2`` (the coupling form used above AUTOREGRESSIVE_MAX_DIM): E_unif[p] = 1, and
    the mean of exact draws equals E_unif[u p(u)], each within 4 SE."""
    pytest.importorskip("zuko")
    from ebmfit.base import FlowBase

    rng = np.random.default_rng(1)
    A = np.array([[1.0, 0.6, 0.0, 0.3], [0.0, 0.5, 0.4, 0.0], [0.0, 0.0, 0.8, 0.2], [0, 0, 0, 0.6]])
    U = special.expit(rng.normal(size=(800, 4)) @ A)
    base = FlowBase.fit(U[:640], U[640:], hidden=(16, 16), transforms=2, max_steps=150, passes=2)
    assert base.passes == 2 and base.costly_draws
    V = torch.rand(400_000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        p = torch.exp(base.log_prob(V))
    assert abs(float(p.mean()) - 1.0) < 4 * float(p.std() / math.sqrt(p.numel()))
    S = base.sample(40_000, generator=torch.Generator().manual_seed(2))
    assert ((S >= 0) & (S <= 1)).all()
    by_weight = V * p[:, None]
    diff = S.mean(0) - by_weight.mean(0)
    se = torch.sqrt(S.var(0) / S.shape[0] + by_weight.var(0) / V.shape[0])
    assert torch.all(diff.abs() < 4 * se), (diff, se)
    again = FlowBase.from_parts(base.to_dict(), base.tensors())
    assert again.passes == 2
    with torch.no_grad():
        torch.testing.assert_close(again.log_prob(S[:500]), base.log_prob(S[:500]))


def test_flow_passes_rule_and_checks():
    pytest.importorskip("zuko")
    from ebmfit.base import FlowBase
    from ebmfit.base.flow import AUTOREGRESSIVE_MAX_DIM

    rng = np.random.default_rng(0)
    for d, want in ((AUTOREGRESSIVE_MAX_DIM, None), (AUTOREGRESSIVE_MAX_DIM + 1, 2)):
        U = rng.uniform(0.1, 0.9, (40, d))
        assert FlowBase.fit(U[:30], U[30:], hidden=(4,), transforms=1, max_steps=1).passes == want
    with pytest.raises(ValueError, match="passes"):
        FlowBase(3, np.zeros(3), np.ones(3), passes=1)
    old = FlowBase(2, np.zeros(2), np.ones(2), hidden=(4,)).to_dict()
    del old["passes"]  # a file written before the field existed: fully autoregressive
    assert (
        FlowBase.from_parts(old, FlowBase(2, np.zeros(2), np.ones(2), hidden=(4,)).tensors()).passes
        is None
    )


def test_flow_fit_is_reproducible_and_its_default_budget_is_in_steps():
    """base='auto' bounds the flow by a step count (not a clock): same seed, same flow."""
    pytest.importorskip("zuko")
    from ebmfit.base import FlowBase
    from ebmfit.fitting import flow_steps

    U = np.random.default_rng(4).beta(2, 5, (300, 5))
    a, b = (FlowBase.fit(U[:240], U[240:], hidden=(8,), transforms=1, max_steps=60) for _ in "ab")
    V = torch.as_tensor(U[:50])
    with torch.no_grad():
        assert torch.equal(a.log_prob(V), b.log_prob(V))
    assert a.fit_info["steps"] == b.fit_info["steps"] <= 60
    assert [flow_steps(d) for d in (4, 8, 16, 30, 64, 500)] == [4000, 4000, 4000, 2133, 1000, 1000]


def test_flow_trains_in_float32_keeps_float64_and_survives_a_divergence():
    """Training runs in float32 (``train_dtype``); the kept flow is float64 and its recorded
    validation NLL is the exact float64 one.  A learning rate that blows the loss up stops the
    training and keeps the best state so far (never worse on validation than the start)."""
    pytest.importorskip("zuko")
    from ebmfit.base import FlowBase

    U = np.random.default_rng(5).beta(2, 5, (300, 3))
    base = FlowBase.fit(U[:240], U[240:], hidden=(8,), transforms=1, max_steps=40)
    assert all(p.dtype == torch.float64 for p in base.flow.parameters())
    with torch.no_grad():
        exact = -float(base.log_prob(torch.as_tensor(U[240:])).mean())
    assert base.val_nll == base.fit_info["val_nll"] == exact
    start = FlowBase.fit(U[:240], U[240:], hidden=(8,), transforms=1, max_steps=0).val_nll
    wild = FlowBase.fit(U[:240], U[240:], hidden=(8,), transforms=1, max_steps=200, lr=1e6)
    V = torch.as_tensor(U)
    with torch.no_grad():
        assert torch.isfinite(wild.log_prob(V)).all()
    assert wild.val_nll <= start + 1e-9


def test_flow_early_stopping_scores_the_kept_base_not_the_bare_flow():
    """A column constant on the training rows (a pixel never on in this split) but not on the
    validation rows: the bare flow gives those rows a log-density of −10¹¹ or so, which
    swamps its validation NLL, so stopping on it kept the untrained start (digits, one fold
    of benchmarks/real_data.py: 65 nats/row on its test rows instead of 255).  Early stopping
    reads the NLL of the base that is kept — the flow mixed with the uniform on the cube, the
    density the selection judges — and the training goes on."""
    pytest.importorskip("zuko")
    from ebmfit.base import FlowBase

    rng = np.random.default_rng(0)

    def draw(n, p_on):
        y = rng.normal(size=(n, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.5], [0, 0, 1.0]])
        pixel = np.where(rng.random(n) < p_on, rng.uniform(0.3, 0.95, n), 0.05)
        return np.column_stack([1 / (1 + np.exp(-y)), pixel])

    U, V = draw(1000, 0.0), draw(300, 0.02)
    kw = dict(random_state=0, hidden=(32, 32), transforms=2, patience=4)
    start = FlowBase.fit(U, V, max_steps=0, **kw).val_nll
    trained = FlowBase.fit(U, V, max_steps=400, **kw)
    assert trained.fit_info["steps"] > 100  # not stopped after the first `patience` checks
    assert trained.val_nll < start - 2.0  # nats/row of the kept base on the validation rows


@pytest.mark.parametrize("passes", [None, 2])
def test_estimator_with_a_flow_base_round_trips_through_the_model_file(tmp_path, passes):
    """The model file holds the flow's weights only (its integer masks and orders are rebuilt
    from the spec); a default fit that keeps a flow base saves and loads."""
    pytest.importorskip("zuko")
    from ebmfit import EnergyDensity
    from ebmfit.base import FlowBase

    rng = np.random.default_rng(0)
    U = rng.beta(2, 5, (300, 4))
    base = FlowBase.fit(U[:240], U[240:], hidden=(8,), transforms=2, max_steps=30, passes=passes)
    assert all(t.is_floating_point() for t in base.tensors().values())
    est = EnergyDensity(low=0.0, high=1.0, random_state=0, max_iter=5, selection="none").fit(U)
    est.base_ = base  # the estimator's model over this base: save, load, same log-densities
    from ebmfit.model import EnergyModel

    est.model_ = EnergyModel(est.energy_, est.domain_, base)
    est.log_partition_ = est.model_.log_partition("importance", random_state=0)
    est.save(tmp_path / "m.ebm")
    again = EnergyDensity.load(tmp_path / "m.ebm")
    assert isinstance(again.base_, FlowBase) and again.base_.passes == passes
    np.testing.assert_array_equal(again.score_samples(U[:40]), est.score_samples(U[:40]))
    with pytest.raises(ValueError, match="tensors missing"):
        t = base.tensors()
        t.pop(next(k for k in t if k.startswith("flow.")))
        FlowBase.from_parts(base.to_dict(), t)


def test_loose_search_tolerance_picks_the_structure_of_the_tight_search():
    """The structure search stops EM at SEARCH_TOL and refits the winner at FINAL_TOL: on a
    two-cluster target in logit space it picks what a search at FINAL_TOL picks, and its
    density on fresh rows agrees with that search's to a small fraction of a nat."""
    from ebmfit.base.logit_gmm import FINAL_TOL, SEARCH_TOL

    rng = np.random.default_rng(3)

    def draw(n):
        y = np.concatenate(
            [rng.normal(-1.5, 0.4, (n // 2, 4)), rng.normal(1.0, 0.6, (n - n // 2, 4))]
        )
        return 1.0 / (1.0 + np.exp(-y))

    U, V, T = draw(6000), draw(1500), torch.as_tensor(draw(4000))
    loose = LogitGMMBase.fit(U, V, random_state=0)
    tight = LogitGMMBase.fit(U, V, random_state=0, search_tol=FINAL_TOL)
    assert loose.selected["search_tol"] == SEARCH_TOL
    for key in ("covariance_type", "n_components"):
        assert loose.selected[key] == tight.selected[key]
    gap = float((loose.log_prob(T) - tight.log_prob(T)).mean())
    assert abs(gap) < 0.01


def test_uniform_weight_is_scored_with_the_kept_mixture_on_the_validation_rows():
    """Past the cross-validation size the uniform weight is chosen with the mixture that is
    kept (refitted on all training rows), so the recorded validation log-likelihood is the
    kept base's own mean log-density on those rows, to round-off (the search fits 2 000 of
    the 5 500 training rows, as it fits 10 000 of a larger set by default)."""
    rng = np.random.default_rng(5)
    y = rng.multivariate_normal([0.5, -1.0, 0.0], [[1, 0.6, 0], [0.6, 1, 0.3], [0, 0.3, 1]], 7000)
    U = 1.0 / (1.0 + np.exp(-y))
    base = LogitGMMBase.fit(U[:5500], U[5500:], random_state=0, max_fit_rows=2000)
    assert base.selected["scored_by"] == "validation rows"
    own = float(base.log_prob(torch.as_tensor(U[5500:])).mean())
    assert base.selected["val_loglik"] == pytest.approx(own, abs=1e-9)


def test_cross_validated_search_scores_converged_fits():
    """On small data (the cross-validated path) the structure search runs EM to FINAL_TOL: the
    recorded score of the chosen structure is the mean out-of-fold log g(y) of sklearn
    mixtures fitted independently to that tolerance on the same folds.  (At SEARCH_TOL a
    10-D, 442-row table kept 2–4 tied components where 8 score 0.38 nats/row better.)"""
    from sklearn.mixture import GaussianMixture

    from ebmfit.base.logit_gmm import FINAL_TOL

    rng = np.random.default_rng(5)
    y = np.concatenate([rng.normal(-1.0, 0.5, (150, 3)), rng.normal(1.0, 0.8, (150, 3))])
    y[:, 1] += 0.8 * y[:, 0]
    U = 1.0 / (1.0 + np.exp(-y))
    U, V = U[:240], U[240:]
    base = LogitGMMBase.fit(U, V, random_state=0)
    sel = base.selected
    assert sel["search_tol"] == FINAL_TOL and sel["scored_by"].startswith("5-fold CV")
    k, cov, reg = sel["n_components"], sel["covariance_type"], sel["reg"]
    recorded = [
        r["val"]
        for r in base.fit_info
        if (r.get("n_components"), r.get("covariance_type"), r.get("reg")) == (k, cov, reg)
    ]
    # reference: the same folds (the fit's generator draws them first), independent fits
    pool = logit(np.concatenate([U, V]))
    folds = np.array_split(np.random.default_rng(0).permutation(len(pool)), 5)
    scale = float(np.median(np.var(logit(U), axis=0)))
    out = np.empty(len(pool))
    for f in folds:
        mask = np.ones(len(pool), dtype=bool)
        mask[f] = False
        gm = GaussianMixture(
            k, covariance_type=cov, reg_covar=reg * scale, tol=FINAL_TOL, random_state=0
        ).fit(pool[mask])
        out[f] = gm.score_samples(pool[f])
    assert recorded == [pytest.approx(float(out.mean()), abs=1e-9)]


def test_flow_shortens_its_cosine_decay_to_what_fits_in_the_time_limit(monkeypatch):
    """On a clock that would cut the schedule short (here a fake one: 1 s per reading), the
    cosine horizon shrinks to the steps that fit in 90 % of ``time_limit`` at the pace of the
    checks, and training ends there, annealed, before the hard limit; with time to
    spare the horizon is the whole budget."""
    pytest.importorskip("zuko")
    from types import SimpleNamespace

    import ebmfit.base.flow as flow_mod
    from ebmfit.base import FlowBase

    rng = np.random.default_rng(0)
    U = 1.0 / (1.0 + np.exp(-rng.normal(size=(300, 4))))
    ticks = iter(range(10**6))
    monkeypatch.setattr(flow_mod, "time", SimpleNamespace(time=lambda: float(next(ticks))))
    # t0 is the first reading; check k (step 5k) reads t0 + k: elapsed k s for 5k steps
    b = FlowBase.fit(U[:200], U[200:], max_steps=1000, val_every=5, time_limit=10.0, hidden=(8,))
    assert b.fit_info["horizon"] == 45 == b.fit_info["steps"]  # int(0.9 * 10 s * 5 steps/s)
    monkeypatch.undo()
    for limit in (300.0, math.inf):
        b = FlowBase.fit(
            U[:200],
            U[200:],
            max_steps=30,
            val_every=5,
            patience=10**6,
            time_limit=limit,
            hidden=(8,),
        )
        assert b.fit_info["horizon"] == 30 == b.fit_info["steps"]


@pytest.mark.parametrize("bad", [-1e-3, float("nan")])
def test_a_bad_search_tolerance_is_named(bad):
    """A negative or NaN ``search_tol`` is refused by name, not reported as "no Gaussian
    mixture could be fitted" after every EM run failed (0 is sklearn's "run to max_iter")."""
    U = np.random.default_rng(0).uniform(0.1, 0.9, (100, 2))
    with pytest.raises(ValueError, match="search_tol must be a number >= 0"):
        LogitGMMBase.fit(U[:80], U[80:], search_tol=bad)


def test_flow_chunks_bound_the_rows_per_pass_and_do_not_change_the_results(monkeypatch):
    """Draws and log-densities pass through the flow in chunks of ``chunk_rows(d)`` rows
    (bounded memory): the chunking changes neither, up to float rounding."""
    pytest.importorskip("zuko")
    import ebmfit.base.flow as flow_mod

    assert [flow_mod.chunk_rows(d) for d in (1, 4, 7, 16, 64, 10_000)] == [
        8192,
        8192,
        4681,
        2048,
        512,
        512,
    ]
    base = _flow_base()
    V = torch.rand(3000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        lp, S = base.log_prob(V), base.sample(3000, generator=torch.Generator().manual_seed(4))
        monkeypatch.setattr(flow_mod, "chunk_rows", lambda d: 700)  # 5 passes, not 1
        torch.testing.assert_close(base.log_prob(V), lp)
        torch.testing.assert_close(base.sample(3000, generator=torch.Generator().manual_seed(4)), S)
