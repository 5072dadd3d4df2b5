r"""The energy of a mixture of tilts, :math:`V = -\log \sum_k w_k e^{-V_k}`, with sound bounds.

An analysis object (certificates against mixtures with the base measure, the approximation
study); it is not saved to model files.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Energy
from .interval import EPS64, F64, Interval

__all__ = ["MixtureEnergy"]


class _ZeroEnergy(Energy):
    """V ≡ 0: the base measure P itself as a mixture component."""

    family = "zero-component"

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)

    def interval_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        z = torch.zeros(lo.shape[0], dtype=F64)
        return z, z

    def gradient_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        z = torch.zeros_like(lo, dtype=F64)
        return z, z


def _simplex_max(c: torch.Tensor, plo: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """max Σ_k π_k c_k over plo <= π <= phi, Σ π = 1 (fractional knapsack), along the last axis."""
    base = (plo * c).sum(-1)
    rest = (1 - plo.sum(-1)).clamp_min(0)
    order = torch.argsort(c, dim=-1, descending=True)
    cs = torch.gather(c, -1, order)
    cap = torch.gather((phi - plo).clamp_min(0), -1, order)
    before = torch.cumsum(cap, -1) - cap
    take = torch.minimum(cap, (rest[..., None] - before).clamp_min(0))
    return base + (take * cs).sum(-1)


class MixtureEnergy(Energy):
    r"""The energy of a mixture: :math:`V(u) = -\log \sum_k w_k e^{-V_k(u)}`.

    ``components`` are energies (``None`` stands for V ≡ 0, the base measure P itself) and
    ``log_weights`` the :math:`\log w_k`, shape (K,).  With :math:`V_k` the *normalized*
    energies (:math:`V_k + \log Z_k`), this is :math:`-\log` of the mixture density
    :math:`\sum_k w_k q_k` with respect to P.

    Sound bounds: V is increasing in every :math:`V_k`, so interval bounds map through exactly;
    :math:`\nabla V = \sum_k \pi_k \nabla V_k` with :math:`\pi = \mathrm{softmax}(\log w - V)`,
    enclosed by bounding π on the simplex from the component bounds.
    """

    family = "mixture"

    def __init__(self, components: list[Energy | None], log_weights: torch.Tensor | list[float]):
        super().__init__()
        dims = {c.dim for c in components if c is not None}
        if len(dims) != 1:
            raise ValueError("mixture components must share one dimension (and not all be None)")
        self.dim = dims.pop()
        self.components = nn.ModuleList(
            [c if c is not None else _ZeroEnergy(self.dim) for c in components]
        )
        lw = torch.as_tensor(log_weights, dtype=F64).reshape(-1)
        if lw.numel() != len(components):
            raise ValueError("need one log-weight per component")
        self.register_buffer("log_weights", lw)

    def spec(self) -> dict:
        raise TypeError("MixtureEnergy is an analysis object; it is not saved to model files")

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        Vk = torch.stack([c(u).to(F64) for c in self.components], -1)
        return -torch.logsumexp(self.log_weights - Vk, -1)

    @torch.no_grad()
    def _component_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        bs = [c.interval_bounds(lo, hi) for c in self.components]
        return torch.stack([b[0].to(F64) for b in bs], -1), torch.stack(
            [b[1].to(F64) for b in bs], -1
        )

    @torch.no_grad()
    def interval_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        Vl, Vh = self._component_bounds(lo.to(F64), hi.to(F64))
        vlo = -torch.logsumexp(self.log_weights - Vl, -1)
        vhi = -torch.logsumexp(self.log_weights - Vh, -1)
        tol = 8 * EPS64 * (1 + vlo.abs() + vhi.abs())
        return vlo - tol, vhi + tol

    @torch.no_grad()
    def gradient_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval | None:
        lo, hi = lo.to(F64), hi.to(F64)
        Vl, Vh = self._component_bounds(lo, hi)
        g = [c.gradient_bounds(lo, hi) for c in self.components]
        if any(x is None for x in g):
            return None
        Gl = torch.stack([x[0] for x in g], -1)  # (m, d, K)
        Gh = torch.stack([x[1] for x in g], -1)
        a_hi, a_lo = self.log_weights - Vl, self.log_weights - Vh  # logits' range
        K = a_hi.shape[-1]
        eye = torch.eye(K, dtype=torch.bool)
        # π_k >= 1 / (1 + Σ_{j≠k} e^{a_hi_j - a_lo_k}),  π_k <= 1 / (1 + Σ_{j≠k} e^{a_lo_j - a_hi_k})
        x = torch.where(eye, -torch.inf, a_hi[:, None, :] - a_lo[:, :, None])
        plo = torch.exp(-torch.logaddexp(torch.zeros(()), torch.logsumexp(x, -1)))
        y = torch.where(eye, -torch.inf, a_lo[:, None, :] - a_hi[:, :, None])
        phi = torch.exp(-torch.logaddexp(torch.zeros(()), torch.logsumexp(y, -1)))
        plo = (plo * (1 - 1e-12)).clamp(0, 1)[:, None, :].expand_as(Gl)
        phi = (phi * (1 + 1e-12) + 1e-300).clamp(0, 1)[:, None, :].expand_as(Gl)
        ghi = _simplex_max(Gh, plo, phi)
        glo = -_simplex_max(-Gl, plo, phi)
        slack = 1e-10 * torch.maximum(Gl.abs(), Gh.abs()).amax(-1) + 1e-300
        return glo - slack, ghi + slack
