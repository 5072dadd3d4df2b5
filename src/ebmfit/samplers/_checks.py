"""Input validation shared by the kernels' ``init`` functions."""

from __future__ import annotations

import torch

from .integrators import EnergyFn, energy_and_grad
from .types import State


def _rows(mask: torch.Tensor, limit: int = 10) -> str:
    idx = torch.nonzero(mask).flatten().tolist()
    more = f" (and {len(idx) - limit} more)" if len(idx) > limit else ""
    return f"{idx[:limit]}{more}"


def checked_init(position: torch.Tensor, energy_fn: EnergyFn) -> State:
    """Validate ``position`` (shape (n, d), finite, in the cube); evaluate the energy there."""
    if not isinstance(position, torch.Tensor) or position.ndim != 2:
        raise ValueError("position must be a tensor of shape (n_chains, d)")
    if not position.dtype.is_floating_point:
        raise ValueError(f"position must be floating point, got {position.dtype}")
    position = position.detach()
    bad = ~((position >= 0) & (position <= 1)).all(-1)  # NaN fails both comparisons
    if bad.any():
        raise ValueError(
            f"chains {_rows(bad)} start outside the unit cube [0,1]^d (or at NaN); "
            "map the data with Box.to_unit first"
        )
    energy, grad = energy_and_grad(energy_fn, position)
    if energy.shape != position.shape[:1]:
        raise ValueError(
            "energy_fn must map shape (n, d) to (n,), "
            f"got {tuple(energy.shape)} for n={position.shape[0]}"
        )
    bad = ~(torch.isfinite(energy) & torch.isfinite(grad).all(-1))
    if bad.any():
        raise ValueError(
            f"energy or its gradient is not finite at the start of chains {_rows(bad)}"
        )
    return State(position, energy, grad)
