"""The default EnergyDensity: a fitted base, candidates scored with honest log Z, never worse
than the base; the defensive mixture; log Z error bars that hold; save/load of every base."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmfit import EnergyDensity, GridDataWarning
from ebmfit.base import LogitGMMBase, TruncatedGMMBase, Uniform
from ebmfit.energies import DefensiveEnergy, MLPEnergy, ResidualEnergy, ZeroEnergy
from ebmfit.energies.base import tensor_grid
from ebmfit.partition import gauss_legendre_1d, log_partition_importance
from ebmfit.partition.quadrature import log_partition_quadrature
from ebmfit.selection import (
    MIX_FLOOR,
    Selection,
    choose,
    cube_oscillation,
    log_partition_rule,
    stack_weight,
)


def _truth(d: int, k: int = 2) -> LogitGMMBase:
    rng = np.random.default_rng(d)
    chols = np.stack(
        [
            np.tril(rng.normal(0, 0.3, (d, d)), -1) + np.diag(rng.uniform(0.3, 0.8, d))
            for _ in range(k)
        ]
    )
    return LogitGMMBase(np.full(k, 1.0 / k), rng.normal(0, 0.8, (k, d)), chols)


@functools.cache
def _fit_on_base_family(d: int) -> tuple[EnergyDensity, np.ndarray]:
    # one full Gaussian in logit space: the fitted base has d + d(d+1)/2 parameters, so with
    # 2000 rows its estimation error (≈ k/2n nats) leaves a correction nothing to learn
    truth = _truth(d, k=1)
    X = truth.sample(2000, generator=torch.Generator().manual_seed(0)).numpy()
    return EnergyDensity(low=0.0, high=1.0, random_state=0).fit(X), X


@pytest.mark.parametrize("d", [2, 5])
def test_selection_keeps_the_base_when_v_cannot_help(d):
    """Data drawn from the base family itself: no correction beats the base by 2 SE."""
    est, X = _fit_on_base_family(d)
    sel = est.selection_
    assert isinstance(sel, Selection) and sel.chosen == "base"
    names = [c.name for c in sel.candidates]
    assert names[0] == "base"
    expected = {"spline|base", "spline|uniform"} if d <= 3 else {"residual|base"}
    assert expected <= set(names)
    assert sum(c.chosen for c in sel.candidates) == 1
    base_row = sel.candidates[0]
    assert base_row.delta == 0.0 and math.isfinite(base_row.val_loglik) and base_row.stderr > 0
    assert est.energy_.family == "zero" and isinstance(est.base_, LogitGMMBase)
    # V = 0: the model is its base, to float tolerance, with log Z = 0 exactly
    assert est.log_partition_.value == 0.0 and est.log_partition_.method == "exact"
    U = torch.as_tensor(X[:200])
    np.testing.assert_allclose(
        est.score_samples(X[:200]), est.base_.log_prob(U).numpy(), rtol=0, atol=1e-12
    )
    assert "selection on" in str(sel) and "* base" in str(sel)


def test_selection_rule_needs_two_standard_errors():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 400)
    lz0 = _lz(0.0)
    tiny = base + 0.01 + rng.normal(0, 1, 400)  # +0.01 with paired SD 1: not significant
    big = base + 0.5 + rng.normal(0, 0.1, 400)
    sel = choose({"base": base, "a": tiny}, {"base": lz0, "a": lz0}, incumbent="base", log_volume=0)
    assert sel.chosen == "base"
    rows = {"base": base, "a": tiny, "b": big}
    sel = choose(rows, dict.fromkeys(rows, lz0), incumbent="base", log_volume=1.0)
    assert sel.chosen == "b"
    b = next(c for c in sel.candidates if c.name == "b")
    assert b.val_loglik == pytest.approx(base.mean() + 0.5 - 1.0, abs=0.05)
    # an uncertain log Z widens the paired SE and can block the choice
    sel = choose(rows, {"base": lz0, "a": lz0, "b": _lz(0.0, 1.0)}, incumbent="base", log_volume=0)
    assert sel.chosen == "base"


def _lz(v, se=0.0):
    from ebmfit.partition.result import LogZ

    return LogZ(v, se, "test", 0)


def test_a_correction_is_chosen_where_the_base_misses():
    """A ring is no Gaussian mixture: the spline correction wins in 2-D, is mixed with its
    base (the defensive floor) and its log Z comes from quadrature."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 2 * np.pi, 3000)
    r = 1 + 0.05 * rng.normal(size=3000)
    X = np.c_[r * np.cos(a), r * np.sin(a)]
    est = EnergyDensity(random_state=0).fit(X)
    assert est.selection_.chosen.startswith("spline|")
    assert isinstance(est.energy_, DefensiveEnergy) and 1e-3 <= est.energy_.mix <= 0.05
    assert est.log_partition_.method == "gauss-legendre"
    base_row = est.selection_.candidates[0]
    chosen = next(c for c in est.selection_.candidates if c.chosen)
    assert chosen.delta > 2 * chosen.delta_se and chosen.val_loglik > base_row.val_loglik
    # the defensive floor: nowhere below mix × base density (user coordinates)
    grid = est.domain_.from_unit(torch.rand(4000, 2, dtype=torch.float64)).numpy()
    floor = (
        math.log(est.energy_.mix)
        + est.base_.log_prob(torch.as_tensor(est.domain_.to_unit(grid))).numpy()
        - est.domain_.log_volume
    )
    assert np.all(est.score_samples(grid) >= floor - 1e-9)
    _assert_normalized_2d(est)


