r"""The negative-phase protocol: what a strategy returns and reports.

A strategy (:mod:`ebmfit.training.negatives`) is a callable ``strategy(energy, generator) ->``
:class:`Negatives`, weighted points :math:`(u_k, \log w_k)` from which the fit loop forms
:math:`\pi_k \propto w_k e^{-V(u_k)}` (``self_normalize=True``) or :math:`\pi_k \propto w_k`;
after each call ``strategy.last_info`` is a :class:`NegativesInfo`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

__all__ = ["NegativePhaseError", "Negatives", "NegativesInfo", "PotentialFn", "info_fields"]


#: The potential :math:`U = V - \log p` on the cube, shape (n, d) → (n,) (the chains' target).
PotentialFn = Callable[[torch.Tensor], torch.Tensor]


class NegativePhaseError(FloatingPointError):
    """The negative phase cannot be formed (e.g. the energy is not finite where chains stand)."""


class Negatives(NamedTuple):
    points: torch.Tensor  # (m, d) on the unit cube
    log_weights: torch.Tensor  # (m,) log w_k (float64)
    self_normalize: bool  # π ∝ w e^{-V} (True) or π ∝ w (False)


class NegativesInfo(NamedTuple):
    """Diagnostics of one call of a strategy (``strategy.last_info``); None where a field does
    not apply to the strategy.

    Attributes:
        n_points: points returned (grid and importance strategies).
        kernel: the MCMC kernel's name (chain strategies).
        acceptance_rate: mean Metropolis acceptance over the call's transitions.
        step_size: mean step size ε over the call's transitions.
        divergences: divergent chain-transitions in the call.
        mean_jump: mean distance a chain moved during the call.
        n_steps: transitions per chain in the call.
        n_reinit: chains restarted from the base (persistent chains).
        restart_acceptance: acceptance of the independence restarts (``reinit="metropolis"``).
    """

    n_points: int | None = None
    kernel: str | None = None
    acceptance_rate: float | None = None
    step_size: float | None = None
    divergences: int | None = None
    mean_jump: float | None = None
    n_steps: int | None = None
    n_reinit: int | None = None
    restart_acceptance: float | None = None


def info_fields(info: NegativesInfo | Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields of a ``last_info`` that apply (not None), as a dict; a mapping (a strategy
    of one's own) is copied, None gives ``{}``."""
    if info is None:
        return {}
    if isinstance(info, NegativesInfo):
        return {k: v for k, v in info._asdict().items() if v is not None}
    return dict(info)
