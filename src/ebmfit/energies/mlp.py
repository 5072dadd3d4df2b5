r"""Multilayer-perceptron energy on random Fourier features of the input.

.. math:: \gamma(u) = [u,\ \cos(2\pi B u),\ \sin(2\pi B u)], \qquad
   V(u) = W_L\,\sigma(\cdots\sigma(W_1 \gamma(u) + b_1)\cdots) + b_L,

with :math:`B \in \mathbb{R}^{m \times d}`, :math:`B_{ij} \sim \mathcal N(0, s^2)` drawn once
(a fixed buffer, saved with the weights) and σ = SiLU.  Plain coordinate MLPs learn sharp
modes very slowly (spectral bias); Fourier features with s ≈ 2–4 fix this on the unit cube.

Sound interval bounds propagate boxes exactly through the affine maps (centre–radius form),
through sin/cos (exact ranges) and through SiLU (decreasing then increasing, minimum at
:math:`x^* \approx -1.2785`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import Energy

__all__ = ["MLPEnergy"]

_SILU_ARGMIN = -1.2784645427610738  # root of 1 + x(1 - sigmoid(x)) = 0... i.e. silu'(x) = 0


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
        dtype=torch.float32,
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
    @torch.no_grad()
    def interval_bounds(self, lo: torch.Tensor, hi: torch.Tensor):
        """Sound bounds of V over boxes [lo_k, hi_k] (shape (m, d)) in float64 interval arithmetic."""
        lo = lo.to(torch.float64)
        hi = hi.to(torch.float64)
        L, H = lo, hi
        if self.n_fourier:
            B = self.freqs.to(torch.float64)
            c, r = (lo + hi) / 2, (hi - lo) / 2
            zc = 2 * math.pi * (c @ B.T)
            zr = 2 * math.pi * (r @ B.abs().T)
            cl, ch = _cos_range(zc - zr, zc + zr)
            sl, sh = _cos_range(
                zc - zr - math.pi / 2, zc + zr - math.pi / 2
            )  # sin z = cos(z - pi/2)
            L = torch.cat([lo, cl, sl], dim=-1)
            H = torch.cat([hi, ch, sh], dim=-1)
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                W = layer.weight.to(torch.float64)
                b = layer.bias.to(torch.float64)
                c, r = (L + H) / 2, (H - L) / 2
                yc = c @ W.T + b
                yr = r @ W.abs().T
                # round-off allowance for the float64 evaluation of the bounds themselves
                tol = 4 * torch.finfo(torch.float64).eps * (c.abs() @ W.abs().T + b.abs() + yr)
                L, H = yc - yr - tol, yc + yr + tol
            else:
                L, H = _silu_range(L, H)
        # the model itself runs in its own dtype: allow its rounding error too
        eps = torch.finfo(self.freqs.dtype).eps
        slack = 64 * eps * (1 + torch.maximum(L.abs(), H.abs()))
        return (L - slack).squeeze(-1), (H + slack).squeeze(-1)


def _cos_range(a: torch.Tensor, b: torch.Tensor):
    """Exact range of cos over [a, b] elementwise."""
    ca, cb = torch.cos(a), torch.cos(b)
    lo, hi = torch.minimum(ca, cb), torch.maximum(ca, cb)
    two_pi = 2 * math.pi
    has_max = torch.ceil(a / two_pi) * two_pi <= b
    has_min = torch.ceil((a - math.pi) / two_pi) * two_pi + math.pi <= b
    hi = torch.where(has_max, torch.ones_like(hi), hi)
    lo = torch.where(has_min, -torch.ones_like(lo), lo)
    tol = 1e-15 * (1 + a.abs() + b.abs())
    return (lo - tol).clamp_min(-1), (hi + tol).clamp_max(1)


def _silu(x):
    return x * torch.sigmoid(x)


def _silu_range(a: torch.Tensor, b: torch.Tensor):
    """Exact range of SiLU over [a, b]: it decreases on (-inf, x*] and increases after."""
    hi = torch.maximum(_silu(a), _silu(b))
    lo = _silu(torch.clamp(torch.full_like(a, _SILU_ARGMIN), a, b))
    tol = 4 * torch.finfo(a.dtype).eps * (1 + torch.maximum(a.abs(), b.abs()))
    return lo - tol, hi + tol
