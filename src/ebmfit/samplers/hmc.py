r"""Hamiltonian Monte Carlo on the unit cube with elastic reflection at the faces (exact).

One transition from :math:`u`:

1. refresh the momentum, :math:`p \sim \mathcal N(0, M)` with :math:`M^{-1} = \mathrm{diag}(m)`;
2. integrate :math:`L` reflected leapfrog steps of size :math:`\varepsilon`,
   :math:`(u', p') = \Psi(u, p)` (see :mod:`ebmfit.samplers.integrators`): position and momentum
   are mirrored at the faces, so :math:`u'` is in the cube without any clamping;
3. accept :math:`u'` with probability :math:`\min(1, e^{-\Delta H})`,
   :math:`\Delta H = H(u', p') - H(u, p)`, :math:`H = V + \tfrac12 p^\top M^{-1} p`.

**Exactness.** The reflected drift and the kicks are volume-preserving and reversible
(:math:`F D F = D^{-1}`, :math:`F K F = K^{-1}` with :math:`F(u,p) = (u,-p)`), hence so is
:math:`\Psi`, and :math:`\Phi = F \circ \Psi` is a volume-preserving involution of
:math:`[0,1]^d \times \mathbb R^d`.  Metropolis with an involutive volume-preserving proposal
and ratio :math:`\pi(\Phi z)/\pi(z)` leaves :math:`\pi \propto e^{-H}` invariant
(:mod:`ebmfit.samplers.metropolis`); :math:`H \circ F = H`, so the final flip can be dropped.
The momentum refresh is a Gibbs step for the same :math:`\pi`.  The :math:`u`-marginal of
:math:`\pi` is :math:`e^{-V(u)}` on the cube, so the chain targets exactly the normalized
density :math:`e^{-V}/Z` there, for any :math:`\varepsilon` and :math:`L`.  No image sums and no
boundary correction terms appear: the reflection enters the ratio only through :math:`p'`.

**Cost.** :math:`L` energy/gradient evaluations per transition (:math:`L + 1` gradients used, the
first cached in :class:`State`), not :math:`2L`.

References:
    Neal, *MCMC using Hamiltonian dynamics*, Handbook of MCMC (2011), §5.5.1.5 (constraints by
    reflection).  Betancourt, *A conceptual introduction to HMC*, arXiv:1701.02434.
"""

from __future__ import annotations

import torch

from ._checks import checked_init
from .integrators import EnergyFn, StepSize, kinetic_energy, reflected_leapfrog, sample_momentum
from .metropolis import accept_reject, select_state
from .types import Info, State

__all__ = ["TARGET_ACCEPT", "Info", "State", "init", "step"]

#: Default target of the mean acceptance probability for step-size adaptation.
TARGET_ACCEPT = 0.8


def init(position: torch.Tensor, energy_fn: EnergyFn) -> State:
    r"""Start chains at ``position`` (shape (n, d), inside :math:`[0,1]^d`).

    Evaluates :math:`V` and :math:`\nabla V` once.  Raises ``ValueError`` naming the chains that
    start outside the cube or where the energy is not finite.
    """
    return checked_init(position, energy_fn)


def step(
    generator: torch.Generator,
    state: State,
    energy_fn: EnergyFn,
    step_size: StepSize,
    num_integration_steps: int = 10,
    inverse_mass: torch.Tensor | None = None,
    divergence_threshold: float = 1000.0,
) -> tuple[State, Info]:
    r"""One HMC transition for every chain.

    Args:
        generator: source of the momentum and the acceptance uniforms.
        state: current :class:`State`, position of shape (n, d).
        energy_fn: :math:`V`, shape (n, d) -> (n,).
        step_size: leapfrog :math:`\varepsilon`: a float or a tensor of shape (n,).
        num_integration_steps: :math:`L`.
        inverse_mass: diagonal :math:`M^{-1}`, shape (d,), or ``None`` (identity).
        divergence_threshold: :math:`\Delta H` above which the transition is flagged divergent.

    Returns:
        ``(state, info)``: the new :class:`State` and an :class:`Info` of per-chain tensors.
    """
    momentum, k0 = sample_momentum(generator, state.position, inverse_mass)
    q, p, v, g = reflected_leapfrog(
        state.position,
        momentum,
        state.grad,
        energy_fn,
        step_size,
        num_integration_steps,
        inverse_mass,
    )
    h1 = v + kinetic_energy(p, inverse_mass)
    delta = h1 - (state.energy + k0)
    prob, accepted, divergent = accept_reject(generator, delta, divergence_threshold)
    return select_state(accepted, State(q, v, g), state), Info(prob, accepted, divergent, h1)
