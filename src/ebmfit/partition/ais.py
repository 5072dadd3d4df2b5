r"""Annealed importance sampling (AIS) of :math:`\log Z` in any dimension, and its reverse.

**Path.** Geometric bridge from the base :math:`P` to the model,

.. math:: \pi_\beta(du) \propto e^{-\beta V(u)}\,P(du), \qquad
          0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

so :math:`Z_{\beta_0} = 1` and :math:`Z_{\beta_T} = Z`.  On the unit cube :math:`\pi_\beta` has
energy :math:`U_\beta = \beta V - \log p` (:math:`p = dP/du`; :math:`U_\beta = \beta V` for the
uniform base).

**Forward AIS** (Neal, *Annealed importance sampling*, Stat. Comput. 11 (2001)).  Each chain
starts from an *exact* base draw :math:`u_0 \sim P`; for :math:`t = 1, \dots, T`

.. math:: \log w \mathrel{+}= -(\beta_t - \beta_{t-1})\,V(u_{t-1}), \qquad
          u_t \sim \mathcal T_t(u_{t-1}, \cdot),

with :math:`\mathcal T_t` a few steps of the project's reflected MALA or HMC kernel, which leave
:math:`\pi_{\beta_t}` exactly invariant on the cube (:mod:`ebmfit.samplers.hmc`).  Then
:math:`\mathbb E[w] = Z` and, over N independent chains, :math:`\hat Z = \frac1N\sum_i w_i` is
unbiased, so by Jensen

.. math:: \mathbb E[\log \hat Z] \le \log Z \qquad (\text{bias } ``\text{lower}``).

The standard error is the delta method across chains,
:math:`\mathrm{SE} = s_w / (\sqrt N \bar w) = \sqrt{(N/\mathrm{ESS} - 1)/(N-1)}` with Kish's ESS
of the final weights.  It is reliable when the ESS is a fair fraction of N; a small ESS means a
few chains dominate, the log-weights are heavy-tailed and the SE (like the estimate) is too
optimistic: add temperatures.

**Reverse AIS** (Grosse, Ghahramani & Adams, *Sandwiching the marginal likelihood using
bidirectional Monte Carlo*, arXiv:1511.02543; Burda, Grosse & Salakhutdinov, AISTATS 2015).
Chains start from **exact** model samples :math:`u_T \sim \pi_1` and run the schedule backwards,
:math:`\log w' \mathrel{+}= (\beta_t - \beta_{t-1})\,V(u_t)`,
:math:`u_{t-1} \sim \mathcal T_{t-1}(u_t, \cdot)`; then :math:`\mathbb E[w'] = 1/Z` and
:math:`\log \hat Z_{\rm rev} = -\log \frac1N\sum_i w'_i` satisfies
:math:`\mathbb E[\log \hat Z_{\rm rev}] \ge \log Z` (bias ``"upper"``).  The bound needs samples
that are exactly from the model: MCMC output or AIS's own final states give no bound (a peer's
"upper bound" fell below its forward estimate for that reason), so :func:`ais_sandwich` takes the
samples as an argument and refuses to run without them; use
:func:`ebmfit.samplers.exact.sample_exact` (d ≤ 3, or any energy with tight interval bounds) or
a known target's exact sampler.  A forward estimate that exceeds the reverse one by more than the
noise is reported (``is_consistent=False`` and a ``RuntimeWarning``), never silently returned as
a bracket.

**Tuning without bias.** Step sizes and (for ``schedule="adaptive"``) the temperatures are chosen
by a short *pilot* run on ``n_pilot`` independent chains, then frozen: the main chains see a fixed
sequence of exact kernels, so :math:`\mathbb E[w] = Z` holds exactly (adapting to the main
chains' own acceptance would make each kernel depend on the current state).  The pilot adapts
:math:`\log\varepsilon` after every step by :math:`\log\varepsilon \mathrel{+}=
(\bar\alpha - \alpha^\star)` toward the kernel's target acceptance :math:`\alpha^\star`
(0.574 MALA, 0.8 HMC), capped at :math:`\varepsilon \le 1`.  The adaptive schedule spaces the
temperatures evenly in thermodynamic length :math:`\int_0^\beta \mathrm{sd}_{\pi_b}(V)\,db`
(estimated from the pilot's chains on a geometric grid), which minimizes
:math:`\sum_t (\beta_t - \beta_{t-1})^2 \mathrm{Var}_{\pi_{\beta_t}}(V)`, the leading term of the
variance of :math:`\log w` for slowly varying paths.

Chains are processed in chunks of ``chunk`` so memory is bounded; everything runs on the
energy's device with float64 positions, and ``generator`` must live there.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import torch

from ..base import BaseMeasure, Uniform
from ..energies.base import Energy
from ..samplers import hmc, mala
from ..samplers.integrators import energy_and_grad
from ..samplers.types import State
from .ais_path import AISConfig, _adaptive_betas, _check_betas, ais_schedule
from .importance import check_generator_device, log_weight_stats
from .result import AISDiagnostics, LogZ

__all__ = [
    "AISConfig",
    "AISDiagnostics",
    "AISSandwich",
    "ais_sandwich",
    "ais_schedule",
    "log_partition_ais",
    "log_partition_reverse_ais",
]

_KERNELS = {"mala": mala, "hmc": hmc}
_MAX_STEP = 1.0
_INIT_STEP = 0.5


class AISSandwich(NamedTuple):
    r"""Forward and reverse AIS on the same path: a stochastic bracket of :math:`\log Z`.

    Attributes:
        lower: forward AIS, :math:`\mathbb E[\cdot] \le \log Z` (a :class:`LogZ` with
            :class:`~ebmfit.partition.result.AISDiagnostics`).
        upper: reverse AIS from exact samples, :math:`\mathbb E[\cdot] \ge \log Z`.
        is_consistent: False when ``lower`` exceeds ``upper`` by more than ``z_alarm`` combined
            standard errors: then this is *not* a sandwich (samples not exact, too few chains or
            temperatures, or a bug) and a ``RuntimeWarning`` was issued.
        message: a one-line verdict.
    """

    lower: LogZ
    upper: LogZ
    is_consistent: bool
    message: str

    @property
    def gap(self) -> float:
        """``upper - lower``: the width of the bracket (negative if the two crossed)."""
        return self.upper.value - self.lower.value

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """``(lower - z·SE_lower, upper + z·SE_upper)``."""
        lo, up = self.lower, self.upper
        return (lo.value - z * lo.stderr, up.value + z * up.stderr)


#: ``(v, grad v, b, grad b)`` at a set of points (b terms None for the uniform base).
_Start = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


class _Energies:
    """The model energy V and base energy B = -log p as float64 callables, with a counter."""

    def __init__(self, energy: Energy, base: BaseMeasure):
        self.energy = energy
        self.base = base
        self.uniform = isinstance(base, Uniform)
        self.n_evals = 0

    def V(self, u: torch.Tensor) -> torch.Tensor:
        self.n_evals += u.shape[0]
        return self.energy(u).to(torch.float64)

    def B(self, u: torch.Tensor) -> torch.Tensor:
        return -self.base.log_prob(u).to(torch.float64)

    def annealed(self, beta: float) -> Callable[[torch.Tensor], torch.Tensor]:
        r""":math:`U_\beta = \beta V + B`."""
        if self.uniform:
            return lambda u: beta * self.V(u)
        return lambda u: beta * self.V(u) + self.B(u)

    def start(self, x: torch.Tensor) -> _Start:
        """``(v, grad v, b, grad b)`` at ``x`` (b terms are None for the uniform base)."""
        v, gv = energy_and_grad(self.V, x)
        b, gb = (None, None) if self.uniform else energy_and_grad(self.B, x)
        if not (torch.isfinite(v).all() and torch.isfinite(gv).all()):
            raise FloatingPointError("energy or its gradient is not finite at a starting point")
        return v, gv, b, gb

    def state(
        self,
        x: torch.Tensor,
        v: torch.Tensor,
        gv: torch.Tensor,
        b: torch.Tensor | None,
        gb: torch.Tensor | None,
        beta: float,
    ) -> State:
        if self.uniform:
            return State(x, beta * v, beta * gv)
        return State(x, beta * v + b, beta * gv + gb)

    def unpack(
        self, state: State, beta: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        r"""Recover :math:`(V, \nabla V, B, \nabla B)` at the state's positions (β > 0)."""
        if self.uniform:
            return state.position, state.energy / beta, state.grad / beta, None, None
        b, gb = energy_and_grad(self.B, state.position)
        return (
            state.position,
            (state.energy - b) / beta,
            (state.grad - gb) / beta,
            b,
            gb,
        )


