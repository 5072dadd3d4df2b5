"""EnergyDensity above d = 3: persistent chains, a fitted base, AIS log Z, MCMC sampling."""

import functools
import math

import numpy as np
import pytest
import torch

from ebmfit import EnergyDensity
from ebmfit.base import TruncatedGMMBase, Uniform
from ebmfit.datasets import load_target
from ebmfit.energies.base import tensor_grid
from ebmfit.estimator import make_negative_phase
from ebmfit.partition import gauss_legendre_1d
from ebmfit.selection import cube_oscillation
from ebmfit.training import (
    ImportanceNegatives,
    PersistentChains,
    ShiftedGridNegatives,
    ShortRunChains,
)

SMALL = {"hidden": (32, 32), "n_fourier": 16}


@functools.cache
def _data5():
    t = load_target("mixture_5d")
    return t, t.sample(1500, random_state=0), t.sample(2000, random_state=1)


@functools.cache
def _fitted5(base):
    est = EnergyDensity(
        "mlp",
        energy_params=SMALL,
        low=0.0,
        high=1.0,
        max_iter=60,
        random_state=0,
        device="cpu",
        base=base,
        negative_phase="pcd",
        selection="none",  # the machinery of the requested model, not the selection
    )
    return est.fit(_data5()[1])


@pytest.fixture
def data5():
    return _data5()


@pytest.fixture(params=["uniform", "gmm"])
def fitted5(request):
    return _fitted5(request.param)


def test_fit_score_sample_in_5d(fitted5, data5):
    X_test = data5[2]
    est = fitted5
    assert isinstance(est.base_, TruncatedGMMBase if est.base == "gmm" else Uniform)
    lz = est.log_partition_
    # AIS, or importance sampling from the base where V's oscillation is provably small
    osc = cube_oscillation(est.energy_)
    assert lz.method.startswith("ais") or (lz.method == "importance" and osc <= 12.0)
    assert lz.bias == "lower" and 0 < lz.stderr < 0.1
    s = est.score_samples(X_test)
    assert s.shape == (len(X_test),) and np.isfinite(s).all()
    # better than the uniform density (log-density 0 on the unit cube) on held-out data; the
    # fitted base starts close to the truth (entropy of the target: -4.03 nats)
    assert est.score(X_test) > (3.5 if est.base == "gmm" else 0.1)
    x = est.sample(40, random_state=0)
    assert x.shape == (40, 5) and ((x >= 0) & (x <= 1)).all()
    assert est.model_.last_sample_info.method in ("exact", "mcmc")
    np.testing.assert_array_equal(x, est.sample(40, random_state=0))
    rows = [h for h in est.history_ if "val_nll" in h and h["iter"] > 0]
    assert rows and all("acceptance_rate" in h and "energy_gap" in h for h in rows)
    assert isinstance(est.fit_warnings_, list)


def test_gmm_base_beats_uniform_base_early(data5):
    """After the same 60 steps, the fitted base is far ahead (it starts near the data)."""
    X_test = data5[2]
    assert _fitted5("gmm").score(X_test) > _fitted5("uniform").score(X_test) + 0.5


def test_save_load_round_trip_keeps_the_base(fitted5, data5, tmp_path):
    _, _, X_test = data5
    fitted5.save(tmp_path / "m.ebm")
    est2 = EnergyDensity.load(tmp_path / "m.ebm")
    assert est2.base == fitted5.base and type(est2.base_) is type(fitted5.base_)
    np.testing.assert_allclose(est2.score_samples(X_test), fitted5.score_samples(X_test))


def test_negative_phase_resolution():
    U = torch.rand(50, 5, dtype=torch.float64)
    b = Uniform(5)
    assert isinstance(make_negative_phase("auto", 2, Uniform(2)), ShiftedGridNegatives)
    assert isinstance(make_negative_phase("auto", 5, b), PersistentChains)
    assert isinstance(make_negative_phase("cd", 5, b, U), ShortRunChains)
    assert isinstance(make_negative_phase("importance", 5, b), ImportanceNegatives)
    with pytest.raises(ValueError, match="limited to d <= 3"):
        make_negative_phase("exact", 5, b)
    X = np.random.default_rng(0).random((40, 5))
    with pytest.raises(ValueError, match="unknown negative_phase"):
        EnergyDensity(negative_phase="langevin").fit(X)
    with pytest.raises(ValueError, match="base must be"):
        EnergyDensity(base="kde").fit(X)
    # __init__ stores parameters unchanged (scikit-learn contract)
    est = EnergyDensity(negative_phase="cd", base="gmm")
    assert est.get_params()["negative_phase"] == "cd" and est.get_params()["base"] == "gmm"


