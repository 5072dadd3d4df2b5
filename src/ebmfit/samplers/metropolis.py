r"""The Metropolis correction shared by the exact kernels.

For a deterministic proposal :math:`\Phi` on phase space that is an involution
(:math:`\Phi \circ \Phi = \mathrm{id}`) and preserves volume, accepting :math:`z' = \Phi(z)` with
probability :math:`\alpha = \min(1, \pi(z') / \pi(z)) = \min(1, e^{-\Delta H})`,
:math:`\Delta H = H(z') - H(z)`, leaves :math:`\pi \propto e^{-H}` invariant (detailed balance
with respect to the pushed-forward measure; e.g. Tierney 1998, Neal 2011 §5.3.2).

A proposal whose :math:`\Delta H` is NaN or :math:`+\infty` (energy undefined or infinite, a
blown-up trajectory) is rejected with probability one and flagged as divergent, as is any
proposal with :math:`\Delta H` above ``divergence_threshold`` (blackjax uses 1000).
"""

from __future__ import annotations

import torch

from .types import State

__all__ = ["accept_reject", "select", "select_state"]


def accept_reject(
    generator: torch.Generator, delta_energy: torch.Tensor, divergence_threshold: float = 1000.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Accept each chain's proposal with probability :math:`\min(1, e^{-\Delta H})`.

    Args:
        generator: source of the uniform variates.
        delta_energy: :math:`\Delta H`, shape (n,).
        divergence_threshold: :math:`\Delta H` above which a transition counts as divergent.

    Returns:
        ``(acceptance_prob, is_accepted, is_divergent)``, each of shape (n,).
    """
    is_divergent = (delta_energy <= divergence_threshold).logical_not_()  # also catches NaN
    # exp(min(0, -ΔH)); NaN stays NaN through clamp and exp and becomes probability 0
    acceptance_prob = torch.neg(delta_energy).clamp_(max=0.0).exp_().nan_to_num_(nan=0.0)
    uniform = torch.rand(
        delta_energy.shape,
        generator=generator,
        dtype=delta_energy.dtype,
        device=delta_energy.device,
    )
    return acceptance_prob, uniform < acceptance_prob, is_divergent


def select(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Row-wise choice: ``new[i]`` where ``mask[i]`` else ``old[i]``; ``mask`` has shape (n,)."""
    if new.ndim > 1:
        mask = mask.reshape(mask.shape + (1,) * (new.ndim - 1))
    return torch.where(mask, new, old)


def select_state(mask: torch.Tensor, proposed: State, current: State) -> State:
    """Chain-wise choice of a whole :class:`State`: ``proposed`` where ``mask`` else ``current``
    (the accept step every kernel ends with)."""
    return State(*(select(mask, a, b) for a, b in zip(proposed, current, strict=True)))
