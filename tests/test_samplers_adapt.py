"""Warm-up primitives (dual averaging, Welford, Stan's schedule) and the run_chains loop."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math

import numpy as np
import pytest
import torch

from ebmfit.samplers import adapt, run_chains

MU = torch.tensor([0.5, 0.5], dtype=torch.float64)
SD = torch.tensor([0.03, 0.08], dtype=torch.float64)  # far from the faces: plain Gaussian


def gaussian(u: torch.Tensor) -> torch.Tensor:
    return 0.5 * (((u - MU.to(u)) / SD.to(u)) ** 2).sum(-1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ dual averaging
@pytest.mark.parametrize("start", [1e-3, 1.0, 30.0])
def test_dual_averaging_reaches_target_on_a_known_curve(start):
    """Noise-free acceptance curve a(ε) = 1 / (1 + (ε/0.3)³): ε̄ must solve a(ε) = 0.8."""

    def accept(eps):
        return 1.0 / (1.0 + (eps / 0.3) ** 3)

    state = adapt.dual_averaging_init(start)
    for _ in range(2000):
        state = adapt.dual_averaging_update(state, accept(math.exp(state.log_step_size)), 0.8)
    assert abs(accept(math.exp(state.log_step_size_avg)) - 0.8) < 0.01


def test_dual_averaging_shrinks_after_nan_and_validates():
    state = adapt.dual_averaging_init(0.5)
    state = adapt.dual_averaging_update(state, float("nan"), 0.8)
    assert state.log_step_size < math.log(0.5 * 10)  # below mu: NaN counted as acceptance 0
    with pytest.raises(ValueError):
        adapt.dual_averaging_init(0.0)


# ------------------------------------------------------------------ Welford
def test_welford_matches_numpy_for_ragged_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(1000, 4)) * np.array([1, 10, 0.1, 1e3])
    state = adapt.welford_init(torch.zeros(4, dtype=torch.float64))
    start = 0
    for size in [1, 0, 7, 250, 3, 739]:
        state = adapt.welford_update(state, torch.from_numpy(x[start : start + size]))
        start += size
    state = adapt.welford_update(state, torch.from_numpy(x[-1]))  # a single vector
    ref = np.concatenate([x, x[-1:]])
    assert state.count == 1001
    np.testing.assert_allclose(state.mean.numpy(), ref.mean(0), rtol=1e-12)
    var = adapt.welford_variance(state, regularize=False).numpy()
    np.testing.assert_allclose(var, ref.var(0, ddof=1), rtol=1e-12)
    n = 1001
    reg = adapt.welford_variance(state).numpy()
    np.testing.assert_allclose(reg, n / (n + 5) * var + 1e-3 * 5 / (n + 5), rtol=1e-12)


def test_schedule_is_stans_default():
    sched = adapt.build_schedule(1000)
    ends = [i for i, (_, end) in enumerate(sched) if end]
    assert ends == [99, 149, 249, 449, 949]  # windows of 25, 50, 100, 200, 500 after 75
    acc = [i for i, (a, _) in enumerate(sched) if a]
    assert acc == list(range(75, 950))
    short = adapt.build_schedule(100)  # 15% / 75% / 10%
    assert [i for i, (a, _) in enumerate(short) if a] == list(range(15, 90))
    assert not any(a for a, _ in adapt.build_schedule(19))


# ------------------------------------------------------------------ run_chains
@pytest.mark.parametrize(("name", "kw"), [("mala", {}), ("hmc", {"num_integration_steps": 4})])
def test_run_chains_adapts_step_size_and_mass(name, kw):
    u0 = 0.45 + 0.1 * torch.rand(50, 2, generator=gen(0), dtype=torch.float64)
    results = []
    for start in [1e-3, 5.0]:  # far too small / far too large
        samples, info = run_chains(
            name, gaussian, u0, 200, gen(1), warmup=500, step_size=start, thin=2, **kw
        )
        results.append(info)
        assert samples.shape == (50, 100, 2)
        l_steps = kw.get("num_integration_steps", 1)
        assert info["n_energy_evals"] == 1 + (500 + 200) * l_steps
        # Welford over the last slow window (200 steps x 50 chains, ESS in the thousands, so a
        # relative SE of a few %): the inverse mass estimates the target variance
        np.testing.assert_allclose(info["inverse_mass"].numpy(), (SD**2).numpy(), rtol=0.15)
        # dual averaging's averaged step is conservative (acceptance lands at or above target)
        target = {"mala": 0.574, "hmc": 0.8}[name]
        assert target - 0.1 < info["acceptance_rate"] < 1.0
        assert info["divergences"] == 0
    ratio = results[0]["step_size"] / results[1]["step_size"]
    assert 0.5 < ratio < 2.0  # the same step size whatever the start


def test_run_chains_is_deterministic_and_resumable():
    u0 = torch.rand(10, 2, generator=gen(2), dtype=torch.float64)
    a, info = run_chains("mala", gaussian, u0, 30, gen(3), warmup=40)
    b, _ = run_chains("mala", gaussian, u0, 30, gen(3), warmup=40)
    assert torch.equal(a, b)
    assert torch.equal(info["state"].position, a[:, -1])
    c, _ = run_chains(
        "mala", gaussian, info["state"].position, 5, gen(4), warmup=0,
        step_size=info["step_size"], inverse_mass=info["inverse_mass"],
    )  # fmt: skip
    assert c.shape == (10, 5, 2)


def test_run_chains_does_not_adapt_ula():
    u0 = torch.rand(10, 2, generator=gen(5), dtype=torch.float64)
    _, info = run_chains("ula", gaussian, u0, 10, gen(6), warmup=50, step_size=0.01)
    assert info["step_size"] == 0.01 and info["inverse_mass"] is None
    assert info["acceptance_rate"] == 1.0


def test_run_chains_validates():
    u0 = torch.rand(4, 2, generator=gen(7), dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown kernel"):
        run_chains("nuts", gaussian, u0, 1, gen(0))
    with pytest.raises(ValueError, match="thin"):
        run_chains("mala", gaussian, u0, 1, gen(0), thin=0)


def test_package_docstring_example_runs():
    import doctest

    import ebmfit.samplers

    result = doctest.testmod(ebmfit.samplers, verbose=False)
    assert result.attempted > 0 and result.failed == 0
