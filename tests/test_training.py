"""Fit loops: the convex fit reaches the optimum; the SGD loop learns and reports divergence."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from ebmfit.base import Uniform
from ebmfit.energies import CosineEnergy, LegendreEnergy, MLPEnergy, SplineEnergy
from ebmfit.energies.base import Energy
from ebmfit.partition import gauss_legendre_1d
from ebmfit.training import (
    FitError,
    FitWarning,
    ImportanceNegatives,
    ShiftedGridNegatives,
    fit_convex,
    fit_sgd,
)
from ebmfit.training.convex import _objective, training_rule
from ebmfit.training.fit import validation_nll


def _data(n=1500, seed=0):
    g = np.random.default_rng(seed)
    x = np.clip(g.normal([0.35, 0.6], [0.12, 0.08], size=(n, 2)), 1e-3, 1 - 1e-3)
    return torch.as_tensor(x)


@pytest.mark.parametrize("cls", [LegendreEnergy, CosineEnergy, SplineEnergy])
def test_convex_fit_reaches_the_optimum_of_its_objective(cls):
    """At the returned θ, the penalised objective's gradient vanishes and scipy finds nothing better."""
    e = cls(2, 5)
    U = _data()
    lam = 1e-3
    fit_convex(e, U[:1200], U[1200:], lambdas=[lam], refit=False)
    cells, nodes = training_rule(e)
    ax, w = gauss_legendre_1d(cells, nodes)
    logw = (torch.log(w)[:, None] + torch.log(w)[None, :]).reshape(-1)
    phi = e.mean_features(U[:1200])
    theta = e.coef.detach().clone().requires_grad_(True)
    obj, _ = _objective(e, theta, phi, [ax, ax], logw, lam)
    (g,) = torch.autograd.grad(obj, theta)
    assert float((g * e.mask).abs().max()) < 1e-5

    mask = e.mask.bool()

    def f(x):
        t = torch.zeros_like(theta)
        t[mask] = torch.as_tensor(x)
        t.requires_grad_(True)
        o, _ = _objective(e, t, phi, [ax, ax], logw, lam)
        (gr,) = torch.autograd.grad(o, t)
        return float(o.detach()), gr[mask].numpy()

    ref = minimize(
        f,
        np.zeros(int(mask.sum())),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15},
    )
    assert float(obj) <= ref.fun + 1e-8


def test_penalty_path_selects_by_validation_and_refits():
    e = SplineEnergy(2, 12)
    U = _data()
    res = fit_convex(e, U[:1200], U[1200:])
    vals = [h["val_nll"] for h in res.history if "val_nll" in h]
    assert res.best_val_nll == min(vals)
    assert "refit_all_nll" in res.history[-1]
    # the fitted model is a sensible density: better than uniform on held-out data
    assert validation_nll(e, U[1200:], Uniform(2)) < -0.5


def test_sgd_fit_improves_validation_nll_and_keeps_best_state():
    torch.manual_seed(0)
    e = MLPEnergy(2, hidden=(32, 32), n_fourier=16)
    U = _data()
    v0 = validation_nll(e, U[1200:], Uniform(2))
    res = fit_sgd(
        e,
        U[:1200],
        U[1200:],
        ShiftedGridNegatives(2, 48),
        max_iter=200,
        lr=5e-3,
        val_every=25,
        generator=torch.Generator().manual_seed(0),
    )
    v1 = validation_nll(e, U[1200:], Uniform(2))
    assert v1 < v0 - 0.5
    assert v1 == pytest.approx(res.best_val_nll, abs=1e-9)
    assert min(h["val_nll"] for h in res.history if "val_nll" in h) == pytest.approx(v1, abs=1e-9)


def test_sgd_fit_in_higher_dimension_with_importance_negatives():
    torch.manual_seed(0)
    e = MLPEnergy(4, hidden=(32, 32), n_fourier=8, fourier_scale=1.0)
    g = np.random.default_rng(0)
    U = torch.as_tensor(np.clip(g.normal(0.5, 0.1, size=(800, 4)), 0.001, 0.999))
    v0 = validation_nll(e, U[600:], Uniform(4))
    fit_sgd(
        e,
        U[:600],
        U[600:],
        ImportanceNegatives(4, 2048),
        max_iter=200,
        lr=1e-2,
        val_every=20,
        generator=torch.Generator().manual_seed(0),
    )
    # the truth (independent N(0.5, 0.1²) per axis) has NLL ≈ −3.5; uniform has 0
    assert validation_nll(e, U[600:], Uniform(4)) < v0 - 2.5


class _Exploding(Energy):
    """An energy that returns NaN once its parameter leaves a safe range (a real divergence)."""

    family = "test"

    def __init__(self):
        super().__init__()
        self.dim = 2
        self.a = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, u):
        v = self.a * (u[:, 0] - 0.5)
        return torch.where(self.a.abs() > 0.05, torch.full_like(v, math.nan), v)


def test_divergence_is_detected_rolled_back_then_reported():
    """A run that keeps diverging stops, keeps its best validated state and warns."""
    e = _Exploding()
    U = _data(400)
    with pytest.warns(FitWarning, match="diverged.*kept the best validated state"):
        res = fit_sgd(
            e,
            U[:300],
            U[300:],
            ShiftedGridNegatives(2, 16),
            max_iter=500,
            lr=1.0,
            val_every=5,
            max_retries=2,
            generator=torch.Generator().manual_seed(0),
        )
    assert res.stop_reason == "diverged"
    assert any("kept the best validated state" in h.get("event", "") for h in res.history)
    # the parameter was rolled back to a finite, good state — never patched with a constant
    assert torch.isfinite(e(U)).all()
    assert res.best_val_nll == pytest.approx(validation_nll(e, U[300:], Uniform(2)))


class _AlwaysNaN(_Exploding):
    def forward(self, u):
        return torch.full_like(u[:, 0], math.nan) + self.a


def test_divergence_without_a_usable_state_raises():
    """FitError only when no validated state is usable (here: NaN from the start)."""
    U = _data(200)
    with pytest.raises(FitError, match="no validated state is usable"):
        fit_sgd(
            _AlwaysNaN(),
            U[:150],
            U[150:],
            ShiftedGridNegatives(2, 16),
            max_iter=50,
            val_every=5,
            max_retries=1,
            generator=torch.Generator().manual_seed(0),
        )
