r"""The defensive mixture of a model with its base: the seed's construction (c) as an energy.

For a model :math:`Q_V = e^{-V} dP / Z` and a weight :math:`\varepsilon \in (0, 1)`,

.. math:: (1 - \varepsilon)\, Q_V + \varepsilon P = e^{-W} dP, \qquad
   W(u) = -\log\big((1 - \varepsilon)\, e^{-V(u) - \log Z} + \varepsilon\big),

so the mixture is again a tilt of the same base, with :math:`\mathbb E_P[e^{-W}] = 1` (its
log Z is 0 up to the error of the :math:`\log Z` it was built with: an error δ there moves
:math:`\log Z_W` by :math:`\log((1-\varepsilon)e^{\delta} + \varepsilon) \approx
(1-\varepsilon)\delta`).  :math:`W \le -\log\varepsilon` everywhere, so the mixture's density
never falls below ε times the base's: a held-out row in a gap of the training data costs at most
:math:`-\log\varepsilon` nats more than under the base, instead of hundreds.  It is also how a
density with zeros is reached (seed, Theorem (c)); the KL bounds hold since W is an energy
with sound bounds (W is increasing in V, so V's bounds map through).
"""

from __future__ import annotations

import math

import torch

from .base import Energy

__all__ = ["DefensiveEnergy"]


class DefensiveEnergy(Energy):
    """``W = -log((1 - mix) exp(-V - log_z) + mix)``; shape (n, d) → (n,).

    Args:
        inner: the energy V (an :class:`Energy`, or its ``spec()`` dict from a model file).
        log_z: log Z of V on the base (the model's normalizer, a number).
        mix: ε in (0, 1), the weight of the base.
    """

    family = "defensive"

    def __init__(self, inner: Energy | dict, log_z: float, mix: float):
        super().__init__()
        if isinstance(inner, dict):
            from . import make_energy

            inner = make_energy(inner)
        if not isinstance(inner, Energy):
            raise TypeError(f"inner must be an Energy, got {type(inner).__name__}")
        log_z, mix = float(log_z), float(mix)
        if not math.isfinite(log_z):
            raise ValueError(f"log_z must be finite, got {log_z}")
        if not 0.0 < mix < 1.0:
            raise ValueError(f"mix must be in (0, 1), got {mix}")
        self.inner = inner
        self.dim = inner.dim
        self.log_z = log_z
        self.mix = mix

    @property
    def panel_multiple(self) -> int:
        return self.inner.panel_multiple

    def spec(self) -> dict:
        return {
            "family": self.family,
            "inner": self.inner.spec(),
            "log_z": self.log_z,
            "mix": self.mix,
        }

    def _transform(self, v: torch.Tensor) -> torch.Tensor:
        # float64: then W <= -log(mix) holds exactly in floating point (logaddexp >= its max)
        a = math.log1p(-self.mix) - v.to(torch.float64) - self.log_z
        return -torch.logaddexp(a, torch.full_like(a, math.log(self.mix)))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self._transform(self.inner(u))

    @torch.no_grad()
    def interval_bounds(
        self, lo: torch.Tensor, hi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sound bounds over boxes (shape (m, d)): V's bounds mapped through the increasing W(V)."""
        top = -math.log(self.mix)
        try:
            L, H = self.inner.interval_bounds(lo, hi)
        except NotImplementedError:
            m = lo.shape[0]
            L = torch.full((m,), -math.inf, dtype=torch.float64, device=lo.device)
            H = torch.full((m,), math.inf, dtype=torch.float64, device=lo.device)
        L, H = self._transform(L.to(torch.float64)), self._transform(H.to(torch.float64))
        eps = torch.finfo(self.param_dtype()).eps
        slack = 64 * eps * (1 + L.abs() + H.abs())
        return L - slack, (H + slack).clamp_max(top)
