"""log Z in any dimension: importance sampling from the base, forward/reverse AIS, the sandwich.

References are exact: composite Gauss–Legendre quadrature at d = 2 (its own error ~1e-9), the
closed form of a truncated Gaussian with diagonal precision at d = 5 and 10
(:math:`\\prod_i \\sqrt{2\\pi/\\lambda_i}\\,[\\Phi(b_i) - \\Phi(a_i)]`), and targets whose log-density
is normalized (log Z = 0).  Tolerances are 4 standard errors of the estimator under test (plus
the reference's own error); every stochastic call has a fixed seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from ebmfit.base import BaseMeasure
from ebmfit.datasets import load_target
from ebmfit.energies import MLPEnergy, QuadraticEnergy
from ebmfit.partition import (
    AISDiagnostics,
    AISSandwich,
    ISDiagnostics,
    LogZ,
    ais_sandwich,
    ais_schedule,
    log_partition_ais,
    log_partition_importance,
    log_partition_quadrature,
    log_partition_reverse_ais,
)
from ebmfit.samplers.exact import sample_exact


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def diag_quadratic(d: int, lam_lo: float, lam_hi: float, seed: int):
    """V = ½ Σ λ_i (u_i − μ_i)², μ ~ U(0,1) (mass near faces), with its exact log Z."""
    rng = np.random.default_rng(seed)
    mu = rng.random(d)
    lam = rng.uniform(lam_lo, lam_hi, d)
    r = np.sqrt(lam)
    log_z = float(
        np.sum(
            0.5 * np.log(2 * np.pi / lam)
            + np.log(special.ndtr((1 - mu) * r) - special.ndtr(-mu * r))
        )
    )
    return QuadraticEnergy(
        d, mean=torch.as_tensor(mu), precision=torch.diag(torch.as_tensor(lam))
    ), log_z


def bumpy_mlp() -> MLPEnergy:
    """A float32 Fourier-feature MLP with a few nats of structure, like a fitted 2-D model."""
    e = MLPEnergy(2, hidden=(32, 32), n_fourier=16, fourier_scale=2.0, seed=3)
    with torch.no_grad():
        e.net[-1].weight.mul_(300.0)
    return e


def within(est: LogZ, truth: float, ref_err: float = 0.0, k: float = 4.0) -> bool:
    return abs(est.value - truth) <= k * math.hypot(est.stderr, ref_err) + 1e-12


# ----------------------------------------------------------------------------- importance
def test_importance_matches_quadrature_2d():
    e = bumpy_mlp()
    ref = log_partition_quadrature(e)
    r = log_partition_importance(e, n_samples=8192, n_batches=4, generator=gen(0))
    assert isinstance(r, LogZ) and isinstance(r.diagnostics, ISDiagnostics)
    assert r.bias == "lower" and r.method == "importance" and r.n_evals == 32768
    assert r.diagnostics.batch_logz.shape == (4,)
    assert 1.0 <= r.diagnostics.ess <= 32768 and 0 < r.diagnostics.max_weight <= 1
    assert within(r, ref.value, ref.stderr)


@pytest.mark.parametrize("d", [5, 10])
def test_importance_matches_closed_form(d):
    e, truth = diag_quadratic(d, 2.0, 20.0, seed=d)
    r = log_partition_importance(e, n_samples=16384, n_batches=4, generator=gen(d))
    assert r.diagnostics.ess > 100  # the SE is only trusted with a fair ESS
    assert within(r, truth)


def test_importance_constant_energy_is_exact():
    e = QuadraticEnergy(3, precision=torch.zeros(3, 3))
    r = log_partition_importance(e, n_samples=100, n_batches=3, generator=gen(1))
    assert r.value == pytest.approx(0.0, abs=1e-12)
    assert r.stderr == pytest.approx(0.0, abs=1e-6) and r.diagnostics.ess == pytest.approx(300)


def test_importance_rejects_bad_arguments():
    e = QuadraticEnergy(2)
    with pytest.raises(ValueError):
        log_partition_importance(e, n_samples=1, n_batches=1, generator=gen(0))
    with pytest.raises(TypeError):
        log_partition_importance(e, n_samples=10, n_batches=2, generator=0)


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("kind", ["linear", "geometric", "sigmoid"])
def test_schedules(kind):
    b = ais_schedule(50, kind)
    assert b.shape == (51,) and b.dtype == torch.float64
    assert b[0] == 0 and b[-1] == 1 and bool((b.diff() > 0).all())
    assert ais_schedule(1, kind).tolist() == [0.0, 1.0]


def test_schedule_errors():
    with pytest.raises(ValueError):
        ais_schedule(0)
    with pytest.raises(ValueError):
        ais_schedule(10, "cosine")
    e = QuadraticEnergy(2)
    with pytest.raises(ValueError, match="strictly increasing"):
        log_partition_ais(e, schedule=torch.tensor([0.0, 0.7, 0.5, 1.0]), generator=gen(0))


# ----------------------------------------------------------------------------- forward AIS
def test_ais_matches_quadrature_2d_mlp():
    e = bumpy_mlp()
    ref = log_partition_quadrature(e)
    r = log_partition_ais(e, n_chains=256, n_temps=32, generator=gen(2))
    assert isinstance(r, LogZ) and isinstance(r.diagnostics, AISDiagnostics)
    assert r.bias == "lower" and r.method == "ais-forward"
    g = r.diagnostics
    assert g.log_weights.shape == (256,) and g.samples.shape == (256, 2)
    assert g.betas.shape == (33,) and g.step_sizes.shape == (32,) and g.acceptance.shape == (32,)
    assert bool(((g.samples >= 0) & (g.samples <= 1)).all())
    assert within(r, ref.value, ref.stderr)


@pytest.mark.parametrize("d", [5, 10])
@pytest.mark.parametrize(("kernel", "n_temps"), [("mala", 100), ("hmc", 100)])
def test_ais_matches_closed_form(d, kernel, n_temps):
    e, truth = diag_quadratic(d, 20.0, 300.0, seed=10 + d)
    r = log_partition_ais(
        e, n_chains=256, n_temps=n_temps * d // 5, kernel=kernel, generator=gen(d)
    )
    assert r.diagnostics.ess > 25  # enough for the delta-method SE to be meaningful
    assert 0.2 < float(r.diagnostics.acceptance.mean()) < 0.99
    assert within(r, truth)


def test_ais_beats_importance_on_a_sharp_model():
    """At d = 10 with precisions up to 300 the base is a poor proposal; annealing is not."""
    e, truth = diag_quadratic(10, 20.0, 300.0, seed=20)
    is_ = log_partition_importance(e, n_samples=4096, n_batches=4, generator=gen(3))
    ais = log_partition_ais(e, n_chains=256, n_temps=64, generator=gen(3))
    assert ais.diagnostics.ess / 256 > 10 * is_.diagnostics.ess / 16384
    assert abs(ais.value - truth) < 0.5


def test_ais_fixed_schedule_and_step_size_skip_the_pilot_and_chunk():
    e, truth = diag_quadratic(5, 20.0, 100.0, seed=4)
    betas = ais_schedule(100, "geometric", beta_min=1e-3)
    r = log_partition_ais(
        e, n_chains=200, schedule=betas, step_size=0.1, chunk=64, generator=gen(4)
    )
    assert r.n_evals == 200 * (1 + 100)  # start + one MALA step per temperature, no pilot
    assert torch.equal(r.diagnostics.betas, betas) and bool((r.diagnostics.step_sizes == 0.1).all())
    assert within(r, truth)


def test_ais_is_reproducible_with_a_seed():
    e, _ = diag_quadratic(3, 20.0, 100.0, seed=5)
    a = log_partition_ais(e, n_chains=64, n_temps=16, generator=gen(7))
    b = log_partition_ais(e, n_chains=64, n_temps=16, generator=gen(7))
    assert a == b and torch.equal(a.diagnostics.log_weights, b.diagnostics.log_weights)


def test_ais_standard_error_is_calibrated():
    """20 independent runs: z = (log Ẑ − log Z)/SE has mean ≈ 0 and sd ≈ 1.

    Bounds: mean within ±3/√20 and the sample variance inside the chi-square(19) 0.1%–99.9%
    interval, i.e. sd ∈ [0.58, 1.52].
    """
    e, truth = diag_quadratic(5, 20.0, 200.0, seed=6)
    g = gen(8)
    z = []
    for _ in range(20):
        r = log_partition_ais(e, n_chains=256, n_temps=48, generator=g)
        z.append((r.value - truth) / r.stderr)
    z = np.asarray(z)
    lo, hi = stats.chi2.ppf([0.001, 0.999], 19) / 19
    assert abs(z.mean()) < 3 / math.sqrt(20)
    assert lo <= z.var(ddof=1) <= hi


class _TruncNormBase(BaseMeasure):
    """Product of N(m, s²) truncated to [0, 1]: exact sampler and differentiable log_prob."""

    def __init__(self, m: np.ndarray, s: np.ndarray):
        self.dim = len(m)
        self.m, self.s = m, s
        self.log_norm = float(
            np.sum(
                np.log(s * math.sqrt(2 * math.pi))
                + np.log(special.ndtr((1 - m) / s) - special.ndtr(-m / s))
            )
        )

    def log_prob(self, u):
        m = torch.as_tensor(self.m, dtype=u.dtype)
        s = torch.as_tensor(self.s, dtype=u.dtype)
        return -0.5 * (((u - m) / s) ** 2).sum(-1) - self.log_norm

    def sample(self, n, *, generator=None, dtype=torch.float64, device=None):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        a, b = -self.m / self.s, (1 - self.m) / self.s
        x = stats.truncnorm.rvs(
            a, b, loc=self.m, scale=self.s, size=(n, self.dim), random_state=rng
        )
        return torch.as_tensor(x, dtype=dtype, device=device)


def test_ais_and_importance_with_a_non_uniform_base():
    """P = truncated N(m, s²) per axis, V = ½λ(u − μ)²: then e^{−V} dP is a truncated Gaussian and
    Z = E_P[e^{−V}] has a closed form (product of Gaussians)."""
    d = 4
    rng = np.random.default_rng(9)
    m, s = rng.uniform(0.3, 0.7, d), rng.uniform(0.15, 0.3, d)
    mu, lam = rng.uniform(0.2, 0.8, d), rng.uniform(30.0, 100.0, d)
    base = _TruncNormBase(m, s)
    prec = 1 / s**2 + lam
    mean = (m / s**2 + lam * mu) / prec
    const = -0.5 * (m**2 / s**2 + lam * mu**2 - mean**2 * prec)
    r = np.sqrt(prec)
    log_int = np.sum(
        const + 0.5 * np.log(2 * np.pi / prec)
        + np.log(special.ndtr((1 - mean) * r) - special.ndtr(-mean * r))
    )  # fmt: skip
    truth = float(log_int - base.log_norm)
    e = QuadraticEnergy(d, mean=torch.as_tensor(mu), precision=torch.diag(torch.as_tensor(lam)))
    ais = log_partition_ais(e, base, n_chains=256, n_temps=48, generator=gen(9))
    assert within(ais, truth)
    imp = log_partition_importance(e, base, n_samples=8192, n_batches=2, generator=gen(9))
    assert within(imp, truth)


# ----------------------------------------------------------------------------- reverse / sandwich
def test_sandwich_brackets_quadrature_2d_with_exact_samples():
    e = QuadraticEnergy(
        2, mean=torch.tensor([0.3, 0.8]), precision=torch.tensor([[300.0, 100.0], [100.0, 200.0]])
    )
    ref = log_partition_quadrature(e)
    g = gen(11)
    x, _ = sample_exact(e, 256, generator=g)
    s = ais_sandwich(e, x, n_chains=256, n_temps=32, generator=g)
    assert isinstance(s, AISSandwich) and s.is_consistent
    assert s.lower.bias == "lower" and s.upper.bias == "upper"
    assert s.upper.method == "ais-reverse"
    acc = s.upper.diagnostics.acceptance
    assert torch.isnan(acc[-1]) and not torch.isnan(acc[:-1]).any()
    lo, hi = s.interval(4.0)
    assert lo - ref.stderr <= ref.value <= hi + ref.stderr


def test_sandwich_brackets_a_known_target():
    t = load_target("mixture_5d")  # exactly normalized: log Z = 0 for V = −log q
    x = torch.as_tensor(t.sample(256, random_state=12))
    s = ais_sandwich(t.energy(), x, n_chains=256, n_temps=64, generator=gen(12))
    assert s.is_consistent
    lo, hi = s.interval(4.0)
    assert lo <= 0.0 <= hi


def test_sandwich_refuses_without_exact_samples():
    e = QuadraticEnergy(2)
    with pytest.raises(ValueError, match="exact samples"):
        ais_sandwich(e, None, generator=gen(0))
    with pytest.raises(ValueError, match="exact samples"):
        log_partition_reverse_ais(e, None, generator=gen(0))
    with pytest.raises(ValueError, match="unit cube"):
        ais_sandwich(e, torch.full((4, 2), 1.5), generator=gen(0))


def test_sandwich_flags_samples_that_are_not_from_the_model():
    """Base draws passed off as model samples: the reverse 'bound' falls below the forward."""
    e, _ = diag_quadratic(3, 100.0, 300.0, seed=13)
    wrong = torch.rand(128, 3, generator=gen(13), dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="NOT A SANDWICH"):
        s = ais_sandwich(e, wrong, n_chains=128, n_temps=16, generator=gen(13))
    assert not s.is_consistent and s.gap < 0


def test_reverse_ais_alone_is_an_upper_estimate():
    e, truth = diag_quadratic(2, 50.0, 200.0, seed=14)
    g = gen(14)
    x, _ = sample_exact(e, 256, generator=g)
    r = log_partition_reverse_ais(e, x, n_temps=32, generator=g)
    assert r.bias == "upper" and r.diagnostics.log_weights.shape == (256,)
    assert within(r, truth)


def test_ais_settings_live_in_one_frozen_config():
    """A config object and keyword settings give the same run; unknown settings are refused."""
    import dataclasses

    from ebmfit.partition import AISConfig

    e = QuadraticEnergy(2, precision=20.0 * torch.eye(2, dtype=torch.float64))
    cfg = AISConfig(n_temps=16, kernel="hmc", num_integration_steps=3)
    a = log_partition_ais(e, n_chains=64, config=cfg, generator=gen(21))
    b = log_partition_ais(
        e, n_chains=64, n_temps=16, kernel="hmc", num_integration_steps=3, generator=gen(21)
    )
    assert a == b
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_temps = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="AIS settings are"):
        log_partition_ais(e, n_temps=8, n_temperatures=8, generator=gen(0))
