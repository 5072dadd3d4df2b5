"""EnergyDensity: the scikit-learn contract, and densities that are right and normalized.

1. ``parametrize_with_checks`` (scikit-learn's ``check_estimator``, one test per check) on a
   small configuration, plus Pipeline, GridSearchCV (scored by the mean log-likelihood),
   ``get_params``/``set_params``/``clone``, learned attributes, shapes and reproducibility.
2. Accuracy against a closed form: independent normals truncated to a box
   (``scipy.stats.truncnorm``), with tolerances derived from the standard error of the test
   average and the asymptotic size of the estimation error (see :func:`test_accuracy`).
3. Normalization in the user's coordinates on non-unit boxes, by an independent quadrature
   of ``exp(score_samples)`` (see :func:`test_normalized_in_user_coordinates`).

The contract checks run on the default ``EnergyDensity()`` itself — the estimator users get,
with its fitted logit-GMM base, residual energy and selection — with no expected failures.
The other tests here exercise the fit machinery with a small Legendre energy on the uniform
base (``_small``); the default's own behaviour is tested in ``tests/test_selection.py``.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from ebmfit import Box, EnergyDensity, LogZ
from ebmfit.energies import LegendreEnergy

# Checks that may fail, with the reason. Empty: every check passes. (check_array_api_input
# is skipped by scikit-learn itself unless SCIPY_ARRAY_API=1 is set before scipy is imported;
# EnergyDensity computes in torch and does not claim array-API support.)
EXPECTED_FAILED_CHECKS: dict[str, str] = {}

CONTRACT_ESTIMATOR = EnergyDensity()


@parametrize_with_checks(
    [CONTRACT_ESTIMATOR], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS
)
def test_sklearn_contract(estimator, check):
    check(estimator)


def _small(**kw) -> EnergyDensity:
    kw.setdefault("energy_params", {"degree": 4})
    kw.setdefault("max_iter", 20)
    kw.setdefault("random_state", 0)
    kw.setdefault("device", "cpu")
    kw.setdefault("base", "uniform")
    return EnergyDensity("legendre", **kw)


def _blob(n: int, d: int = 2, seed: int = 0) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(0.45, 0.15, size=(n, d)), 0.0, 1.0)


# --------------------------------------------------------------------------- parameters
def test_init_stores_parameters_unchanged():
    params = {"degree": 3}
    low, high = [0.0, -1.0], [1.0, 2.0]
    est = EnergyDensity("legendre", energy_params=params, low=low, high=high, margin=0.3)
    assert est.energy_params is params and est.low is low and est.high is high
    init = set(inspect.signature(EnergyDensity.__init__).parameters) - {"self"}
    assert set(est.get_params()) == init


def test_get_set_params_clone_round_trip():
    est = _small(low=0.0, high=1.0, margin=0.1, clip=True, validation_fraction=0.3)
    twin = clone(est)
    assert twin is not est
    assert twin.get_params() == est.get_params()
    assert est.set_params(max_iter=7, energy_params={"degree": 2}) is est
    assert est.get_params()["max_iter"] == 7
    assert est.get_params()["energy_params"] == {"degree": 2}
    assert twin.get_params()["max_iter"] == 20  # the clone is independent
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(not_a_parameter=1)


def test_fit_does_not_change_parameters():
    params, low, high = {"degree": 3}, [0.0, 0.0], [1.0, 1.0]
    energy = LegendreEnergy(2, degree=3)
    for est in (
        _small(energy_params=params, low=low, high=high, max_iter=5),
        EnergyDensity(energy, low=low, high=high, max_iter=5, random_state=0),
    ):
        before = clone(est).get_params()
        est.fit(_blob(100))
        after = est.get_params()
        assert after.keys() == before.keys()
        for key, value in after.items():
            if key != "energy":
                assert value == before[key], key
    assert params == {"degree": 3} and low == [0.0, 0.0]
    assert torch.count_nonzero(energy.coef) == 0  # the energy passed in is copied, not trained


def test_learned_attributes_end_with_underscore():
    est = _small()
    init = set(est.get_params())
    assert not [a for a in vars(est) if a not in init]  # nothing learned before fit
    est.fit(_blob(100))
    learned = [a for a in vars(est) if a not in init and not a.startswith("_")]
    assert learned and all(a.endswith("_") for a in learned), learned
    for name in ("model_", "domain_", "energy_", "log_partition_", "n_iter_", "history_"):
        assert hasattr(est, name), name
    assert est.n_features_in_ == 2
    assert isinstance(est.domain_, Box)
    assert est.n_iter_ >= 1 and est.fit_time_ > 0


def test_unfitted_estimator_raises():
    est = _small()
    for call in (lambda: est.score_samples(_blob(5)), lambda: est.sample(5), lambda: est.save("x")):
        with pytest.raises(NotFittedError):
            call()


# --------------------------------------------------------------------------- outputs
def test_score_samples_and_score():
    est = _small().fit(_blob(200))
    X = _blob(37, seed=1)
    lp = est.score_samples(X)
    assert lp.shape == (37,) and lp.dtype == np.float64
    assert np.isfinite(lp).all()
    assert est.score(X) == pytest.approx(lp.mean(), rel=1e-15)
    assert est.score_samples(X[:1]).shape == (1,)
    np.testing.assert_array_equal(est.score_samples(X.tolist()), lp)  # array-likes
    np.testing.assert_array_equal(
        est.score_samples(np.asfortranarray(X.astype(np.float32))),
        est.score_samples(X.astype(np.float32)),
    )


def test_log_partition_is_a_logz_with_error():
    est = _small().fit(_blob(200))
    lz = est.log_partition_
    assert isinstance(lz, LogZ)
    assert math.isfinite(lz.value)
    assert math.isfinite(lz.stderr) and lz.stderr >= 0
    assert lz.method == "gauss-legendre" and lz.bias == "none"
    assert isinstance(lz.n_evals, int) and lz.n_evals > 0
    qmc = _small(log_partition="qmc").fit(_blob(200)).log_partition_
    assert qmc.method == "sobol-qmc" and qmc.stderr > 0 and qmc.n_evals > 0
    # the two rules agree within the QMC standard error (4 SE) plus the quadrature's error
    assert abs(qmc.value - lz.value) <= 4 * qmc.stderr + 4 * lz.stderr + 1e-12


SAMPLE_BOX = ([-3.0, 10.0], [5.0, 12.0])


@pytest.fixture(scope="module")
def box_model() -> EnergyDensity:
    low, high = np.asarray(SAMPLE_BOX[0]), np.asarray(SAMPLE_BOX[1])
    X = low + _blob(300) * (high - low)
    return _small(low=low, high=high).fit(X)


def test_sample_shape_box_and_reproducibility(box_model):
    S = box_model.sample(400, random_state=0)
    assert S.shape == (400, 2) and S.dtype == np.float64
    low, high = SAMPLE_BOX
    assert np.all((low <= S) & (S <= high))
    np.testing.assert_array_equal(S, box_model.sample(400, random_state=0))
    np.testing.assert_array_equal(
        box_model.sample(50, random_state=np.random.RandomState(3)),
        box_model.sample(50, random_state=np.random.RandomState(3)),
    )
    assert not np.array_equal(S, box_model.sample(400, random_state=1))
    assert box_model.sample(1, random_state=0).shape == (1, 2)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        box_model.sample(0)


def test_samples_follow_the_density(box_model):
    """The sample mean matches the mean under ``exp(score_samples)`` (by quadrature) within
    4 standard errors of the sample mean."""
    n = 4000
    S = box_model.sample(n, random_state=2)
    (xs, wx), (ys, wy) = (_gl(lo, hi, 24) for lo, hi in zip(*SAMPLE_BOX, strict=True))
    G = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    w = np.exp(box_model.score_samples(G)) * np.outer(wx, wy).ravel()
    mean = (w[:, None] * G).sum(0)
    se = S.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(S.mean(0) - mean) <= 4 * se), (S.mean(0), mean, se)


def test_fit_is_reproducible_with_random_state():
    X = _blob(150)
    a, b = _small(random_state=4).fit(X), _small(random_state=4).fit(X)
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))
    mlp = {"hidden": (16,), "n_fourier": 8}
    a = EnergyDensity("mlp", energy_params=mlp, max_iter=10, random_state=4).fit(X)
    b = EnergyDensity("mlp", energy_params=mlp, max_iter=10, random_state=4).fit(X)
    c = EnergyDensity("mlp", energy_params=mlp, max_iter=10, random_state=5).fit(X)
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))
    assert not np.array_equal(a.score_samples(X), c.score_samples(X))


# --------------------------------------------------------------------------- composition
def test_pipeline_with_scaler():
    rng = np.random.default_rng(0)
    X = rng.normal([100.0, -5.0], [20.0, 0.1], size=(300, 2))
    pipe = Pipeline([("scale", MinMaxScaler()), ("density", _small(low=0.0, high=1.0))]).fit(X)
    Xt = pipe["scale"].transform(X)
    np.testing.assert_array_equal(pipe.score_samples(X), pipe["density"].score_samples(Xt))
    assert pipe.score(X) == pytest.approx(pipe["density"].score(Xt))
    assert np.isfinite(pipe.score(X))


def test_pipeline_with_function_transformer():
    X = np.exp(np.random.default_rng(1).normal(0.0, 0.5, size=(300, 2)))  # log-normal
    pipe = Pipeline([("log", FunctionTransformer(np.log, np.exp)), ("density", _small())])
    pipe.fit(X)
    assert pipe.score_samples(X).shape == (300,)
    np.testing.assert_array_equal(pipe.score_samples(X), pipe["density"].score_samples(np.log(X)))
    S = pipe["log"].inverse_transform(pipe["density"].sample(20, random_state=0))
    assert S.shape == (20, 2) and np.all(S > 0)


def test_grid_search_over_energy_and_energy_params():
    """A bimodal 1-D density: a quadratic energy (one mode) must lose to degree 10, and the
    search is scored by the held-out mean log-likelihood (``score``)."""
    rng = np.random.default_rng(0)
    X = np.where(rng.random(600) < 0.5, rng.normal(0.25, 0.05, 600), rng.normal(0.7, 0.07, 600))
    X = np.clip(X, 0.0, 1.0)[:, None]
    grid = [
        {"energy": ["legendre"], "energy_params": [{"degree": 2}, {"degree": 10}]},
        {"energy": ["cosine"], "energy_params": [{"n_freq": 12}]},
    ]
    est = EnergyDensity(
        low=0.0, high=1.0, max_iter=10, random_state=0, device="cpu", base="uniform"
    )
    search = GridSearchCV(est, grid, cv=KFold(3, shuffle=True, random_state=0)).fit(X)
    scores = dict(
        zip(
            [f"{p['energy']}{p['energy_params']}" for p in search.cv_results_["params"]],
            search.cv_results_["mean_test_score"],
            strict=True,
        )
    )
    assert all(np.isfinite(s) for s in scores.values()), scores
    assert scores["legendre{'degree': 10}"] > scores["legendre{'degree': 2}"] + 0.1, scores
    assert search.best_params_ != {"energy": "legendre", "energy_params": {"degree": 2}}
    best = search.best_estimator_
    assert best.energy == search.best_params_["energy"]
    assert search.score(X) == pytest.approx(best.score(X))


# --------------------------------------------------------------------------- accuracy
# independent normals truncated to a non-unit box: log p is a quadratic (no cross term)
ACC_LOW, ACC_HIGH = np.array([-1.0, 0.0]), np.array([3.0, 2.0])
ACC_MU, ACC_SD = np.array([0.8, 1.2]), np.array([0.9, 0.5])
_A, _B = (ACC_LOW - ACC_MU) / ACC_SD, (ACC_HIGH - ACC_MU) / ACC_SD


def _true_log_prob(X: np.ndarray) -> np.ndarray:
    return stats.truncnorm.logpdf(X, _A, _B, loc=ACC_MU, scale=ACC_SD).sum(axis=1)


def _true_sample(n: int, seed: int) -> np.ndarray:
    return stats.truncnorm.rvs(_A, _B, loc=ACC_MU, scale=ACC_SD, size=(n, 2), random_state=seed)


@pytest.mark.parametrize(
    ("energy", "params", "k"),
    [("legendre", {"degree": 2}, 5), ("spline", {"n_basis": 12}, 12**2 - 1)],
)
def test_accuracy(energy, params, k):
    r"""Fitted log-densities match the truth on fresh test points.

    With :math:`\delta = \log\hat q - \log p` on m test points from p, the mean of δ estimates
    :math:`-\mathrm{KL}(p\|\hat q) \le 0`, with standard error SE = sd(δ)/√m.  For a
    maximum-likelihood fit with k free parameters from n points,
    :math:`2n\,\mathrm{KL} \approx \chi^2_k` (the truth lies in both families: a quadratic
    energy for Legendre of degree 2, and the null space of the third-order spline penalty);
    the roughness penalty only shrinks the effective k.  So, with
    :math:`b = (k + 4\sqrt{2k})/(2n)` (χ²_k's mean plus four of its standard deviations):

    * mean δ ≤ 4 SE: the model is not better than the truth (catches an unnormalized density);
    * mean δ ≥ −(b + 4 SE): the mean log-likelihood is within the estimation error of the truth's;
    * mean |δ| ≤ √(2 (b + 4 SE)): for small δ, :math:`E_p[\delta^2] \approx 2\,\mathrm{KL}`.
    """
    n, m = 2000, 20_000
    # the truth lies in the family on the uniform base: the χ² argument below is for that fit
    est = EnergyDensity(
        energy, energy_params=params, low=ACC_LOW, high=ACC_HIGH, random_state=0, base="uniform"
    )
    est.fit(_true_sample(n, seed=0))
    X = _true_sample(m, seed=1)
    delta = est.score_samples(X) - _true_log_prob(X)
    se = delta.std(ddof=1) / math.sqrt(m)
    b = (k + 4 * math.sqrt(2 * k)) / (2 * n)
    assert delta.mean() <= 4 * se, (delta.mean(), se)
    assert delta.mean() >= -(b + 4 * se), (delta.mean(), se, b)
    assert np.abs(delta).mean() <= math.sqrt(2 * (b + 4 * se)), (np.abs(delta).mean(), b, se)
    assert est.score(X) == pytest.approx(_true_log_prob(X).mean(), abs=b + 8 * se)


# --------------------------------------------------------------------------- normalization
def _gl(lo: float, hi: float, panels: int, q: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss–Legendre rule on [lo, hi]: ``panels`` equal panels of ``q`` nodes."""
    t, w = np.polynomial.legendre.leggauss(q)
    edges = np.linspace(lo, hi, panels + 1)
    mid, half = (edges[:-1] + edges[1:]) / 2, np.diff(edges) / 2
    return (mid[:, None] + half[:, None] * t).ravel(), (half[:, None] * w).ravel()


def _integral(est: EnergyDensity, low, high, panels: int) -> float:
    rules = [_gl(lo, hi, panels) for lo, hi in zip(low, high, strict=True)]
    pts = np.stack(np.meshgrid(*[r[0] for r in rules], indexing="ij"), -1).reshape(-1, len(low))
    w = np.ones(())
    for r in rules:
        w = np.multiply.outer(w, r[1])
    return float(np.exp(est.score_samples(pts)) @ w.ravel())


FAMILIES = {
    "spline": {"n_basis": 12},
    "legendre": {"degree": 6},
    "cosine": {"n_freq": 8},
    "mlp": {"hidden": (16,), "n_fourier": 8},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize(
    ("low", "high"), [([-3.0, 10.0], [5.0, 12.0]), ([100.0], [250.0])], ids=["2d", "1d"]
)
def test_normalized_in_user_coordinates(family, low, high):
    r""":math:`\int_K e^{\texttt{score\_samples}(x)}\,dx = 1` on a box of volume ≠ 1.

    The integral is computed by composite Gauss–Legendre (8 nodes on 36 panels per axis, in
    x), independently of the model's rule; its error is estimated by the difference with 18
    panels (the spline knots, at multiples of 1/9 of each side, are panel edges of both rules,
    so the integrand is smooth on every panel).  The model normalizes with its own log Z,
    whose stated error is ``log_partition_.stderr``.  Tolerance: 4 × (both errors) plus
    round-off of the energy's dtype (float32 for the MLP).  Without the Jacobian of the map to
    the unit cube the integral would be the box volume (16 or 150).
    """
    low, high = np.asarray(low), np.asarray(high)
    d = low.size
    X = low + _blob(500, d) * (high - low)
    est = EnergyDensity(
        family,
        energy_params=FAMILIES[family],
        low=low,
        high=high,
        max_iter=20,
        random_state=0,
        base="uniform",  # the family's own normalization (the default's: test_selection.py)
        selection="none",
    ).fit(X)
    coarse, fine = _integral(est, low, high, 18), _integral(est, low, high, 36)
    eps = torch.finfo(est.energy_.param_dtype()).eps
    tol = 4 * (est.log_partition_.stderr + abs(fine - coarse)) + 10 * eps
    assert abs(fine - 1.0) <= tol, (fine, coarse, est.log_partition_)
