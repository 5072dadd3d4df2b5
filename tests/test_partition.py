"""log Z estimators against closed forms."""

import math

import numpy as np
import pytest
import torch
from scipy.special import ndtr

from ebmfit import Box, EnergyModel, LogZ
from ebmfit.base import Uniform
from ebmfit.energies import QuadraticEnergy, ZeroEnergy
from ebmfit.partition import (
    gauss_legendre_1d,
    log_partition_qmc,
    log_partition_quadrature,
    log_partition_rule,
)


def truncated_gaussian(mean, std):
    """Diagonal Gaussian energy on the cube and its exact log Z = sum log(sqrt(2π)σ ΔΦ)."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    e = QuadraticEnergy(len(mean), mean=mean, precision=np.diag(1 / std**2))
    logz = sum(
        math.log(math.sqrt(2 * math.pi) * s * (ndtr((1 - m) / s) - ndtr(-m / s)))
        for m, s in zip(mean, std, strict=True)
    )
    return e, logz


CASES = [
    ([0.3], [0.1]),
    ([0.3, 0.6], [0.1, 0.2]),
    ([0.05, 0.9], [0.15, 0.05]),
    ([0.5, 0.2, 0.8], [0.2, 0.1, 0.3]),
]


def test_gauss_legendre_1d_integrates_polynomials_exactly():
    x, w = gauss_legendre_1d(7, 3)
    assert abs(float(w.sum()) - 1) < 1e-14
    for k in range(6):  # 3 nodes per cell: exact to degree 5
        assert abs(float((w * x**k).sum()) - 1 / (k + 1)) < 1e-14


def test_shifted_rule_is_a_permutation_modulo_one():
    _, w0 = gauss_legendre_1d(4, 2)
    x1, w1 = gauss_legendre_1d(4, 2, shift=0.3)
    assert torch.all((x1 >= 0) & (x1 < 1))
    assert torch.allclose(w0, w1)


@pytest.mark.parametrize(("mean", "std"), CASES)
def test_quadrature_matches_closed_form(mean, std):
    e, truth = truncated_gaussian(mean, std)
    lz = log_partition_quadrature(e)
    assert isinstance(lz, LogZ) and lz.method == "gauss-legendre" and lz.n_evals > 0
    assert abs(lz.value - truth) < 1e-6
    assert lz.stderr < 1e-6


@pytest.mark.parametrize(("mean", "std"), CASES)
def test_qmc_within_4_standard_errors(mean, std):
    e, truth = truncated_gaussian(mean, std)
    lz = log_partition_qmc(e, n_points=2**12, n_rep=16, random_state=0)
    assert lz.method == "sobol-qmc" and lz.bias == "lower" and lz.stderr > 0
    assert abs(lz.value - truth) < 4 * lz.stderr


def test_qmc_works_beyond_quadrature_dimension():
    mean, std = [0.5, 0.4, 0.6, 0.3, 0.7], [0.3, 0.25, 0.3, 0.4, 0.35]
    e, truth = truncated_gaussian(mean, std)
    with pytest.raises(ValueError, match="d <= 3"):
        log_partition_quadrature(e)
    lz = EnergyModel(e, Box.unit(5)).log_partition("qmc", random_state=0)
    assert lz.method == "sobol-qmc"
    assert abs(lz.value - truth) < 4 * lz.stderr


def test_model_auto_is_the_estimators_rule():
    """``EnergyModel.log_partition()`` ("auto") is :func:`log_partition_rule`: AIS from the
    uniform base in 5-D (it was QMC before), exact for V = 0, checked quadrature in 2-D."""
    mean, std = [0.5, 0.4, 0.6, 0.3, 0.7], [0.3, 0.25, 0.3, 0.4, 0.35]
    e, truth = truncated_gaussian(mean, std)
    assert log_partition_rule(e, Uniform(5)) == "ais"
    lz = EnergyModel(e, Box.unit(5)).log_partition(random_state=0, n_chains=256, n_temps=32)
    assert lz.method == "ais-forward" and lz.bias == "lower"
    assert abs(lz.value - truth) < 4 * lz.stderr
    assert EnergyModel(ZeroEnergy(5), Box.unit(5)).log_partition() == LogZ(0.0, 0.0, "exact", 0)
    e2, truth2 = truncated_gaussian([0.3, 0.6], [0.1, 0.2])
    lz2 = EnergyModel(e2, Box.unit(2)).log_partition()
    assert lz2.method.startswith("gauss-legendre") and abs(lz2.value - truth2) < 1e-8
    with pytest.raises(ValueError, match="needs V = 0"):
        EnergyModel(e2, Box.unit(2)).log_partition("exact")
    with pytest.raises(ValueError, match="unknown log-partition method"):
        EnergyModel(e2, Box.unit(2)).log_partition("simpson")


def test_log_prob_integrates_to_one_on_a_scaled_box():
    e, _ = truncated_gaussian([0.3, 0.6], [0.1, 0.2])
    model = EnergyModel(e, Box([-2.0, 10.0], [3.0, 11.0]))
    x, w = gauss_legendre_1d(64, 4)
    g0 = -2 + 5 * x.numpy()
    g1 = 10 + 1 * x.numpy()
    G0, G1 = np.meshgrid(g0, g1, indexing="ij")
    W = np.outer(w.numpy() * 5, w.numpy() * 1)
    p = np.exp(model.log_prob(np.c_[G0.ravel(), G1.ravel()])).reshape(G0.shape)
    assert abs((p * W).sum() - 1) < 1e-8


def test_logz_serialises():
    lz = LogZ(1.5, 0.01, "x", 10, "lower")
    assert LogZ.from_dict(lz.to_dict()) == lz
    assert lz.interval(2) == (1.48, 1.52)
    assert float(lz) == 1.5
