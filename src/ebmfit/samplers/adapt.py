r"""Warm-up adaptation: dual-averaging step size and a Welford estimate of a diagonal mass matrix.

**Dual averaging** (Nesterov 2009; Hoffman & Gelman, JMLR 15 (2014), Algorithm 5).  With
:math:`\alpha_t` the (mean over chains) acceptance probability at iteration :math:`t` and
:math:`\delta` the target,

.. math::
    \bar H_t &= (1 - \tfrac{1}{t + t_0}) \bar H_{t-1} + \tfrac{1}{t + t_0} (\delta - \alpha_t), \\
    \log \varepsilon_t &= \mu - \tfrac{\sqrt t}{\gamma} \bar H_t, \qquad
    \log \bar\varepsilon_t
        &= t^{-\kappa} \log \varepsilon_t + (1 - t^{-\kappa}) \log \bar\varepsilon_{t-1},

with :math:`\mu = \log(10 \varepsilon_0)`, :math:`\gamma = 0.05`, :math:`t_0 = 10`,
:math:`\kappa = 0.75`.  Sampling uses :math:`\varepsilon_t` during warm-up and
:math:`\bar\varepsilon` afterwards.

**Welford** running mean and variance, batched with Chan et al.'s pairwise update so that a
whole (n_chains, d) batch is absorbed at once.  The variance of the positions is the diagonal
:math:`M^{-1}`, regularized as in Stan: :math:`\frac{N}{N+5}\hat\sigma^2 + 10^{-3}\frac{5}{N+5}`.

**Schedule** (Stan's windowed adaptation): an initial fast window (step size only), slow
windows of doubling length that accumulate the variance and set :math:`M^{-1}` (and restart dual
averaging) at their ends, and a final fast window.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "DualAveragingState",
    "WelfordState",
    "build_schedule",
    "dual_averaging_init",
    "dual_averaging_update",
    "welford_init",
    "welford_update",
    "welford_variance",
]


class DualAveragingState(NamedTuple):
    r"""Dual-averaging iterate.

    Attributes:
        log_step_size: :math:`\log\varepsilon_t`, the step size to use next.
        log_step_size_avg: :math:`\log\bar\varepsilon_t`, the step size to keep after warm-up.
        step: :math:`t`, number of updates so far.
        avg_error: :math:`\bar H_t`.
        mu: shrinkage point :math:`\mu`.
    """

    log_step_size: float
    log_step_size_avg: float
    step: int
    avg_error: float
    mu: float


def dual_averaging_init(step_size: float) -> DualAveragingState:
    r"""Start at :math:`\varepsilon_0` = ``step_size`` with :math:`\mu = \log(10\varepsilon_0)`."""
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    log_eps = math.log(step_size)
    return DualAveragingState(log_eps, log_eps, 0, 0.0, math.log(10.0) + log_eps)


def dual_averaging_update(
    state: DualAveragingState,
    acceptance_prob: float,
    target_accept: float = 0.8,
    gamma: float = 0.05,
    t0: float = 10.0,
    kappa: float = 0.75,
) -> DualAveragingState:
    r"""One dual-averaging update from the observed acceptance probability (a float in [0, 1]).

    A NaN acceptance is treated as 0 (the step was too large).
    """
    a = 0.0 if not math.isfinite(acceptance_prob) else float(acceptance_prob)
    t = state.step + 1
    w = 1.0 / (t + t0)
    avg_error = (1.0 - w) * state.avg_error + w * (target_accept - a)
    log_eps = state.mu - math.sqrt(t) / gamma * avg_error
    eta = t ** (-kappa)
    log_eps_avg = eta * log_eps + (1.0 - eta) * state.log_step_size_avg
    return DualAveragingState(log_eps, log_eps_avg, t, avg_error, state.mu)


class WelfordState(NamedTuple):
    """Running moments of a stream of (batches of) d-vectors.

    Attributes:
        count: number of vectors seen.
        mean: running mean, shape (d,).
        m2: running sum of squared deviations, shape (d,).
    """

    count: int
    mean: torch.Tensor
    m2: torch.Tensor


def welford_init(like: torch.Tensor) -> WelfordState:
    """An empty accumulator for vectors of the last dimension, dtype and device of ``like``."""
    z = torch.zeros(like.shape[-1], dtype=like.dtype, device=like.device)
    return WelfordState(0, z, z.clone())


def welford_update(state: WelfordState, batch: torch.Tensor) -> WelfordState:
    r"""Absorb a batch of shape (n, d) (or a single vector of shape (d,)).

    Chan, Golub & LeVeque (1979): with batch size :math:`n_b`, mean :math:`\bar x_b` and sum of
    squares :math:`S_b`, :math:`\delta = \bar x_b - \bar x`,
    :math:`\bar x \leftarrow \bar x + \delta n_b / N`, :math:`M_2 \leftarrow M_2 + S_b +
    \delta^2 n n_b / N`, :math:`N = n + n_b`.
    """
    batch = batch.detach().reshape(-1, state.mean.shape[0]).to(state.mean)
    nb = batch.shape[0]
    if nb == 0:
        return state
    mb = batch.mean(0)
    sb = ((batch - mb) ** 2).sum(0)
    n = state.count + nb
    delta = mb - state.mean
    mean = state.mean + delta * (nb / n)
    m2 = state.m2 + sb + delta * delta * (state.count * nb / n)
    return WelfordState(n, mean, m2)


def welford_variance(state: WelfordState, regularize: bool = True) -> torch.Tensor:
    r"""Sample variance (ddof=1), shape (d,); with ``regularize``, Stan's shrinkage toward 1e-3."""
    if state.count < 2:
        raise ValueError("need at least two vectors to estimate a variance")
    var = state.m2 / (state.count - 1)
    if not regularize:
        return var
    n = state.count
    return (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))


def build_schedule(
    num_steps: int, initial_buffer: int = 75, first_window: int = 25, final_buffer: int = 50
) -> list[tuple[bool, bool]]:
    """Stan's warm-up schedule as one ``(accumulate_variance, window_ends_here)`` pair per step.

    If the three buffers do not fit, they become 15% / 75% / 10% of ``num_steps``; with fewer
    than 20 steps there is no variance window at all (step size only).
    """
    if num_steps < 20:
        return [(False, False)] * num_steps
    if initial_buffer + first_window + final_buffer > num_steps:
        initial_buffer = int(0.15 * num_steps)
        final_buffer = int(0.1 * num_steps)
        first_window = num_steps - initial_buffer - final_buffer
    schedule = [(False, False)] * num_steps
    end_slow = num_steps - final_buffer
    start, size = initial_buffer, first_window
    while start < end_slow:
        end = start + size
        if end + 2 * size > end_slow:
            end = end_slow
        for i in range(start, end):
            schedule[i] = (True, i == end - 1)
        start, size = end, 2 * size
    return schedule
