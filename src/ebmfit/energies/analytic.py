r"""Closed-form energies and a wrapper for any callable.

* :class:`QuadraticEnergy`: :math:`V(u) = \tfrac12 (u-\mu)^\top \Lambda (u-\mu)`, a Gaussian
  truncated to the cube (closed-form normalizer when Λ is diagonal).
* :class:`CallableEnergy`: any function ``(n, d) → (n,)``; sound bounds only when the user
  supplies a Lipschitz constant L (w.r.t. the Euclidean norm): :math:`|V(u) - V(c)| \le L\|u-c\|`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from numpy.typing import ArrayLike
from torch import nn

from .base import Energy
from .interval import EPS64, F64, Interval, mid_rad

__all__ = ["CallableEnergy", "QuadraticEnergy"]


class QuadraticEnergy(Energy):
    """:math:`\\tfrac12 (u-\\mu)^T \\Lambda (u-\\mu)` with trainable μ (d,) and symmetric Λ (d, d)."""

    family = "quadratic"

    def __init__(
        self,
        dim: int,
        mean: ArrayLike | None = None,
        precision: ArrayLike | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__()
        self.dim = int(dim)
        mean = torch.full((dim,), 0.5) if mean is None else torch.as_tensor(mean, dtype=dtype)
        precision = torch.eye(dim) if precision is None else torch.as_tensor(precision, dtype=dtype)
        self.mean = nn.Parameter(mean.to(dtype).reshape(dim).clone())
        self.precision = nn.Parameter(precision.to(dtype).reshape(dim, dim).clone())

    def spec(self) -> dict:
        return {"family": self.family, "dim": self.dim}

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = u.to(self.mean.dtype) - self.mean
        P = (self.precision + self.precision.T) / 2
        return 0.5 * ((z @ P) * z).sum(-1)

    @torch.no_grad()
    def interval_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        P = ((self.precision + self.precision.T) / 2).to(torch.float64)
        mu = self.mean.to(torch.float64)
        a, b = lo.to(torch.float64) - mu, hi.to(torch.float64) - mu  # z in [a, b]
        # products z_i z_j as intervals (squares exactly on the diagonal)
        c = torch.stack(
            [
                a[:, :, None] * a[:, None, :],
                a[:, :, None] * b[:, None, :],
                b[:, :, None] * a[:, None, :],
                b[:, :, None] * b[:, None, :],
            ]
        )
        plo, phi = c.amin(0), c.amax(0)
        diag_lo = torch.where((a <= 0) & (b >= 0), torch.zeros_like(a), torch.minimum(a * a, b * b))
        diag_hi = torch.maximum(a * a, b * b)
        eye = torch.eye(self.dim, dtype=torch.bool)
        plo = torch.where(eye, torch.diag_embed(diag_lo), plo)
        phi = torch.where(eye, torch.diag_embed(diag_hi), phi)
        vlo = 0.5 * torch.where(P >= 0, P * plo, P * phi).sum((-1, -2))
        vhi = 0.5 * torch.where(P >= 0, P * phi, P * plo).sum((-1, -2))
        tol = 16 * torch.finfo(torch.float64).eps * (1 + vlo.abs() + vhi.abs())
        return vlo - tol, vhi + tol

    @torch.no_grad()
    def gradient_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        """∇V = Λ(u − μ) is linear in u: exact ranges (centre-radius form)."""
        P = ((self.precision + self.precision.T) / 2).detach().to(F64)
        mu = self.mean.detach().to(F64)
        c, r = mid_rad(lo.to(F64) - mu, hi.to(F64) - mu)
        gc, gr = c @ P.T, r @ P.abs().T
        tol = 8 * EPS64 * (c.abs() @ P.abs().T + gr) + 1e-300
        return gc - gr - tol, gc + gr + tol


class CallableEnergy(Energy):
    """Wrap ``fn: (n, d) → (n,)`` as an energy.

    Args:
        fn: the energy V (torch in, torch out; differentiable if gradients are needed).
        dim: input dimension.
        lipschitz: optional Euclidean Lipschitz constant of V on the cube, enabling sound bounds.
        name: a label used in reports.
        device: where the callable wants its inputs (default CPU); points are passed in float64.
    """

    family = "callable"

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        dim: int,
        lipschitz: float | None = None,
        name: str = "callable",
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.fn = fn
        self.dim = int(dim)
        self.lipschitz = None if lipschitz is None else float(lipschitz)
        self.name = name
        self.device = torch.device("cpu") if device is None else torch.device(device)

    def param_dtype(self) -> torch.dtype:
        """Points are handed to the callable in float64 (it has no parameters to follow)."""
        return torch.float64

    def param_device(self) -> torch.device:
        return self.device

    def spec(self) -> dict:
        raise TypeError(
            f"CallableEnergy {self.name!r} wraps arbitrary code and cannot be saved to a model "
            "file (model files never execute code); save a parametric energy instead"
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        out = self.fn(u)
        if out.shape != u.shape[:1]:
            raise ValueError(
                f"energy function returned shape {tuple(out.shape)}, expected ({u.shape[0]},)"
            )
        return out

    @torch.no_grad()
    def interval_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        if self.lipschitz is None:
            return super().interval_bounds(lo, hi)
        c = (lo + hi) / 2
        rad = torch.linalg.vector_norm((hi - lo) / 2, dim=-1).to(torch.float64)
        v = self.fn(c).to(torch.float64)
        tol = 1e-12 * (1 + v.abs())
        return v - self.lipschitz * rad - tol, v + self.lipschitz * rad + tol
