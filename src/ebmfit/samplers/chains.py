r"""Run a batch of chains with warm-up adaptation: a thin loop over a kernel's ``init``/``step``.

Warm-up (``warmup`` transitions, discarded) follows Stan's windowed schedule
(:func:`ebmfit.samplers.adapt.build_schedule`): dual averaging drives the mean acceptance
probability over chains to the kernel's target, and the pooled variance of the positions over
all chains in each slow window becomes the diagonal inverse mass matrix.  After warm-up the step
size is fixed to the dual-averaging average :math:`\bar\varepsilon`, so the sampling phase is a
time-homogeneous Markov chain with the exact kernel's invariant law.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import torch

from . import adapt as _adapt
from . import hmc, mala, ula
from .integrators import EnergyFn

__all__ = ["KERNELS", "run_chains"]

#: Kernels available by name.
KERNELS: dict[str, ModuleType] = {"ula": ula, "mala": mala, "hmc": hmc}


def run_chains(
    kernel: str | Any,
    energy_fn: EnergyFn,
    init_position: torch.Tensor,
    n_steps: int,
    generator: torch.Generator,
    *,
    warmup: int = 500,
    adapt: bool = True,
    thin: int = 1,
    step_size: float = 0.1,
    target_accept: float | None = None,
    adapt_mass: bool = True,
    inverse_mass: torch.Tensor | None = None,
    **kernel_kwargs: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    r"""Run ``n_chains`` chains: ``warmup`` adapted transitions, then ``n_steps`` recorded ones.

    Args:
        kernel: ``"ula"``, ``"mala"``, ``"hmc"``, or any object with the kernel functions
            ``init(position, energy_fn)`` and ``step(generator, state, energy_fn, step_size,
            inverse_mass=..., **kernel_kwargs)`` (and optionally ``TARGET_ACCEPT``).
        energy_fn: :math:`V` on the unit cube, shape (n, d) -> (n,).
        init_position: starting points, shape (n_chains, d), inside :math:`[0,1]^d`.
        n_steps: transitions after warm-up; every ``thin``-th one is kept.
        generator: the only source of randomness.
        warmup: adapted transitions before sampling (not returned).
        adapt: adapt the step size and, if ``adapt_mass``, the diagonal inverse mass during
            warm-up.  Only kernels with a target acceptance are adapted: for ULA (no acceptance
            step, and its bias is set by the step size) warm-up is plain burn-in.
        thin: keep every ``thin``-th draw.
        step_size: initial (or, without adaptation, fixed) :math:`\varepsilon`.
        target_accept: mean acceptance to adapt to; default the kernel's ``TARGET_ACCEPT``
            (0.574 for MALA, 0.8 for HMC).
        adapt_mass: estimate a diagonal :math:`M^{-1}` during warm-up.
        inverse_mass: initial (or fixed) diagonal :math:`M^{-1}`, shape (d,).
        **kernel_kwargs: passed to ``kernel.step``, e.g. ``num_integration_steps=10`` for HMC.

    Returns:
        ``(samples, info)``: ``samples`` of shape (n_chains, n_steps // thin, d) on the device of
        ``init_position``, and a dict with ``acceptance_rate`` (float, mean over chains and
        sampling transitions), ``divergences`` and ``warmup_divergences`` (int, counts of
        divergent chain-transitions), ``step_size`` (float, final :math:`\varepsilon`),
        ``inverse_mass`` (tensor of shape (d,) or None), ``n_energy_evals`` (int, batched
        energy+gradient calls including ``init``) and ``state`` (the final kernel state, to
        continue the chains).
    """
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of {sorted(KERNELS)}")
        kernel = KERNELS[kernel]
    if n_steps < 0 or warmup < 0 or thin < 1:
        raise ValueError(
            f"need n_steps >= 0, warmup >= 0, thin >= 1; got {n_steps}, {warmup}, {thin}"
        )
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")

    n_evals = 0

    def counted(u: torch.Tensor) -> torch.Tensor:
        nonlocal n_evals
        n_evals += 1
        return energy_fn(u)

    state = kernel.init(init_position, counted)
    target = target_accept if target_accept is not None else getattr(kernel, "TARGET_ACCEPT", None)
    adapt_step = adapt and target is not None  # nothing is adapted for ULA
    adapt_mass = adapt_step and adapt_mass
    schedule = _adapt.build_schedule(warmup) if adapt_mass else [(False, False)] * warmup
    eps = float(step_size)
    da = _adapt.dual_averaging_init(eps)
    welford = _adapt.welford_init(state.position)
    zero = torch.zeros((), dtype=torch.int64, device=state.position.device)
    warm_div = zero
    for accumulate, window_end in schedule:
        state, info = kernel.step(
            generator, state, counted, eps, inverse_mass=inverse_mass, **kernel_kwargs
        )
        warm_div = warm_div + info.is_divergent.sum()
        if adapt_step:
            da = _adapt.dual_averaging_update(da, float(info.acceptance_prob.mean()), target)
            eps = math.exp(da.log_step_size)
        if accumulate:
            welford = _adapt.welford_update(welford, state.position)
        if window_end:
            inverse_mass = _adapt.welford_variance(welford)
            welford = _adapt.welford_init(state.position)
            if adapt_step:
                da = _adapt.dual_averaging_init(eps)
    if adapt_step and warmup > 0:
        eps = math.exp(da.log_step_size_avg)

    draws = []
    acc = torch.zeros((), dtype=state.position.dtype, device=state.position.device)
    div = zero
    for i in range(n_steps):
        state, info = kernel.step(
            generator, state, counted, eps, inverse_mass=inverse_mass, **kernel_kwargs
        )
        acc = acc + info.acceptance_prob.mean()
        div = div + info.is_divergent.sum()
        if (i + 1) % thin == 0:
            draws.append(state.position)
    n, d = state.position.shape
    samples = torch.stack(draws, dim=1) if draws else state.position.new_empty((n, 0, d))
    summary = {
        "acceptance_rate": float(acc) / n_steps if n_steps else math.nan,
        "divergences": int(div),
        "warmup_divergences": int(warm_div),
        "step_size": eps,
        "inverse_mass": inverse_mass,
        "n_energy_evals": n_evals,
        "state": state,
    }
    return samples, summary
