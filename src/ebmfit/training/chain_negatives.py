r"""MCMC negative phases: persistent chains (PCD) and short-run chains (CD-k).

Both run the project's exact reflected kernels (:mod:`ebmfit.samplers`) on the potential
:math:`U = V - \log p` of the current model :math:`e^{-V}\,dP/Z`, with a step size adapted by
dual averaging across calls, and return the chains' end points as equally weighted model
samples (``self_normalize=False``).  :mod:`ebmfit.training.negatives` re-exports them.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import torch

from ..base import BaseMeasure, Uniform
from ..energies.base import Energy
from ..model import potential
from ..samplers import adapt as _adapt
from ..samplers.chains import KERNELS
from ..samplers.integrators import energy_and_grad
from ..samplers.types import State
from .phase import NegativePhaseError, Negatives, NegativesInfo, PotentialFn

__all__ = ["PersistentChains", "ShortRunChains", "chain_energy", "independence_step"]


def chain_energy(energy: Energy, base: BaseMeasure) -> PotentialFn:
    r"""The potential the chains sample, :math:`U = V - \log p` (see :func:`ebmfit.model.potential`)."""
    return potential(energy, base)


def _checked_state(fn: PotentialFn, position: torch.Tensor) -> State:
    v, g = energy_and_grad(fn, position)
    bad = ~(torch.isfinite(v) & torch.isfinite(g).all(-1))
    if bad.any():
        raise NegativePhaseError(
            f"the energy or its gradient is not finite at {int(bad.sum())} chain position(s); "
            "the model has diverged"
        )
    return State(position, v, g)


def _step_state(step: _StepSize) -> dict[str, Any]:
    return {"step_value": step.value, "step_state": [float(x) for x in step.state]}


def _load_step_state(step: _StepSize, state: dict[str, Any]) -> None:
    if "step_value" in state:
        step.value = float(state["step_value"])
        le, lea, k, hbar, mu = state["step_state"]
        step.state = _adapt.DualAveragingState(le, lea, int(k), hbar, mu)


class _StepSize:
    r"""Dual-averaging step size (Hoffman & Gelman 2014) that keeps adapting across calls.

    The target changes as training moves θ, so the averaging is restarted every ``window``
    updates from the current averaged step size (with :math:`\mu = \log\bar\varepsilon`, i.e.
    shrinking towards the current value rather than 10× it).  Step sizes are capped at
    ``max_step`` (a step of the cube's width already reaches every point).
    """

    def __init__(self, step_size: float, target: float | None, window: int, max_step: float):
        self.target, self.window, self.max_step = target, int(window), float(max_step)
        self.value = min(float(step_size), self.max_step)
        self._restart(self.value)

    def _restart(self, eps: float) -> None:
        le = math.log(eps)
        self.state = _adapt.DualAveragingState(le, le, 0, 0.0, le)

    def update(self, acceptance: float) -> None:
        if self.target is None:
            return
        self.state = _adapt.dual_averaging_update(self.state, acceptance, self.target)
        self.value = min(math.exp(self.state.log_step_size), self.max_step)
        if self.state.step >= self.window:
            self._restart(min(math.exp(self.state.log_step_size_avg), self.max_step))


def _resolve_kernel(kernel: str | ModuleType) -> tuple[str, ModuleType]:
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of {sorted(KERNELS)}")
        return kernel, KERNELS[kernel]
    return getattr(kernel, "__name__", type(kernel).__name__), kernel


def independence_step(
    generator: torch.Generator,
    state: State,
    fn: PotentialFn,
    base: BaseMeasure,
    mask: torch.Tensor | None = None,
) -> tuple[State, torch.Tensor]:
    r"""One independence Metropolis–Hastings move per chain with proposals from the base P.

    For the target :math:`\pi(u) \propto e^{-V(u)} p(u)` and the proposal :math:`u' \sim P`
    (density p), the Hastings ratio is :math:`\pi(u')p(u) / \pi(u)p(u') = e^{V(u) - V(u')}`,
    with :math:`V = U + \log p` recovered from the potential :math:`U` = ``fn``.  The move
    leaves π exactly invariant and lets a chain jump between modes (or off a flat plateau)
    in one step; with a fitted base close to the model most proposals are accepted.

    Only the chains selected by the boolean ``mask`` (shape (n,); default all) get a
    proposal, and only those are evaluated.  Returns the new state and the acceptance
    probabilities of the selected chains, shape (m,).
    """
    pos = state.position
    idx = torch.arange(pos.shape[0], device=pos.device) if mask is None else mask.nonzero()[:, 0]
    m = idx.numel()
    prop = base.sample(m, generator=generator, dtype=pos.dtype, device=pos.device)
    r = torch.rand(m, generator=generator, dtype=pos.dtype, device=pos.device)
    if m == 0:
        return state, r
    u_new, g_new = energy_and_grad(fn, prop)
    with torch.no_grad():
        v_old = state.energy[idx] + base.log_prob(pos[idx])
        v_new = u_new + base.log_prob(prop)
    log_ratio = (v_old - v_new).nan_to_num(nan=-math.inf)
    prob = log_ratio.clamp(max=0.0).exp()
    take = (r < prob) & torch.isfinite(u_new) & torch.isfinite(g_new).all(-1)
    sel = idx[take]
    position, energy, grad = state.position.clone(), state.energy.clone(), state.grad.clone()
    position[sel], energy[sel], grad[sel] = prop[take], u_new[take], g_new[take]
    return State(position, energy, grad), prob


def _advance(
    module: ModuleType,
    fn: PotentialFn,
    position: torch.Tensor,
    n_steps: int,
    generator: torch.Generator | None,
    step: _StepSize,
    adapt: bool,
    inverse_mass: torch.Tensor | None,
    kwargs: dict[str, Any],
    base: BaseMeasure | None = None,
    restart: torch.Tensor | None = None,
) -> tuple[State, NegativesInfo]:
    """An independence move from ``base`` for the chains in ``restart`` (a mask), then
    ``n_steps`` kernel transitions; returns the state and statistics."""
    state = _checked_state(fn, position)
    start = state.position
    restart_acc = math.nan
    if restart is not None:
        state, prob = independence_step(generator, state, fn, base, restart)
        restart_acc = float(prob.mean()) if prob.numel() else math.nan
    acc, div, eps_sum = 0.0, 0, 0.0
    for _ in range(n_steps):
        eps = step.value
        state, info = module.step(generator, state, fn, eps, inverse_mass=inverse_mass, **kwargs)
        a = float(info.acceptance_prob.mean())
        acc += a
        div += int(info.is_divergent.sum())
        eps_sum += eps
        if adapt:
            step.update(a)
    stats = NegativesInfo(
        acceptance_rate=acc / n_steps if n_steps else math.nan,
        step_size=eps_sum / n_steps if n_steps else step.value,
        divergences=div,
        mean_jump=float((state.position - start).norm(dim=-1).mean()),
        n_steps=int(n_steps),
        restart_acceptance=restart_acc if restart is not None else None,
    )
    return state, stats


class _KernelChains:
    """What the chain strategies (:class:`PersistentChains`, :class:`ShortRunChains`) share:
    the kernel and its step-size adaptation, the transitions and the equally weighted return."""

    sharding = "chains"  # split over ranks by chains (ebmfit.training.sharding)

    def _init_step(
        self,
        step_size: float,
        target_accept: float | None,
        adapt: bool,
        adapt_window: int,
        max_step: float,
        inverse_mass: torch.Tensor | None,
        kernel_kwargs: dict[str, Any],
    ) -> None:
        """The adapted step size: dual averaging towards ``target_accept`` (default: the
        kernel's ``TARGET_ACCEPT``; a kernel without one is never adapted)."""
        target = target_accept
        if target is None:
            target = getattr(self.kernel, "TARGET_ACCEPT", None)
        self.adapt = adapt and target is not None
        self.step = _StepSize(step_size, target, adapt_window, max_step)
        self.inverse_mass = inverse_mass
        self.kernel_kwargs = kernel_kwargs
        self.last_info = NegativesInfo()

    def _transitions(
        self,
        fn: PotentialFn,
        position: torch.Tensor,
        n_steps: int,
        generator: torch.Generator | None,
        adapt: bool,
        base: BaseMeasure | None = None,
        restart: torch.Tensor | None = None,
    ) -> tuple[State, NegativesInfo]:
        """:func:`_advance` with this strategy's kernel, step size and kernel settings."""
        return _advance(
            self.kernel,
            fn,
            position,
            n_steps,
            generator,
            self.step,
            adapt,
            self.inverse_mass,
            self.kernel_kwargs,
            base,
            restart,
        )

    def _negatives(self, points: torch.Tensor) -> Negatives:
        """The chains' end points as model samples: equal weights 1/n, not self-normalised."""
        n = self.n_chains
        logw = torch.full((n,), -math.log(n), dtype=torch.float64, device=points.device)
        return Negatives(points, logw, False)


class PersistentChains(_KernelChains):
    r"""Persistent contrastive divergence: MCMC chains that live across fit steps (PCD).

    A replay buffer of ``buffer_size`` chain positions (default: ``n_chains``) is initialised
    from the base P.  Each call draws ``n_chains`` of them, restarts each from P with
    probability ``reinit_fraction``, advances all of them by ``n_steps`` transitions of the exact
    reflected kernel targeting the current model :math:`e^{-V}\,dP/Z`, writes them back and
    returns them as model samples (``self_normalize=False``, equal weights).  The step size is
    adapted by dual averaging to the kernel's target acceptance (0.574 for MALA, 0.8 for HMC)
    throughout training.

    **Restarts.**  ``reinit="metropolis"`` (default) proposes the fresh point :math:`u' \sim P`
    as an independence Metropolis–Hastings move (:func:`independence_step`), accepted with
    probability :math:`\min(1, e^{V(u) - V(u')})`: it keeps the model exactly invariant while
    letting chains jump between modes or off flat plateaus (where local moves diffuse slowly).
    ``reinit="hard"`` restarts unconditionally, after ``reinit_steps`` burn-in transitions of
    the fresh chain alone — the replay-buffer recipe of Du & Mordatch (2019).  Hard restarts
    bias the negatives towards P: a constant share of young chains keeps pushing V up away from
    the data whatever the model mass there, which is not self-limiting; on a 2-D Gaussian with
    Adam at lr 5e-3 it made the energy gap run away within 150 steps, while the Metropolis
    restarts tracked the exact-negative fit.

    The returned points are exact model samples only in the limit of many steps per change of
    θ (the usual PCD approximation); ``last_info`` (a :class:`NegativesInfo`) reports what each
    call saw:
    ``acceptance_rate``, ``step_size``, ``divergences``, ``mean_jump`` (mean distance moved by
    a chain during the call), ``n_reinit`` and ``restart_acceptance``.

    Args:
        dim: dimension d.
        n_chains: chains advanced (and negatives returned) per call.
        kernel: ``"mala"`` (default), ``"hmc"`` or ``"ula"`` (biased: no accept/reject), or a
            kernel module with ``step``.
        n_steps: transitions per call.
        reinit_fraction: probability that a drawn chain is restarted from the base.
        base: the base measure P (default uniform); initial and restart points come from it.
        reinit: ``"metropolis"`` or ``"hard"`` (see above).
        reinit_steps: burn-in transitions of a hard-restarted chain before it joins
            (default ``4 * n_steps``).
        buffer_size: replay buffer size (≥ ``n_chains``; default ``n_chains``).
        step_size: initial ε.
        target_accept: overrides the kernel's target acceptance.
        adapt: adapt ε by dual averaging (kernels without a target are never adapted).
        adapt_window: dual-averaging restart period, in transitions.
        max_step: cap on ε.
        inverse_mass: fixed diagonal :math:`M^{-1}`, shape (d,), or None.
        **kernel_kwargs: passed to the kernel's ``step`` (e.g. ``num_integration_steps``).
    """

    def __init__(
        self,
        dim: int,
        n_chains: int = 512,
        kernel: str | ModuleType = "mala",
        n_steps: int = 5,
        reinit_fraction: float = 0.05,
        base: BaseMeasure | None = None,
        *,
        reinit: str = "metropolis",
        reinit_steps: int | None = None,
        buffer_size: int | None = None,
        step_size: float = 0.05,
        target_accept: float | None = None,
        adapt: bool = True,
        adapt_window: int = 200,
        max_step: float = 1.0,
        inverse_mass: torch.Tensor | None = None,
        **kernel_kwargs: Any,
    ):
        self.dim = int(dim)
        self.n_chains = int(n_chains)
        self.kernel_name, self.kernel = _resolve_kernel(kernel)
        self.n_steps = int(n_steps)
        self.reinit_fraction = float(reinit_fraction)
        self.base = base if base is not None else Uniform(dim)
        if reinit not in ("metropolis", "hard"):
            raise ValueError(f"reinit must be 'metropolis' or 'hard', got {reinit!r}")
        self.reinit = reinit
        self.reinit_steps = 4 * self.n_steps if reinit_steps is None else int(reinit_steps)
        self.buffer_size = int(buffer_size) if buffer_size is not None else self.n_chains
        if self.n_chains < 1 or self.n_steps < 1 or self.buffer_size < self.n_chains:
            raise ValueError("need n_chains >= 1, n_steps >= 1 and buffer_size >= n_chains")
        if not 0.0 <= self.reinit_fraction <= 1.0:
            raise ValueError(f"reinit_fraction must be in [0, 1], got {reinit_fraction}")
        self._init_step(
            step_size, target_accept, adapt, adapt_window, max_step, inverse_mass, kernel_kwargs
        )
        self.buffer: torch.Tensor | None = None
        self.n_calls = 0

    def reset(self) -> None:
        """Forget the chains (the next call re-initialises the buffer from the base)."""
        self.buffer = None
        self.n_calls = 0

    def state_dict(self) -> dict[str, Any]:
        """The chains' state: replay buffer, step-size adaptation and call count."""
        return {"buffer": self.buffer, "n_calls": self.n_calls, **_step_state(self.step)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        buf = state.get("buffer")
        self.buffer = None if buf is None else buf.to(torch.float64).clone()
        self.n_calls = int(state.get("n_calls", 0))
        _load_step_state(self.step, state)

    def __call__(self, energy: Energy, generator: torch.Generator | None = None) -> Negatives:
        dev = energy.param_device()
        if self.buffer is None or self.buffer.device != dev:
            self.buffer = self.base.sample(self.buffer_size, generator=generator, device=dev)
        if self.buffer_size > self.n_chains:
            idx = torch.randperm(self.buffer_size, generator=generator, device=dev)[: self.n_chains]
        else:
            idx = torch.arange(self.n_chains, device=dev)
        pos = self.buffer[idx].clone()
        fresh = (
            torch.rand(self.n_chains, generator=generator, dtype=torch.float64, device=dev)
            < self.reinit_fraction
        )
        n_re = int(fresh.sum())
        fn = chain_energy(energy, self.base)
        restart = fresh if self.reinit == "metropolis" else None
        if self.reinit == "hard" and n_re:
            new = self.base.sample(n_re, generator=generator, device=dev)
            if self.reinit_steps:
                new = self._transitions(fn, new, self.reinit_steps, generator, False)[0].position
            pos[fresh] = new
        state, stats = self._transitions(
            fn, pos, self.n_steps, generator, self.adapt, self.base, restart
        )
        self.buffer[idx] = state.position
        self.n_calls += 1
        self.last_info = stats._replace(kernel=self.kernel_name, n_reinit=n_re)
        return self._negatives(state.position)


class ShortRunChains(_KernelChains):
    r"""Short-run chains (contrastive divergence, CD-k): k transitions from fresh starts.

    Every call starts ``n_chains`` chains from the base P (``init="base"``) or from random rows
    of ``data`` (``init="data"``, classical CD-k), runs ``k`` transitions of the kernel
    targeting the current model and returns the end points as (approximate) model samples.
    CD-k is *biased* for small k (it does not maximise the likelihood); it is offered because
    it is cheap and as the documented recipe of several peers.  ``last_info`` as for
    :class:`PersistentChains`.

    Args:
        dim: dimension d.
        n_chains: chains (negatives) per call.
        k: transitions per call.
        init: ``"base"`` or ``"data"``.
        data: unit-cube data, shape (n, d) (required for ``init="data"``).
        kernel, base, step_size, target_accept, adapt, adapt_window, max_step, inverse_mass,
        **kernel_kwargs: as for :class:`PersistentChains`.
    """

    def __init__(
        self,
        dim: int,
        n_chains: int = 512,
        k: int = 1,
        init: str = "base",
        data: torch.Tensor | None = None,
        kernel: str | ModuleType = "mala",
        base: BaseMeasure | None = None,
        *,
        step_size: float = 0.05,
        target_accept: float | None = None,
        adapt: bool = True,
        adapt_window: int = 200,
        max_step: float = 1.0,
        inverse_mass: torch.Tensor | None = None,
        **kernel_kwargs: Any,
    ):
        if init not in ("base", "data"):
            raise ValueError(f"init must be 'base' or 'data', got {init!r}")
        if init == "data":
            if data is None or data.ndim != 2 or data.shape[1] != dim or data.shape[0] < 1:
                raise ValueError("init='data' needs data of shape (n, dim) on the unit cube")
            if not ((data >= 0) & (data <= 1)).all():
                raise ValueError("data must lie in the unit cube (map it with Box.to_unit)")
        self.dim = int(dim)
        self.n_chains = int(n_chains)
        self.k = int(k)
        if self.n_chains < 1 or self.k < 1:
            raise ValueError("need n_chains >= 1 and k >= 1")
        self.init = init
        self.data = None if data is None else data.detach().to(torch.float64)
        self.kernel_name, self.kernel = _resolve_kernel(kernel)
        self.base = base if base is not None else Uniform(dim)
        self._init_step(
            step_size, target_accept, adapt, adapt_window, max_step, inverse_mass, kernel_kwargs
        )

    def __call__(self, energy: Energy, generator: torch.Generator | None = None) -> Negatives:
        dev = energy.param_device()
        if self.init == "base":
            pos = self.base.sample(self.n_chains, generator=generator, device=dev)
        else:
            data = self.data.to(dev)
            idx = torch.randint(0, data.shape[0], (self.n_chains,), generator=generator, device=dev)
            pos = data[idx]
        fn = chain_energy(energy, self.base)
        state, stats = self._transitions(fn, pos, self.k, generator, self.adapt)
        self.last_info = stats._replace(kernel=self.kernel_name)
        return self._negatives(state.position)

    def state_dict(self) -> dict[str, Any]:
        """The step-size adaptation (the chains themselves start afresh every call)."""
        return _step_state(self.step)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _load_step_state(self.step, state)
