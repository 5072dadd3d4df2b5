r"""Unadjusted Langevin algorithm (ULA) on the unit cube, reflected at the faces (biased).

.. math:: u' = r\bigl(u - \tfrac{\varepsilon^2}{2} M^{-1} \nabla V(u)
    + \varepsilon M^{-1/2} \xi\bigr), \qquad \xi \sim \mathcal N(0, I),

with :math:`r` the mirror map (:func:`ebmfit.domain.reflect_unit`), i.e. the Euler scheme with
time step :math:`\gamma = \varepsilon^2/2` for the Langevin diffusion
:math:`du = -M^{-1}\nabla V\,dt + \sqrt{2}M^{-1/2}\,dW` with normal reflection at the faces.  It is
exactly the MALA proposal of :mod:`ebmfit.samplers.mala`, always accepted.

**Bias.** There is no Metropolis correction, so the chain does *not* have :math:`e^{-V}/Z` as its
invariant law: expectations are off by :math:`O(\gamma) = O(\varepsilon^2)` in the time step
for smooth :math:`V` (interior: Talay & Tubaro 1990; mirror reflection: the symmetrized reflected
Euler scheme has weak order one for smooth domains, Bossy, Gobet & Talay, J. Appl. Prob. 41
(2004), whereas a *projected* scheme is only :math:`O(\sqrt\gamma)`; the box's corners and the
stationary, rather than finite-time, law are not covered by that proof).  The
bias does not average away with more steps or chains; use it for cheap short-run negatives or
when that bias is acceptable, and :mod:`~ebmfit.samplers.mala` / :mod:`~ebmfit.samplers.hmc`
for exact sampling.  (For constant :math:`V` the reflected Gaussian walk is symmetric, so the
uniform law is invariant exactly.)

``Info.acceptance_prob`` is 1 and ``Info.is_accepted`` is True, except for a chain whose proposal
has a non-finite energy or gradient: that chain stays where it is and is flagged divergent (there
is no accept/reject to fall back on).
"""

from __future__ import annotations

import torch

from ._checks import checked_init
from .integrators import EnergyFn, StepSize, kinetic_energy, reflected_leapfrog, sample_momentum
from .metropolis import select_state
from .types import Info, State

__all__ = ["TARGET_ACCEPT", "Info", "State", "init", "step"]

#: ULA has no acceptance step, so its step size is not adapted to an acceptance rate.
TARGET_ACCEPT = None


def init(position: torch.Tensor, energy_fn: EnergyFn) -> State:
    r"""Start chains at ``position`` (shape (n, d), in :math:`[0,1]^d`); one energy+gradient."""
    return checked_init(position, energy_fn)


def step(
    generator: torch.Generator,
    state: State,
    energy_fn: EnergyFn,
    step_size: StepSize,
    inverse_mass: torch.Tensor | None = None,
) -> tuple[State, Info]:
    r"""One reflected ULA step for every chain.

    Args:
        generator: source of :math:`\xi`.
        state: current :class:`State`, position of shape (n, d).
        energy_fn: :math:`V`, shape (n, d) -> (n,).
        step_size: :math:`\varepsilon` (time step :math:`\varepsilon^2/2`): a float or a tensor of
            shape (n,).
        inverse_mass: diagonal preconditioner :math:`M^{-1}`, shape (d,), or ``None``.

    Returns:
        ``(state, info)``; ``info.energy`` is :math:`V(u') + K(p')` after the step.
    """
    momentum, _ = sample_momentum(generator, state.position, inverse_mass)
    q, p, v, g = reflected_leapfrog(
        state.position, momentum, state.grad, energy_fn, step_size, 1, inverse_mass
    )
    ok = torch.isfinite(v) & torch.isfinite(g).all(-1)
    info = Info(torch.ones_like(v), ok, ~ok, v + kinetic_energy(p, inverse_mass))
    return select_state(ok, State(q, v, g), state), info
