"""Kernels on the unit cube: reflected leapfrog geometry, contracts, cost, and exactness.

Exactness is tested two ways: one-step invariance of 1-D targets with mass at the faces
(chi-square on equal-probability bins, with a negative control showing the test has power), and
moments of a truncated correlated Gaussian in 5-D against an independent rejection sample, in
units of the combined Monte Carlo standard error.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebmfit.domain import reflect_unit
from ebmfit.samplers import diagnostics, hmc, mala, run_chains, ula
from ebmfit.samplers.integrators import (
    energy_and_grad,
    reflect,
    reflected_leapfrog,
)

KERNELS = {"ula": ula, "mala": mala, "hmc": hmc}
P_MIN = 1e-3  # significance level of the distributional tests
Z_MAX = 4.0  # moment tests: |estimate - truth| < 4 combined standard errors


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def wavy(u: torch.Tensor) -> torch.Tensor:
    """A non-quadratic energy with mass pushed to the faces."""
    return (3.0 * u + torch.sin(5.0 * u) - 2.0 * u * u).sum(-1) + u[:, 0] * u[:, -1]


# ------------------------------------------------------------------ reflected leapfrog geometry
def test_reflect_matches_domain_reflect_unit():
    x = torch.linspace(-7.3, 9.1, 20001, dtype=torch.float64).reshape(-1, 1)
    r, slope = reflect(x)
    torch.testing.assert_close(r, reflect_unit(x), rtol=0, atol=1e-15)
    assert ((r >= 0) & (r <= 1)).all() and (slope.abs() == 1).all()
    inside = torch.rand(1000, 3, generator=gen(0), dtype=torch.float64)
    assert torch.equal(reflect(inside)[0], inside)  # exact identity on the cube
    # slope is the derivative of the fold, away from the kinks at the integers
    h = 1e-7
    fd = (reflect_unit(x + h) - reflect_unit(x - h)) / (2 * h)
    away = (torch.remainder(x, 1.0) - 0.5).abs() < 0.49
    torch.testing.assert_close(slope[away], fd[away], rtol=0, atol=1e-6)


def test_leapfrog_is_reversible_with_many_bounces():
    g = gen(0)
    q0 = torch.rand(256, 3, generator=g, dtype=torch.float64)
    p0 = 3.0 * torch.randn(256, 3, generator=g, dtype=torch.float64)
    _, g0 = energy_and_grad(wavy, q0)
    q1, p1, _, g1 = reflected_leapfrog(q0, p0, g0, wavy, 0.4, 7)
    assert (torch.floor(q0 + 0.4 * 7 * p0) != 0).any()  # many trajectories cross faces
    q2, p2, _, _ = reflected_leapfrog(q1, -p1, g1, wavy, 0.4, 7)
    torch.testing.assert_close(q2, q0, rtol=0, atol=1e-10)
    torch.testing.assert_close(-p2, p0, rtol=0, atol=1e-10)


def test_leapfrog_preserves_volume():
    """|det J| = 1 for the map (u, p) -> (u', p'), by central differences, in 2-D."""
    g = gen(1)
    inv_mass = torch.tensor([0.7, 1.6], dtype=torch.float64)

    def flow(z: torch.Tensor) -> torch.Tensor:
        q, p = z[:, :2], z[:, 2:]
        _, g0 = energy_and_grad(wavy, q)
        q1, p1, _, _ = reflected_leapfrog(q, p, g0, wavy, 0.2, 3, inv_mass)
        return torch.cat([q1, p1], dim=1)

    q = 0.1 + 0.8 * torch.rand(20, 2, generator=g, dtype=torch.float64)
    p = 2.0 * torch.randn(20, 2, generator=g, dtype=torch.float64)
    z = torch.cat([q, p], dim=1)
    _, g0 = energy_and_grad(wavy, q)
    _, _, _, _ = reflected_leapfrog(q, p, g0, wavy, 0.2, 3, inv_mass)
    free = q + 0.2 * 3 * inv_mass * p  # roughly where a free flight would end
    assert ((free < 0) | (free > 1)).any(dim=1).sum() >= 10  # most trajectories bounce
    h = 1e-6  # central differences: error O(h²)·|f'''| + O(1e-16/h)·|f| with entries ~100
    cols = []
    for j in range(4):
        e = torch.zeros(4, dtype=torch.float64)
        e[j] = h
        cols.append((flow(z + e) - flow(z - e)) / (2 * h))
    jac = torch.stack(cols, dim=-1)  # (20, 4, 4)
    det = torch.linalg.det(jac)
    torch.testing.assert_close(det.abs(), torch.ones(20, dtype=torch.float64), rtol=0, atol=1e-5)


# ------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_contract(name, dtype):
    k = KERNELS[name]
    u0 = torch.rand(50, 3, generator=gen(2), dtype=dtype)
    state = k.init(u0, wavy)
    assert state.position.shape == (50, 3) and state.energy.shape == (50,)
    assert state.grad.shape == (50, 3)
    assert all(t.dtype == dtype for t in state)
    kw = {"num_integration_steps": 3} if name == "hmc" else {}
    eps = torch.full((50,), 0.7, dtype=dtype)  # per-chain step sizes are accepted
    out = []
    for _ in range(2):
        s, g = state, gen(3)
        for _ in range(5):
            s, info = k.step(g, s, wavy, eps, **kw)
        out.append(s)
    assert torch.equal(out[0].position, out[1].position)  # the generator is the only randomness
    s = out[0]
    assert ((s.position >= 0) & (s.position <= 1)).all()
    torch.testing.assert_close(s.energy, wavy(s.position))
    assert info.acceptance_prob.shape == (50,) and info.acceptance_prob.dtype == dtype
    assert info.is_accepted.dtype == torch.bool and info.is_divergent.dtype == torch.bool
    assert ((info.acceptance_prob >= 0) & (info.acceptance_prob <= 1)).all()
    assert info.energy.shape == (50,)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_init_rejects_bad_input(name):
    k = KERNELS[name]
    u = torch.full((4, 2), 0.5, dtype=torch.float64)
    u[2, 1] = 1.2
    with pytest.raises(ValueError, match=r"\[2\]"):
        k.init(u, wavy)
    with pytest.raises(ValueError, match="shape"):
        k.init(torch.full((4, 2), 0.5), lambda v: v)
    with pytest.raises(ValueError, match="not finite"):
        k.init(torch.full((4, 2), 0.5), lambda v: torch.log(v - 0.5).sum(-1))


def test_nonfinite_proposal_is_rejected_and_flagged():
    # V = +inf on u > 0.6: a proposal there must be rejected, never accepted
    def walled(u):
        return torch.where(u[:, 0] > 0.6, torch.inf, 0.0) + 0.0 * u.sum(-1)

    state = mala.init(torch.full((500, 1), 0.5, dtype=torch.float64), walled)
    state, info = mala.step(gen(4), state, walled, 0.3)
    hit = ~torch.isfinite(info.energy)
    assert hit.any() and info.is_divergent[hit].all() and not info.is_accepted[hit].any()
    assert (state.position <= 0.6).all() and torch.isfinite(state.energy).all()


# ------------------------------------------------------------------ cost
class CountingEnergy:
    """Counts forward calls and backward passes through the energy output."""

    def __init__(self, fn):
        self.fn, self.forward, self.backward = fn, 0, 0

    def __call__(self, u):
        self.forward += 1
        v = self.fn(u)
        if v.requires_grad:
            v.register_hook(self._hook)
        return v

    def _hook(self, grad):
        self.backward += 1


@pytest.mark.parametrize("n_leapfrog", [1, 2, 5])
def test_hmc_uses_l_plus_one_gradients_per_trajectory(n_leapfrog):
    energy = CountingEnergy(wavy)
    state = hmc.init(torch.rand(8, 2, generator=gen(5), dtype=torch.float64), energy)
    assert (energy.forward, energy.backward) == (1, 1)
    g, n_traj = gen(6), 4
    for _ in range(n_traj):
        state, _ = hmc.step(g, state, energy, 0.1, num_integration_steps=n_leapfrog)
    # L new gradients per trajectory + the cached one from the previous state = L + 1 used
    assert energy.forward == energy.backward == 1 + n_traj * n_leapfrog


def test_mala_uses_one_gradient_per_step():
    energy = CountingEnergy(wavy)
    state = mala.init(torch.rand(8, 2, generator=gen(5), dtype=torch.float64), energy)
    g = gen(6)
    for _ in range(3):
        state, _ = mala.step(g, state, energy, 0.1)
    assert energy.forward == energy.backward == 4


# ------------------------------------------------------------------ MALA = classical MALA inside
def test_mala_ratio_equals_classical_mala_without_reflection():
    """Without a face crossing, exp(-ΔH) equals π(u')q(u|u')/π(u)q(u'|u) of classical MALA."""
    n, d, eps = 2000, 2, 0.02
    inv_mass = torch.tensor([0.5, 2.0], dtype=torch.float64)
    u = 0.2 + 0.6 * torch.rand(n, d, generator=gen(7), dtype=torch.float64)
    state = mala.init(u, wavy)
    g = gen(8)
    xi = torch.randn(n, d, generator=gen(8), dtype=torch.float64)  # the step's first draw
    new, info = mala.step(g, state, wavy, eps, inverse_mass=inv_mass)
    v0, g0 = energy_and_grad(wavy, u)
    prop = u - 0.5 * eps**2 * inv_mass * g0 + eps * inv_mass.sqrt() * xi
    assert ((prop > 0) & (prop < 1)).all()
    v1, g1 = energy_and_grad(wavy, prop)

    def log_q(to, frm, grad_frm):  # Gaussian N(frm - eps²/2 M⁻¹∇V, eps² M⁻¹), up to a constant
        r = to - frm + 0.5 * eps**2 * inv_mass * grad_frm
        return -0.5 * (r * r / inv_mass).sum(-1) / eps**2

    log_ratio = -v1 + v0 + log_q(u, prop, g1) - log_q(prop, u, g0)
    torch.testing.assert_close(info.acceptance_prob, torch.exp(log_ratio.clamp(max=0)))
    assert (info.acceptance_prob < 1).any()
    moved = info.is_accepted
    torch.testing.assert_close(new.position[moved], prop[moved])


# ------------------------------------------------------------------ one-step invariance, 1-D
EXP_RATE = 3.0  # V(u) = 3u: density ∝ exp(-3u), mass at the face u = 0
TN_LOC, TN_SCALE = 0.05, 0.1  # Gaussian centred next to the face u = 0, truncated to [0, 1]
TN = stats.truncnorm((0 - TN_LOC) / TN_SCALE, (1 - TN_LOC) / TN_SCALE, TN_LOC, TN_SCALE)


def exp_cdf(u):
    return (1 - np.exp(-EXP_RATE * u)) / (1 - np.exp(-EXP_RATE))


def exp_ppf(p):
    return -np.log1p(-p * (1 - np.exp(-EXP_RATE))) / EXP_RATE


TARGETS = {
    "exp": (lambda u: EXP_RATE * u[:, 0], exp_ppf, exp_cdf),
    "truncnorm": (lambda u: 0.5 * ((u[:, 0] - TN_LOC) / TN_SCALE) ** 2, TN.ppf, TN.cdf),
}
N_CHAINS_1D, N_BINS = 200_000, 50


def one_step_pvalue(target: str, step) -> float:
    """Start N chains at exact draws, apply ``step(u0, energy)`` once, chi-square the result."""
    energy, ppf, cdf = TARGETS[target]
    rng = np.random.default_rng(11)
    u0 = torch.from_numpy(ppf(rng.uniform(size=(N_CHAINS_1D, 1))))
    u1 = step(u0, energy)
    assert ((u1 >= 0) & (u1 <= 1)).all()
    counts = np.bincount(
        np.minimum((cdf(u1[:, 0].numpy()) * N_BINS).astype(int), N_BINS - 1), minlength=N_BINS
    )
    return stats.chisquare(counts).pvalue  # equal-probability bins under the target


def kernel_step(k, step_size, **kw):
    def step(u0, energy):
        state = k.init(u0, energy)
        state, _ = k.step(gen(12), state, energy, step_size, **kw)
        return state.position

    return step


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize(
    ("name", "step_size", "kw"),
    [
        ("mala", 0.3, {}),
        ("mala", 1.5, {}),  # step ≫ box: nearly every proposal is reflected, many times
        ("hmc", 0.15, {"num_integration_steps": 4}),
        ("hmc", 0.25, {"num_integration_steps": 3, "inverse_mass": torch.tensor([0.5])}),
    ],
)
def test_one_step_invariance_1d(target, name, step_size, kw):
    p = one_step_pvalue(target, kernel_step(KERNELS[name], step_size, **kw))
    assert p > P_MIN


def naive_reflected_mala(step_size):
    """A wrong kernel: reflected proposal with the *unfolded* Gaussian in the MH ratio."""

    def step(u0, energy):
        g = gen(12)
        v0, g0 = energy_and_grad(energy, u0)
        eps = step_size
        xi = torch.randn(u0.shape, generator=g, dtype=u0.dtype)
        prop = reflect_unit(u0 - 0.5 * eps**2 * g0 + eps * xi)
        v1, g1 = energy_and_grad(energy, prop)
        fwd = -((prop - u0 + 0.5 * eps**2 * g0) ** 2).sum(-1) / (2 * eps**2)
        bwd = -((u0 - prop + 0.5 * eps**2 * g1) ** 2).sum(-1) / (2 * eps**2)
        log_r = v0 - v1 + bwd - fwd
        accept = torch.rand(u0.shape[0], generator=g, dtype=u0.dtype).log() < log_r
        return torch.where(accept[:, None], prop, u0)

    return step


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_one_step_invariance_has_power(target):
    """Negative controls: the same test rejects ULA and a naively reflected MALA."""
    assert one_step_pvalue(target, kernel_step(ula, 0.3)) < P_MIN
    assert one_step_pvalue(target, naive_reflected_mala(0.3)) < P_MIN


def test_ula_keeps_uniform_exactly():
    """With V constant the reflected Gaussian walk is symmetric: uniform is invariant."""

    def flat(u):
        return 0.0 * u.sum(-1)

    u0 = torch.rand(N_CHAINS_1D, 1, generator=gen(13), dtype=torch.float64)
    state, _ = ula.step(gen(14), ula.init(u0, flat), flat, 0.7)
    counts = np.bincount((state.position[:, 0].numpy() * N_BINS).astype(int), minlength=N_BINS)
    assert stats.chisquare(counts[:N_BINS]).pvalue > P_MIN


# ------------------------------------------------------------------ truncated Gaussian, 5-D
MU = np.linspace(0.1, 0.9, 5)
SIGMA = 0.2**2 * (0.5 * np.eye(5) + 0.5)  # std 0.2, correlation 0.5
PREC = torch.from_numpy(np.linalg.inv(SIGMA))


def truncated_gaussian_energy(u: torch.Tensor) -> torch.Tensor:
    r = u - torch.from_numpy(MU).to(u)
    return 0.5 * ((r @ PREC.to(u)) * r).sum(-1)


@pytest.fixture(scope="module")
def truncated_gaussian_reference():
    """Mean and variance of N(MU, SIGMA) restricted to [0,1]^5 by rejection, with their SEs."""
    rng = np.random.default_rng(2024)
    z = rng.multivariate_normal(MU, SIGMA, size=1_000_000)
    x = z[((z >= 0) & (z <= 1)).all(axis=1)]
    n = x.shape[0]
    dev2 = (x - x.mean(0)) ** 2
    return {
        "mean": x.mean(0),
        "mean_se": x.std(0, ddof=1) / math.sqrt(n),
        "var": dev2.mean(0) * n / (n - 1),
        "var_se": dev2.std(0, ddof=1) / math.sqrt(n),
        "n": n,
    }


@pytest.mark.parametrize(("name", "kw"), [("mala", {}), ("hmc", {"num_integration_steps": 5})])
def test_truncated_gaussian_moments(name, kw, truncated_gaussian_reference):
    ref = truncated_gaussian_reference
    assert ref["n"] > 300_000  # a fifth or more of the mass is cut off by the faces
    g = gen(21)
    u0 = torch.rand(100, 5, generator=g, dtype=torch.float64)
    samples, info = run_chains(
        name, truncated_gaussian_energy, u0, 1000, g, warmup=300, step_size=0.2, **kw
    )
    x = samples.numpy()
    assert info["divergences"] == 0
    assert (diagnostics.split_rhat(x, rank_normalize=True) < 1.01).all()
    mean = x.reshape(-1, 5).mean(0)
    z_mean = (mean - ref["mean"]) / np.hypot(diagnostics.mcse_mean(x), ref["mean_se"])
    dev2 = (x - mean) ** 2  # variance = mean of squared deviations; its MCSE from its own ESS
    var = dev2.reshape(-1, 5).mean(0)
    z_var = (var - ref["var"]) / np.hypot(diagnostics.mcse_mean(dev2), ref["var_se"])
    assert np.abs(z_mean).max() < Z_MAX, z_mean
    assert np.abs(z_var).max() < Z_MAX, z_var


def test_ula_bias_is_first_order_in_the_time_step():
    """Reflected ULA on V = 3u: the stationary mean is off, by O(γ) = O(ε²) (ratio ≈ 4 per halving).

    The bias is measured after 10/ε² steps (≈ 5 time units, ≫ the relaxation time ≈ 0.1) from
    exact draws.  A projected (O(√γ)) scheme would give a ratio of 2.
    """
    energy, ppf, _ = TARGETS["exp"]
    truth = 1 / EXP_RATE - math.exp(-EXP_RATE) / (1 - math.exp(-EXP_RATE))
    rng = np.random.default_rng(15)
    bias, se = [], []
    for eps in [0.4, 0.2]:
        state = ula.init(torch.from_numpy(ppf(rng.uniform(size=(20_000, 1)))), energy)
        g = gen(16)
        for _ in range(int(10 / eps**2)):
            state, _ = ula.step(g, state, energy, eps)
        x = state.position[:, 0].numpy()
        bias.append(x.mean() - truth)
        se.append(x.std(ddof=1) / math.sqrt(x.size))
    assert bias[1] / se[1] > Z_MAX  # biased even at the smaller step
    ratio = bias[0] / bias[1]
    ratio_se = ratio * math.hypot(se[0] / bias[0], se[1] / bias[1])
    assert ratio - Z_MAX * ratio_se > 2.0 and ratio < 6.0, (ratio, ratio_se)
