r"""A bounded residual energy: the correction a model learns on top of a fitted base.

.. math:: V(u) = s \tanh\big(f(u) / s\big), \qquad |V| < s,

with f any inner energy (by default a Fourier-feature MLP whose output layer starts at zero,
so V ≡ 0 and the model *is* its base until training moves it).

The bound s is what makes a residual model honest in any dimension:

* importance weights :math:`e^{-V(u)}`, :math:`u \sim P`, lie in :math:`(e^{-s}, e^{s})`, so
  the self-normalised negative phase keeps an effective sample size of at least
  :math:`N e^{-2s}` and log Z by importance sampling from the base has a finite variance —
  its standard error holds;
* exact rejection sampling from the base accepts with probability
  :math:`Z e^{\inf V} \ge e^{-2s}` (``s = 3``: ≥ 0.25 %), so exact samples are always
  available;
* the model's density is within a factor :math:`e^{2s}` of the base's everywhere.

Interval bounds: tanh is increasing, so sound bounds of f map to sound bounds of V (and
never beyond ±s).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Energy

__all__ = ["ResidualEnergy"]


class ResidualEnergy(Energy):
    """``V = bound * tanh(inner / bound)``; shape (n, d) → (n,).

    Args:
        inner: the energy f (an :class:`Energy`, or its ``spec()`` dict when rebuilt from a
            model file).
        bound: s > 0, the bound on |V| in nats.
        zero_init: set the inner MLP's output layer to zero, so that V ≡ 0 at the start.
    """

    family = "residual"

    def __init__(self, inner: Energy | dict, bound: float = 3.0, zero_init: bool = False) -> None:
        super().__init__()
        if isinstance(inner, dict):
            from . import make_energy

            inner = make_energy(inner)
        if not isinstance(inner, Energy):
            raise TypeError(f"inner must be an Energy, got {type(inner).__name__}")
        bound = float(bound)
        if not bound > 0 or bound == float("inf"):
            raise ValueError(f"bound must be a positive finite number, got {bound}")
        self.inner = inner
        self.dim = inner.dim
        self.bound = bound
        if zero_init:
            last = [m for m in inner.modules() if isinstance(m, nn.Linear)]
            if not last:
                raise ValueError("zero_init needs an inner energy with a linear output layer")
            with torch.no_grad():
                last[-1].weight.zero_()
                last[-1].bias.zero_()

    @property
    def panel_multiple(self) -> int:
        return self.inner.panel_multiple

    def spec(self) -> dict:
        return {"family": self.family, "inner": self.inner.spec(), "bound": self.bound}

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.bound * torch.tanh(self.inner(u) / self.bound)

    @torch.no_grad()
    def interval_bounds(
        self, lo: torch.Tensor, hi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sound bounds over boxes [lo_k, hi_k] (shape (m, d)); at worst ±bound."""
        s = self.bound
        m = lo.shape[0]
        try:
            L, H = self.inner.interval_bounds(lo, hi)
        except NotImplementedError:
            full = torch.full((m,), s, dtype=torch.float64, device=lo.device)
            return -full, full
        L = s * torch.tanh(L.to(torch.float64) / s)
        H = s * torch.tanh(H.to(torch.float64) / s)
        # rounding of tanh and of the model's own dtype: a relative allowance, capped at ±s
        eps = torch.finfo(self.param_dtype()).eps
        slack = 64 * eps * (1 + s)
        return (L - slack).clamp_min(-s), (H + slack).clamp_max(s)
