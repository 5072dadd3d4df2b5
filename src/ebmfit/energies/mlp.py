r"""Multilayer-perceptron energy on random Fourier features of the input.

.. math:: \gamma(u) = [u,\ \cos(2\pi B u),\ \sin(2\pi B u)], \qquad
   V(u) = W_L\,\sigma(\cdots\sigma(W_1 \gamma(u) + b_1)\cdots) + b_L,

with :math:`B \in \mathbb{R}^{m \times d}`, :math:`B_{ij} \sim \mathcal N(0, s^2)` drawn once
(a fixed buffer, saved with the weights) and σ = SiLU.  Plain coordinate MLPs learn sharp
modes very slowly (spectral bias); Fourier features with s ≈ 2–4 fix this on the unit cube.

Sound bounds (values, gradients, Taylor models, evaluation error, joint rules for pairs) come
from one interval propagator, :mod:`ebmfit.energies.mlp_bounds`, shared by the exact sampler
and the certificates.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import mlp_bounds
from .base import Energy
from .interval import F64, DifferenceRule, FirstOrder, Interval

__all__ = ["MLPEnergy"]


class MLPEnergy(Energy):
    """SiLU MLP on random Fourier features; shape (n, d) → (n,).

    Args:
        dim: input dimension d.
        hidden: widths of the hidden layers.
        n_fourier: number m of random frequencies (0 = plain coordinate MLP).
        fourier_scale: standard deviation s of the frequencies (cycles per unit length).
        seed: seed of the frequency draw and of the weight initialisation (reproducible
            without touching torch's global RNG).
    """

    family = "mlp"

    def __init__(
        self,
        dim: int,
        hidden: tuple[int, ...] | list[int] = (128, 128, 128),
        n_fourier: int = 64,
        fourier_scale: float = 3.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.dim = int(dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.n_fourier = int(n_fourier)
        self.fourier_scale = float(fourier_scale)
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        B = torch.randn(self.n_fourier, self.dim, generator=g, dtype=torch.float64) * fourier_scale
        self.register_buffer("freqs", B.to(dtype))
        layers: list[nn.Module] = []
        width = self.dim + 2 * self.n_fourier
        for h in self.hidden:
            layers += [nn.Linear(width, h, dtype=dtype), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, 1, dtype=dtype))
        self.net = nn.Sequential(*layers)
        with torch.no_grad():
            for layer in self.net:  # PyTorch's default init, drawn from the seeded generator
                if isinstance(layer, nn.Linear):
                    w = torch.empty(layer.weight.shape, dtype=torch.float64)
                    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
                    layer.weight.copy_(w)
                    bound = 1 / math.sqrt(layer.in_features)
                    b = torch.empty(layer.bias.shape, dtype=torch.float64).uniform_(
                        -bound, bound, generator=g
                    )
                    layer.bias.copy_(b)
            self.net[-1].weight.mul_(0.1)  # start near the uniform density
            self.net[-1].bias.zero_()

    def spec(self) -> dict:
        return {
            "family": self.family,
            "dim": self.dim,
            "hidden": list(self.hidden),
            "n_fourier": self.n_fourier,
            "fourier_scale": self.fourier_scale,
            "seed": self.seed,
        }

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        if self.n_fourier == 0:
            return u
        z = 2 * math.pi * (u @ self.freqs.T)
        return torch.cat([u, torch.cos(z), torch.sin(z)], dim=-1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = u.to(self.freqs.dtype)
        return self.net(self.encode(u)).squeeze(-1)

    # ------------------------------------------------------------------ bounds
    def _parts(self, dtype: torch.dtype | None = None) -> mlp_bounds._MLPParts:
        return mlp_bounds._mlp_parts(self, dtype)

    @torch.no_grad()
    def interval_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        """Sound bounds of V over boxes [lo_k, hi_k] (shape (m, d)) in float64 interval
        arithmetic (:mod:`ebmfit.energies.mlp_bounds`), widened for the network's own dtype."""
        L, H = mlp_bounds.value_bounds(self._parts(), lo, hi)
        # the model itself runs in its own dtype: allow its rounding error too
        eps = torch.finfo(self.freqs.dtype).eps
        slack = 64 * eps * (1 + torch.maximum(L.abs(), H.abs()))
        return L - slack, H + slack

    @torch.no_grad()
    def gradient_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        """Sound enclosure of ∇V over boxes by forward-mode interval Jacobians, (m, d) each."""
        return mlp_bounds._mlp_gradient_bounds(self._parts(), lo.to(F64), hi.to(F64))

    @torch.no_grad()
    def first_order_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> FirstOrder:
        """Second-order Taylor models on small boxes (NaN rows on the others)."""
        return mlp_bounds.first_order(self._parts(), lo.to(F64), hi.to(F64))

    @torch.no_grad()
    def evaluation_error(
        self, lo: torch.Tensor, hi: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        """Worst-case forward error of the network evaluated in ``dtype``, over boxes."""
        return mlp_bounds.evaluation_error(self._parts(dtype), lo, hi)

    def difference_rule(self, other: Energy) -> DifferenceRule | None:
        """Joint Taylor models of ``other − self`` when ``other`` has the same architecture."""
        same = (
            isinstance(other, MLPEnergy)
            and other.dim == self.dim
            and other.hidden == self.hidden
            and other.n_fourier == self.n_fourier
        )
        return mlp_bounds.MLPDifference(self, other) if same else None