def _assert_normalized_2d(est):
    """∫ exp(score_samples) over the box = 1 by composite Gauss–Legendre at two resolutions."""

    def integral(cells):
        ax, w = gauss_legendre_1d(cells, 8)
        x = est.domain_.from_unit(tensor_grid([ax, ax])).numpy()
        wx = (w[:, None] * w[None, :]).reshape(-1).numpy() * np.prod(est.domain_.width)
        return float((wx * np.exp(est.score_samples(x))).sum())

    coarse, fine = integral(48), integral(96)
    tol = 4 * (est.log_partition_.stderr + abs(fine - coarse)) + 1e-6
    assert abs(fine - 1.0) <= tol, (fine, coarse, est.log_partition_)


def test_default_is_normalized_in_user_coordinates():
    rng = np.random.default_rng(1)
    X = np.c_[rng.gamma(2.0, 1.5, 600), 50 + 10 * rng.normal(size=600)]  # skewed × wide
    est = EnergyDensity(random_state=0).fit(X)
    _assert_normalized_2d(est)


def test_residual_log_z_by_importance_matches_quadrature():
    """A bounded residual on a logit-GMM base (2-D): importance sampling from the base agrees
    with quadrature within 4 combined standard errors, and its weights are provably tame."""
    base = LogitGMMBase([1.0], [[0.3, -0.2]], [[[0.9, 0.0], [0.4, 0.7]]], uniform_weight=0.01)
    V = ResidualEnergy(MLPEnergy(2, hidden=(16,), n_fourier=8, fourier_scale=1.0, seed=3), 3.0)
    with torch.no_grad():
        V.inner.net[-1].weight.mul_(30.0)  # a correction of a few nats
    assert cube_oscillation(V) <= 6.0 + 1e-6
    q = log_partition_quadrature(V, base)
    r = log_partition_importance(V, base, n_batches=4, generator=torch.Generator().manual_seed(0))
    assert abs(q.value) > 0.05  # a real correction, not log Z = 0
    assert abs(r.value - q.value) < 4 * math.hypot(r.stderr, q.stderr)
    assert log_partition_rule(V, base) == "quadrature"
    V5 = ResidualEnergy(MLPEnergy(5, hidden=(8,), n_fourier=4), 3.0, zero_init=True)
    assert log_partition_rule(V5, Uniform(5)) == "ais"
    assert log_partition_rule(ZeroEnergy(5), Uniform(5)) == "exact"


