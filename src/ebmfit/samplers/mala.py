r"""Metropolis-adjusted Langevin (MALA) on the unit cube with reflection at the faces (exact).

The proposal is the Langevin step folded into the cube,

.. math:: u' = r\bigl(u - \tfrac{\varepsilon^2}{2} M^{-1} \nabla V(u)
    + \varepsilon M^{-1/2} \xi\bigr), \qquad \xi \sim \mathcal N(0, I),

with :math:`r` the mirror map (:func:`ebmfit.domain.reflect_unit`); in the usual notation the
Langevin time step is :math:`\gamma = \varepsilon^2 / 2`.

**Choice of acceptance ratio.** The folded proposal density :math:`q(u' \mid u)` is a sum of the
Gaussian over all mirror images of :math:`u'`, so a textbook MH ratio
:math:`\pi(u') q(u \mid u') / \pi(u) q(u' \mid u)` would need (truncated) image sums.  Instead
MALA is implemented as **HMC with a single reflected leapfrog step** (:mod:`ebmfit.samplers.hmc`
with :math:`L = 1`, momentum :math:`p = M^{1/2}\xi`), whose ratio :math:`e^{-\Delta H}` is exact
for every :math:`\varepsilon` by the volume-preservation/reversibility argument there — no
truncation, no step-size restriction.

When the step crosses no face this *is* classical MALA: with
:math:`u' = u + \varepsilon M^{-1}(p - \tfrac\varepsilon2 \nabla V(u))` and
:math:`p' = p - \tfrac\varepsilon2 (\nabla V(u) + \nabla V(u'))`,

.. math:: \frac{\|u' - u + \tfrac{\varepsilon^2}{2} M^{-1}\nabla V(u)\|^2_M}{2\varepsilon^2}
          = K(p), \qquad
          \frac{\|u - u' + \tfrac{\varepsilon^2}{2} M^{-1}\nabla V(u')\|^2_M}{2\varepsilon^2}
          = K(p'),

so :math:`\log[\pi(u') q(u\mid u') / \pi(u) q(u'\mid u)] = -\Delta H`.  When it crosses a face,
the kernel differs from the image-sum MH kernel (it conditions on the momentum path) but has the
same invariant density.  Cost: one energy/gradient evaluation per step (the gradient at
:math:`u'` is cached in the state).

References:
    Roberts & Tweedie, *Exponential convergence of Langevin distributions and their discrete
    approximations*, Bernoulli 2 (1996).  Neal (2011), §5.5.2 (Langevin = one-step HMC).
"""

from __future__ import annotations

import torch

from . import hmc
from ._checks import checked_init
from .integrators import EnergyFn, StepSize
from .types import Info, State

__all__ = ["TARGET_ACCEPT", "Info", "State", "init", "step"]

#: Optimal mean acceptance for MALA in high dimension (Roberts & Rosenthal 1998).
TARGET_ACCEPT = 0.574


def init(position: torch.Tensor, energy_fn: EnergyFn) -> State:
    r"""Start chains at ``position`` (shape (n, d), in :math:`[0,1]^d`); one energy+gradient."""
    return checked_init(position, energy_fn)


def step(
    generator: torch.Generator,
    state: State,
    energy_fn: EnergyFn,
    step_size: StepSize,
    inverse_mass: torch.Tensor | None = None,
    divergence_threshold: float = 1000.0,
) -> tuple[State, Info]:
    r"""One reflected MALA step for every chain.

    Args:
        generator: source of :math:`\xi` and of the acceptance uniforms.
        state: current :class:`State`, position of shape (n, d).
        energy_fn: :math:`V`, shape (n, d) -> (n,).
        step_size: :math:`\varepsilon` (proposal std :math:`\varepsilon M^{-1/2}`): a float or a
            tensor of shape (n,).
        inverse_mass: diagonal preconditioner :math:`M^{-1}`, shape (d,), or ``None``.
        divergence_threshold: :math:`\Delta H` above which the step is flagged divergent.

    Returns:
        ``(state, info)`` as in :func:`ebmfit.samplers.hmc.step`.
    """
    return hmc.step(
        generator,
        state,
        energy_fn,
        step_size,
        num_integration_steps=1,
        inverse_mass=inverse_mass,
        divergence_threshold=divergence_threshold,
    )
