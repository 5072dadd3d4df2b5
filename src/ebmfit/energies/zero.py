r"""The zero energy :math:`V \equiv 0`: the model is exactly its base measure."""

from __future__ import annotations

import torch

from .base import Energy

__all__ = ["ZeroEnergy"]


class ZeroEnergy(Energy):
    """:math:`V(u) = 0`; shape (n, d) → (n,).  Its bounds are exact and :math:`\\log Z = 0`."""

    family = "zero"

    def __init__(self, dim: int, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.dim = int(dim)
        # a buffer carries the device and dtype (no parameters: nothing to train)
        self.register_buffer("_anchor", torch.zeros((), dtype=dtype), persistent=False)

    def spec(self) -> dict:
        return {"family": self.family, "dim": self.dim}

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = torch.zeros(u.shape[:-1], dtype=self._anchor.dtype, device=u.device)
        if u.requires_grad:  # a graph to u with a zero gradient (gradient samplers, AIS)
            z = z + 0.0 * torch.nan_to_num(u, 0.0, 0.0, 0.0).sum(-1).to(z.dtype)
        return z

    @torch.no_grad()
    def interval_bounds(
        self, lo: torch.Tensor, hi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(lo.shape[0], dtype=torch.float64, device=lo.device)
        return z, z.clone()