def test_residual_starts_at_zero_and_reproduces_its_base():
    base = _truth(4)
    V = ResidualEnergy(MLPEnergy(4, seed=1), zero_init=True)
    U = base.sample(300, generator=torch.Generator().manual_seed(0))
    assert torch.equal(V(U.float()), torch.zeros(300))
    lz = log_partition_importance(V, base, n_batches=2, generator=torch.Generator().manual_seed(1))
    assert lz.value == 0.0 and lz.stderr < 1e-9  # rounding of the weights only


@pytest.mark.parametrize("base", ["uniform", "gmm", "logit_gmm"])
def test_save_load_keeps_every_base(base, tmp_path):
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=300), rng.gamma(2.0, size=300)]
    est = EnergyDensity(base=base, random_state=0).fit(X)
    kind = {"uniform": Uniform, "gmm": TruncatedGMMBase, "logit_gmm": LogitGMMBase}[base]
    assert isinstance(est.base_, kind)
    est.save(tmp_path / "m.ebm")
    again = EnergyDensity.load(tmp_path / "m.ebm")
    assert isinstance(again.base_, kind)
    np.testing.assert_allclose(again.score_samples(X), est.score_samples(X), rtol=1e-12)
    assert again.selection_ == est.selection_  # the record travels in the model file


def test_high_dimensional_default_does_not_crash():
    """64-D with few rows per dimension (digits-like grid data): a usable model, finite
    scores, exact samples from the base envelope."""
    from sklearn.datasets import load_digits

    X = load_digits().data[:400]
    X = X[:, np.ptp(X, axis=0) > 0]
    with pytest.warns(GridDataWarning, match=r"\d+ column\(s\) take few values on a grid"):
        est = EnergyDensity(random_state=0).fit(X)  # integer pixel levels 0..16
    assert len(est.grid_columns_) > 40
    assert np.isfinite(est.score_samples(X)).all()
    assert est.selection_.chosen in ("base", "residual|base")
    S = est.sample(50, random_state=0)
    assert S.shape == (50, X.shape[1])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    shift=st.floats(-3, 3),
    noise=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**16),
)
def test_stack_weight_maximises_the_mixture_likelihood(n, shift, noise, seed):
    """ε* from bisection is the maximiser over [floor, ceil] of the concave mean log-mixture:
    no point of a fine grid does better (to the objective's curvature at the 1e-10 step)."""
    rng = np.random.default_rng(seed)
    r0 = rng.normal(0, 1, n)
    r = r0 + shift + noise * rng.normal(0, 1, n)
    eps = stack_weight(r, r0)
    assert MIX_FLOOR <= eps < 1.0

    def f(e):
        return float(np.mean(np.logaddexp(np.log1p(-e) + r, np.log(e) + r0)))

    grid = np.concatenate([np.geomspace(MIX_FLOOR, 0.5, 400), 1 - np.geomspace(1e-6, 0.5, 400)])
    assert f(eps) >= max(f(e) for e in grid) - 1e-9


def test_stacking_is_never_below_the_base_on_its_rows_and_shrinks_to_it():
    rng = np.random.default_rng(3)
    r0 = rng.normal(0, 1, 500)
    worse = r0 - 2.0 + rng.normal(0, 0.1, 500)  # a correction that only hurts: ε → 1
    assert stack_weight(worse, r0) > 1 - 1e-5
    better = r0 + 1.0 + rng.normal(0, 0.1, 500)  # one that always helps: ε at the floor
    assert stack_weight(better, r0) == MIX_FLOOR
    half = r0 + np.where(rng.random(500) < 0.5, 1.0, -1.0)  # helps half the rows: interior
    eps = stack_weight(half, r0)
    assert 0.05 < eps < 0.95
    mixed = np.logaddexp(np.log1p(-eps) + half, np.log(eps) + r0)
    assert mixed.mean() >= r0.mean()