def _kernel(kernel: str) -> ModuleType:
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {sorted(_KERNELS)}, got {kernel!r}")
    return _KERNELS[kernel]


class _Plan(NamedTuple):
    betas: torch.Tensor  # (T+1,) float64 CPU
    step_sizes: torch.Tensor  # (T,) float64 CPU
    pilot_evals: int


def _pilot(
    en: _Energies,
    x: torch.Tensor,
    grid: torch.Tensor,
    kern: ModuleType,
    n_steps: int,
    kw: dict,
    target: float,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Run adapting AIS chains along ``grid``; return log-step and sd(V) per β_t (t ≥ 1), sd0."""
    v, gv, b, gb = en.start(x)
    sd0 = float(v.std()) if v.numel() > 1 else 0.0
    log_eps = math.log(_INIT_STEP)
    log_eps_t, sd_t = [], []
    for t in range(1, grid.numel()):
        beta = float(grid[t])
        state = en.state(x, v, gv, b, gb, beta)
        fn = en.annealed(beta)
        for _ in range(n_steps):
            state, info = kern.step(generator, state, fn, math.exp(log_eps), **kw)
            a = float(info.acceptance_prob.mean())
            log_eps = min(log_eps + (a - target), math.log(_MAX_STEP))
        x, v, gv, b, gb = en.unpack(state, beta)
        log_eps_t.append(log_eps)
        sd_t.append(float(v.std()) if v.numel() > 1 else 0.0)
    return np.asarray(log_eps_t), np.asarray(sd_t), sd0


def _make_plan(
    en: _Energies,
    dim: int,
    device: torch.device,
    cfg: AISConfig,
    kern: ModuleType,
    kw: dict,
    target: float,
    generator: torch.Generator,
) -> _Plan:
    n_temps, schedule, n_steps = cfg.n_temps, cfg.schedule, cfg.n_steps
    step_size, n_pilot = cfg.step_size, cfg.n_pilot
    adaptive = isinstance(schedule, str) and schedule == "adaptive"
    if isinstance(schedule, str) and not adaptive:
        betas = ais_schedule(n_temps, schedule)
    elif not adaptive:
        betas = _check_betas(schedule)
    T = int(n_temps) if adaptive else betas.numel() - 1
    if T < 1:
        raise ValueError(f"n_temps must be >= 1, got {n_temps}")

    fixed_eps = None
    if step_size is not None:
        fixed_eps = torch.as_tensor(step_size, dtype=torch.float64).detach().cpu().reshape(-1)
        if fixed_eps.numel() == 1:
            fixed_eps = fixed_eps.expand(T).clone()
        if fixed_eps.numel() != T or not bool((fixed_eps > 0).all()):
            raise ValueError(f"step_size must be positive, a float or {T} values (one per β_t)")
    if not adaptive and fixed_eps is not None:
        return _Plan(betas, fixed_eps, 0)

    if n_pilot < 2:
        raise ValueError(f"n_pilot must be >= 2 to tune the run, got {n_pilot}")
    evals0 = en.n_evals
    x = en.base.sample(n_pilot, generator=generator, dtype=torch.float64, device=device)
    if adaptive:
        with torch.no_grad():
            v0 = en.V(x)
        v0 = v0[torch.isfinite(v0)]
        sd0 = float(v0.std()) if v0.numel() > 1 else 0.0
        beta_min = min(0.5, 1e-2 / sd0) if sd0 > 0 else 0.5
        m = int(min(max(n_temps, 16), 128))
        grid = torch.cat(
            [
                torch.zeros(1, dtype=torch.float64),
                torch.logspace(math.log10(beta_min), 0.0, m, dtype=torch.float64),
            ]
        )
    else:
        grid = betas
    log_eps, sd, sd0 = _pilot(en, x, grid, kern, n_steps, kw, target, generator)
    if adaptive:
        betas = _adaptive_betas(grid.numpy(), np.concatenate([[sd0], sd]), T)
    if fixed_eps is not None:
        eps = fixed_eps
    elif adaptive:
        le = np.interp(np.log(betas[1:].numpy()), np.log(grid[1:].numpy()), log_eps)
        eps = torch.as_tensor(np.exp(le), dtype=torch.float64)
    else:
        eps = torch.as_tensor(np.exp(log_eps), dtype=torch.float64)
    return _Plan(betas, eps, en.n_evals - evals0)


def _steps(
    kern: ModuleType,
    generator: torch.Generator,
    state: State,
    fn: Callable[[torch.Tensor], torch.Tensor],
    eps: float,
    n_steps: int,
    kw: dict[str, Any],
    acc: torch.Tensor,
    div: torch.Tensor,
    t: int,
) -> tuple[State, torch.Tensor]:
    for _ in range(n_steps):
        state, info = kern.step(generator, state, fn, eps, **kw)
        acc[t] += info.acceptance_prob.sum()
        div += info.is_divergent.sum()
    return state, div


#: One annealing stage of a chunk: the log-weight increment's coefficient c (``lw += c·V``
#: at the current points), then a move at level s (``None``: no move).
_Stage = tuple[float, int | None]


def _forward_order(betas: list[float]) -> list[_Stage]:
    r"""Forward AIS: for t = 1..T, :math:`\log w \mathrel{+}= -(\beta_t - \beta_{t-1})V`, then a
    move at :math:`\beta_t`."""
    return [(-(betas[t] - betas[t - 1]), t) for t in range(1, len(betas))]


def _reverse_order(betas: list[float]) -> list[_Stage]:
    r"""Reverse AIS: for t = T..1, :math:`\log w' \mathrel{+}= (\beta_t - \beta_{t-1})V`, then
    (t > 1) a move at :math:`\beta_{t-1}`."""
    return [
        (betas[t] - betas[t - 1], t - 1 if t > 1 else None) for t in range(len(betas) - 1, 0, -1)
    ]


def _anneal_chunk(
    en: _Energies,
    x: torch.Tensor,
    plan: _Plan,
    order: list[_Stage],
    kern: ModuleType,
    n_steps: int,
    kw: dict[str, Any],
    generator: torch.Generator,
    acc: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Run one chunk of chains through the stages of ``order`` (:func:`_forward_order` or
    :func:`_reverse_order`); returns the log-weights, the final points and the divergences.

    A move at level s is ``n_steps`` kernel transitions leaving :math:`\pi_{\beta_s}` invariant
    with step size ``plan.step_sizes[s - 1]``; its acceptance is summed into ``acc[s - 1]``.
    """
    betas = plan.betas.tolist()
    eps = plan.step_sizes.tolist()
    v, gv, b, gb = en.start(x)
    lw = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    div = torch.zeros((), dtype=torch.int64, device=x.device)
    for i, (coef, s) in enumerate(order):
        lw += coef * v
        if s is None:
            continue
        state = en.state(x, v, gv, b, gb, betas[s])
        state, div = _steps(
            kern, generator, state, en.annealed(betas[s]), eps[s - 1], n_steps, kw, acc, div, s - 1
        )
        if i + 1 < len(order):  # V at the new points is needed for the next increment
            x, v, gv, b, gb = en.unpack(state, betas[s])
        else:
            x = state.position
    return lw, x, div


def _run(
    direction: str,
    en: _Energies,
    starts: torch.Tensor,
    plan: _Plan,
    kern: ModuleType,
    n_steps: int,
    kw: dict[str, Any],
    generator: torch.Generator,
    chunk: int,
    evals_before: int,
) -> LogZ:
    T = plan.betas.numel() - 1
    dev = starts.device
    acc = torch.zeros(T, dtype=torch.float64, device=dev)
    lws, xs, div = [], [], 0
    betas = plan.betas.tolist()
    order = _forward_order(betas) if direction == "forward" else _reverse_order(betas)
    with torch.no_grad():
        for x in starts.split(int(chunk)):
            lw, xf, d = _anneal_chunk(en, x, plan, order, kern, n_steps, kw, generator, acc)
            if not bool(torch.isfinite(lw).all()):
                raise FloatingPointError(f"{direction} AIS: non-finite log-weights")
            lws.append(lw)
            xs.append(xf)
            div += int(d)
    lw = torch.cat(lws).cpu()
    n = lw.numel()
    acceptance = (acc / (n * n_steps)).cpu()
    if direction == "reverse":
        acceptance[-1] = math.nan
    log_mean, se, ess = log_weight_stats(lw)
    n_evals = en.n_evals - evals_before
    diagnostics = AISDiagnostics(
        ess, lw, acceptance, plan.betas, plan.step_sizes, torch.cat(xs), div
    )
    if direction == "forward":
        return LogZ(log_mean, se, "ais-forward", n_evals, "lower", diagnostics)
    return LogZ(-log_mean, se, "ais-reverse", n_evals, "upper", diagnostics)


def _setup(
    energy: Energy, base: BaseMeasure | None, cfg: AISConfig, generator: torch.Generator
) -> tuple[_Energies, torch.device, ModuleType, dict[str, Any], float]:
    kernel, n_steps, target_accept = cfg.kernel, cfg.n_steps, cfg.target_accept
    base = base if base is not None else Uniform(energy.dim)
    if base.dim != energy.dim:
        raise ValueError(f"base has dim {base.dim} but the energy has dim {energy.dim}")
    dev = energy.param_device()
    check_generator_device(generator, dev)
    kern = _kernel(kernel)
    if int(n_steps) < 1:
        raise ValueError(f"n_steps (transitions per temperature) must be >= 1, got {n_steps}")
    kw = {"num_integration_steps": int(cfg.num_integration_steps)} if kernel == "hmc" else {}
    target = float(target_accept) if target_accept is not None else kern.TARGET_ACCEPT
    return _Energies(energy, base), dev, kern, kw, target


def _check_samples(samples: torch.Tensor | None, dim: int, device: torch.device) -> torch.Tensor:
    if samples is None:
        raise ValueError(
            "reverse AIS needs exact samples from the model (e.g. "
            "ebmfit.samplers.exact.sample_exact, or a known target's sampler); MCMC or AIS "
            "output gives no upper bound, so none is computed without them"
        )
    x = torch.as_tensor(samples).detach().to(device=device, dtype=torch.float64)
    if x.ndim != 2 or x.shape[1] != dim or x.shape[0] < 2:
        raise ValueError(f"samples must have shape (n >= 2, {dim}), got {tuple(x.shape)}")
    if not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError("samples must lie in the unit cube [0,1]^d (and not be NaN)")
    return x


# ----------------------------------------------------------------------------- public API
def _config(config: AISConfig | None, settings: dict[str, Any]) -> AISConfig:
    """``config`` (default :class:`AISConfig`) with the keyword ``settings`` replaced."""
    cfg = AISConfig() if config is None else config
    try:
        return dataclasses.replace(cfg, **settings) if settings else cfg
    except TypeError as err:
        known = ", ".join(f.name for f in dataclasses.fields(AISConfig))
        raise TypeError(f"{err}; AIS settings are: {known}") from None


def log_partition_ais(
    energy: Energy,
    base: BaseMeasure | None = None,
    *,
    n_chains: int = 1024,
    config: AISConfig | None = None,
    generator: torch.Generator,
    **settings: Any,
) -> LogZ:
    r"""Forward AIS estimate of :math:`\log Z`, a stochastic lower bound (see module docstring).

    Args:
        energy: an :class:`~ebmfit.energies.Energy` on the unit cube, shape (n, d) → (n,).
        base: base measure :math:`P` with an exact sampler and a differentiable ``log_prob``
            (default ``Uniform(energy.dim)``).
        n_chains: number N of independent AIS chains.
        config: the path and kernel settings, an :class:`AISConfig` (default ``AISConfig()``).
        generator: a ``torch.Generator`` on the energy's device.
        **settings: fields of :class:`AISConfig` overriding ``config`` (e.g. ``n_temps=64``).

    Returns:
        :class:`LogZ` with ``bias == "lower"`` (:math:`\mathbb E[\log\hat Z] \le \log Z`)
        and :class:`~ebmfit.partition.result.AISDiagnostics`; ``n_evals`` counts energy
        evaluations (points), pilot included.

    Example:
        >>> import torch
        >>> from ebmfit.energies import QuadraticEnergy
        >>> e = QuadraticEnergy(3, precision=50.0 * torch.eye(3))
        >>> r = log_partition_ais(e, n_chains=256, n_temps=64,
        ...                       generator=torch.Generator().manual_seed(0))
        >>> truth = 3 * math.log(math.sqrt(2 * math.pi / 50) * math.erf(0.5 * math.sqrt(25)))
        >>> abs(r.value - truth) < 4 * r.stderr + 1e-3
        True
    """
    cfg = _config(config, settings)
    en, dev, kern, kw, target = _setup(energy, base, cfg, generator)
    if int(n_chains) < 2:
        raise ValueError(f"n_chains must be >= 2, got {n_chains}")
    plan = _make_plan(en, energy.dim, dev, cfg, kern, kw, target, generator)
    evals0 = en.n_evals - plan.pilot_evals
    x0 = en.base.sample(int(n_chains), generator=generator, dtype=torch.float64, device=dev)
    return _run("forward", en, x0, plan, kern, cfg.n_steps, kw, generator, cfg.chunk, evals0)


def log_partition_reverse_ais(
    energy: Energy,
    samples: torch.Tensor,
    base: BaseMeasure | None = None,
    *,
    config: AISConfig | None = None,
    generator: torch.Generator,
    **settings: Any,
) -> LogZ:
    r"""Reverse AIS from **exact** model samples: a stochastic upper bound on :math:`\log Z`.

    ``samples`` (shape (N, d), in the cube) must be i.i.d. draws from
    :math:`e^{-V}dP/Z` — e.g. from :func:`ebmfit.samplers.exact.sample_exact` — one reverse
    chain each; ``None`` raises ``ValueError``.  Other arguments as in
    :func:`log_partition_ais` (the pilot runs forward from the base, independent of
    ``samples``).  Returns a :class:`LogZ` with ``bias == "upper"`` and
    :class:`~ebmfit.partition.result.AISDiagnostics`:
    :math:`\mathbb E[\log\hat Z_{\rm rev}] \ge \log Z` — *only* when the samples are exact.
    """
    cfg = _config(config, settings)
    en, dev, kern, kw, target = _setup(energy, base, cfg, generator)
    x = _check_samples(samples, energy.dim, dev)
    plan = _make_plan(en, energy.dim, dev, cfg, kern, kw, target, generator)
    evals0 = en.n_evals - plan.pilot_evals
    return _run("reverse", en, x, plan, kern, cfg.n_steps, kw, generator, cfg.chunk, evals0)


def ais_sandwich(
    energy: Energy,
    samples: torch.Tensor,
    base: BaseMeasure | None = None,
    *,
    n_chains: int = 1024,
    z_alarm: float = 3.0,
    config: AISConfig | None = None,
    generator: torch.Generator,
    **settings: Any,
) -> AISSandwich:
    r"""Bidirectional AIS: forward (lower) and reverse (upper) on one frozen schedule.

    ``samples`` must be exact model draws (see :func:`log_partition_reverse_ais`); without them
    this raises ``ValueError`` rather than report a bracket that is not one.  One pilot tunes
    the temperatures and step sizes for both directions; ``n_chains`` forward chains and one
    reverse chain per sample follow.  If the forward estimate exceeds the reverse one by more
    than ``z_alarm`` combined standard errors the result has ``is_consistent=False`` and a
    ``RuntimeWarning`` is issued: that is a bug, non-exact samples, or too few chains.

    Example:
        >>> import torch
        >>> from ebmfit.energies import QuadraticEnergy
        >>> from ebmfit.samplers.exact import sample_exact
        >>> g = torch.Generator().manual_seed(0)
        >>> e = QuadraticEnergy(2, precision=30.0 * torch.eye(2))
        >>> x, _ = sample_exact(e, 256, generator=g)
        >>> s = ais_sandwich(e, x, n_chains=256, n_temps=64, generator=g)
        >>> s.is_consistent
        True
    """
    cfg = _config(config, settings)
    en, dev, kern, kw, target = _setup(energy, base, cfg, generator)
    x = _check_samples(samples, energy.dim, dev)
    if int(n_chains) < 2:
        raise ValueError(f"n_chains must be >= 2, got {n_chains}")
    plan = _make_plan(en, energy.dim, dev, cfg, kern, kw, target, generator)
    evals0 = en.n_evals - plan.pilot_evals
    x0 = en.base.sample(int(n_chains), generator=generator, dtype=torch.float64, device=dev)
    lower = _run("forward", en, x0, plan, kern, cfg.n_steps, kw, generator, cfg.chunk, evals0)
    evals1 = en.n_evals
    upper = _run("reverse", en, x, plan, kern, cfg.n_steps, kw, generator, cfg.chunk, evals1)
    crossing = lower.value - upper.value
    se = math.hypot(lower.stderr, upper.stderr)
    if crossing > z_alarm * se:
        ok = False
        msg = (
            f"NOT A SANDWICH: forward AIS exceeds reverse AIS by {crossing:.3g} "
            f"({crossing / se:.1f} combined SE); the samples are not exact, the run has too few "
            "chains/temperatures, or there is a bug"
        )
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    elif crossing > 0:
        ok = True
        msg = (
            f"bracket crossed within noise (by {crossing:.3g}, {crossing / se:.1f} combined SE): "
            "log Z is pinned to about the standard error"
        )
    else:
        ok = True
        msg = f"bracket of width {-crossing:.3g} (combined SE {se:.2g})"
    return AISSandwich(lower, upper, ok, msg)
