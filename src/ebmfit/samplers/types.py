r"""The state and transition information shared by every MCMC kernel.

Kernels work on the unit cube :math:`[0,1]^d` and are batched over chains: row ``i`` of every
tensor belongs to chain ``i``.  A kernel is a pair of pure functions (blackjax style)::

    state = kernel.init(position, energy_fn)
    state, info = kernel.step(generator, state, energy_fn, step_size, ...)

The energy is :math:`V(u) = -\log \tilde p(u)`, a callable mapping shape (n, d) to shape (n,).
All tensors follow the dtype and device of the starting position; ``generator`` (the only
source of randomness) must live on that device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Info", "State"]


class State(NamedTuple):
    r"""Position of every chain with its energy and energy gradient.

    Attributes:
        position: :math:`u`, shape (n, d), inside :math:`[0,1]^d`.
        energy: :math:`V(u)`, shape (n,).
        grad: :math:`\nabla_u V(u)`, shape (n, d). Cached so that the next transition does not
            recompute it.
    """

    position: torch.Tensor
    energy: torch.Tensor
    grad: torch.Tensor


class Info(NamedTuple):
    r"""What happened in one transition, per chain.

    Attributes:
        acceptance_prob: Metropolis acceptance probability :math:`\min(1, e^{-\Delta H})`,
            shape (n,); identically 1 for the unadjusted kernel.
        is_accepted: whether the proposal was taken, shape (n,), bool.
        is_divergent: :math:`\Delta H` above the divergence threshold or not finite, shape (n,).
        energy: total energy :math:`H = V(u') + \tfrac12 p'^\top M^{-1} p'` at the end of the
            trajectory (the proposal), shape (n,).
    """

    acceptance_prob: torch.Tensor
    is_accepted: torch.Tensor
    is_divergent: torch.Tensor
    energy: torch.Tensor