@pytest.mark.parametrize("phase", ["cd", "importance"])
def test_other_negative_phases_run_in_5d(phase, data5):
    _, X, X_test = data5
    est = EnergyDensity(
        "mlp",
        energy_params={"hidden": (16,), "n_fourier": 8},
        low=0.0,
        high=1.0,
        max_iter=20,
        random_state=0,
        device="cpu",
        negative_phase=phase,
        log_partition="importance",
    ).fit(X)
    assert est.log_partition_.method == "importance"
    assert np.isfinite(est.score_samples(X_test)).all()


def test_gmm_base_in_2d_is_normalized():
    X = np.random.default_rng(0).normal([0.3, 0.7], [0.1, 0.05], (600, 2))
    est = EnergyDensity(
        "mlp",
        energy_params={"hidden": (16, 16), "n_fourier": 8},
        max_iter=40,
        random_state=0,
        device="cpu",
        base="gmm",
        selection="none",
    ).fit(X)
    assert est.energy_.family == "mlp" and isinstance(est.base_, TruncatedGMMBase)
    box = est.domain_
    ax, w = gauss_legendre_1d(96, 4)
    x = box.from_unit(tensor_grid([ax, ax])).numpy()
    wx = (w[:, None] * w[None, :]).reshape(-1).numpy() * np.prod(box.width)
    assert float((wx * np.exp(est.score_samples(x))).sum()) == pytest.approx(1.0, abs=1e-4)


def test_spline_correction_of_a_gmm_base_is_normalized_and_samples_exactly():
    """Linear energy + fitted base: the convex fit penalises V towards P; still a density."""
    X = np.random.default_rng(1).normal([0.3, 0.7], [0.1, 0.05], (600, 2))
    est = EnergyDensity(
        "spline",
        energy_params={"n_basis": 12},
        random_state=0,
        device="cpu",
        base="gmm",
        selection="none",
    ).fit(X)
    assert est.energy_.family == "spline" and isinstance(est.base_, TruncatedGMMBase)
    box = est.domain_
    ax, w = gauss_legendre_1d(96, 4)
    x = box.from_unit(tensor_grid([ax, ax])).numpy()
    wx = (w[:, None] * w[None, :]).reshape(-1).numpy() * np.prod(box.width)
    assert float((wx * np.exp(est.score_samples(x))).sum()) == pytest.approx(1.0, abs=1e-4)
    S = est.sample(500, random_state=0)
    assert est.model_.last_sample_info.method == "exact"
    assert np.all((S >= box.low) & (S <= box.high))


@functools.cache
def _bimodal_6d():
    """2 400 rows whose six coordinates are independent two-bump Beta mixtures: 64 modes, out
    of reach of a logit mixture chosen on 1 600 rows (it keeps 32 diagonal components), while
    a flow's per-coordinate splines model each marginal directly."""
    rng = np.random.default_rng(3)
    side = rng.integers(0, 2, (2400, 6))
    U = np.where(side == 1, rng.beta(12, 4, (2400, 6)), rng.beta(3, 12, (2400, 6)))
    return U[:2000], U[2000:]


def test_default_keeps_a_flow_base_where_it_wins_and_scores_it_honestly():
    """Above d = 3 with zuko installed, ``base="auto"`` also trains a coupling/autoregressive
    flow and keeps it when it beats the logit mixture by 2 SE on validation; the model
    (with its residual candidate trained on pooled importance negatives) stays normalized:
    its log Z by the selection's importance sampling agrees with a fresh AIS estimate."""
    pytest.importorskip("zuko")
    from ebmfit.base import FlowBase, LogitGMMBase

    U, U_test = _bimodal_6d()
    est = EnergyDensity(low=0.0, high=1.0, random_state=0).fit(U)
    assert isinstance(est.base_, FlowBase)
    gmm = LogitGMMBase.fit(torch.as_tensor(U[:1600]), torch.as_tensor(U[1600:]), random_state=0)
    with torch.no_grad():
        gmm_test = float(gmm.log_prob(torch.as_tensor(U_test)).mean())
    assert est.score(U_test) > gmm_test
    names = [c.name for c in est.selection_.candidates]
    assert names[:2] == ["base", "residual|base"]
    lz = est.log_partition_
    assert math.isfinite(lz.value) and lz.stderr < 0.05
    if est.energy_.family != "zero":
        ais = est.model_.log_partition("ais", cache=False, random_state=1)
        assert abs(ais.value - lz.value) < 4 * math.hypot(ais.stderr, lz.stderr)
    x = est.sample(50, random_state=0)
    assert x.shape == (50, 6) and ((x >= 0) & (x <= 1)).all()