def test_stacked_margin_of_one_se_is_a_two_se_test_near_the_null():
    """Near the null — where the stacked weight 1 − ε* of the correction is small — the stacked
    δ̄/SE(δ̄) is about half the t-statistic of e^{ℓ_c−ℓ_0} − 1 (module docstring of
    ebmfit.selection), so a 1-SE margin is a test at about 2 SE there."""
    rng = np.random.default_rng(5)
    ratios, halves = [], []
    for _ in range(200):
        r0 = rng.normal(0, 1, 2000)
        # q/p = e^{r − r0} with E[q/p] = e^{0.01}: near the null E_p[q/p] = 1 (p the truth)
        r = r0 + rng.normal(-0.045, 0.3, 2000) + 0.01
        eps = stack_weight(r, r0)
        d = np.logaddexp(np.log1p(-eps) + r, np.log(eps) + r0) - r0
        z = np.expm1(r - r0)
        t = z.mean() / (z.std(ddof=1) / np.sqrt(z.size))
        if t > 0.5 and 1 - eps < 0.25:  # a small weight: the linearisation applies
            ratios.append(d.mean() / (d.std(ddof=1) / np.sqrt(d.size)))
            halves.append(t / 2)
    assert len(ratios) > 50
    np.testing.assert_allclose(ratios, halves, rtol=0.15)


def test_few_scoring_rows_rule_out_a_candidate_on_another_base():
    """40 rows (fewer than MIN_ROWS_OTHER_BASE even cross-fitted): spline|uniform is scored
    and recorded but cannot be chosen, while the stacked spline|base still can."""
    from ebmfit.selection import MIN_ROWS_OTHER_BASE

    rng = np.random.default_rng(2)
    a = rng.uniform(0, 2 * np.pi, 40)
    X = np.c_[np.cos(a), np.sin(a)] * (1 + 0.05 * rng.normal(size=(40, 1)))
    est = EnergyDensity(random_state=0).fit(X)
    sel = est.selection_
    assert sel.n_val == 40 < MIN_ROWS_OTHER_BASE and "cross-fitted" in sel.rule
    assert sel.chosen != "spline|uniform"
    assert "spline|uniform: inf" in sel.rule and "spline|base: 1" in sel.rule
    other = next(c for c in sel.candidates if c.name == "spline|uniform")
    assert math.isfinite(other.val_loglik) and other.mix is not None


def test_the_base_alone_runs_through_gradient_samplers_and_ais():
    """V ≡ 0 has a graph with a zero gradient: AIS from the base gives log Z = 0 within its
    SE and MALA chains on the base-only model run (seen: density_nd's AIS check crashed with
    'element 0 of tensors does not require grad' once the default kept the base)."""
    from ebmfit.partition import log_partition_ais
    from ebmfit.samplers.integrators import energy_and_grad

    base = _truth(5)
    V = ZeroEnergy(5)
    u = base.sample(64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    v, g = energy_and_grad(V, u)
    assert torch.equal(v.detach(), torch.zeros(64)) and torch.equal(g, torch.zeros_like(g))
    lz = log_partition_ais(
        V, base, n_chains=256, n_temps=16, generator=torch.Generator().manual_seed(1)
    )
    assert abs(lz.value) <= 4 * lz.stderr + 1e-9


def test_auto_base_rival_family_needs_two_standard_errors():
    from ebmfit.fitting import best_on_validation

    truth = _truth(3)
    U = truth.sample(400, generator=torch.Generator().manual_seed(3))
    # a much better rival replaces the incumbent; a much worse one does not
    assert best_on_validation([Uniform(3), truth], U) is truth
    assert best_on_validation([truth, Uniform(3)], U) is truth
    # a rival within noise of the incumbent (the same family, slightly moved) on 20 rows
    moved = LogitGMMBase(truth.weights, truth.means + 0.02, truth.chols)
    inc = LogitGMMBase(truth.weights, truth.means - 0.02, truth.chols)
    assert best_on_validation([inc, moved], U[:20]) is inc
