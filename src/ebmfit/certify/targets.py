r"""Energies of known targets and of mixtures with the base measure, with sound bounds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..domain import Box
from ..energies import CallableEnergy, Energy
from ..energies.interval import F64, Interval
from ..energies.mixture import MixtureEnergy
from ..model import EnergyModel

__all__ = ["base_mixture", "target_energy"]


def base_mixture(
    model: EnergyModel, n: float, *, log_partition: float | None = None
) -> MixtureEnergy:
    r"""The energy of :math:`Q_n = (1 - 1/n)\,Q + (1/n)\,P` (seed §3(c)), Q the model's law.

    :math:`V_n = -\log\big((1-1/n)\,e^{-V - \log Z} + 1/n\big)` is bounded (by :math:`\log n`)
    even where Q has zeros.  ``log_partition`` defaults to the model's (quadrature/QMC) log Z.
    """
    if not n > 1:
        raise ValueError("need n > 1")
    lz = float(model.log_partition().value) if log_partition is None else float(log_partition)
    return MixtureEnergy([model.energy_fn, None], [math.log1p(-1 / n) - lz, -math.log(n)])


class _AffineInput(Energy):
    """V(lo + w ⊙ u): an energy given in x-coordinates seen on the unit cube (w > 0)."""

    family = "affine-input"

    def __init__(self, inner: Energy, low: np.ndarray, width: np.ndarray):
        super().__init__()
        self.inner = inner
        self.dim = inner.dim
        self.register_buffer("low", torch.as_tensor(low, dtype=F64))
        self.register_buffer("width", torch.as_tensor(width, dtype=F64))

    def spec(self) -> dict:
        raise TypeError("target energies are analysis objects; they are not saved to model files")

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.inner(self.low + self.width * u.to(F64))

    def interval_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval:
        return self.inner.interval_bounds(
            self.low + self.width * lo.to(F64), self.low + self.width * hi.to(F64)
        )

    def gradient_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> Interval | None:
        lo, hi = lo.to(F64), hi.to(F64)
        g = self.inner.gradient_bounds(self.low + self.width * lo, self.low + self.width * hi)
        return None if g is None else (g[0] * self.width, g[1] * self.width)


def target_energy(
    target: Any, domain: Box | None = None, *, lipschitz: float | None = None
) -> Energy:
    r"""The energy :math:`V^*(u) = -\log q^*(x(u))` of a known target, with sound bounds.

    ``target`` is an :mod:`ebmfit.datasets` target (or any object with ``log_prob`` and
    ``dim``); ``domain`` the model's box (default the unit cube), which must lie inside the
    target's support :math:`[0,1]^d`.

    * A target whose ``bounded_energy()`` gives :math:`-\log q^*` as an energy with sound
      bounds (``gaussian_mixture`` and ``correlated_gaussian``: mixtures of
      :class:`~ebmfit.energies.QuadraticEnergy`, exact interval and gradient rules) is used
      as it is.
    * Any other smooth target: give ``lipschitz``, a Lipschitz constant of :math:`\log q^*` in
      x (Euclidean); the result is a :class:`~ebmfit.energies.CallableEnergy` with Lipschitz
      bounds (sound, but branch-and-bound then converges slowly).
    * A target with zeros (e.g. ``checkerboard``) has :math:`V^* = +\infty` on a set of
      positive measure: no energy, no finite oscillation and **no finite certificate** exists
      (and :math:`\mathrm{KL}(Q_m\|Q^*) = \infty` for every model).  This raises
      ``ValueError``; compare with the mixture :math:`(1-1/n)Q^* + (1/n)P` instead (seed §3(c))
      or compute :math:`\mathrm{KL}(Q^*\|Q_m)` by quadrature.
    """
    d = int(target.dim)
    domain = domain if domain is not None else Box.unit(d)
    if domain.dim != d:
        raise ValueError(f"domain dimension {domain.dim} != target dimension {d}")
    name = getattr(target, "name", type(target).__name__)
    if not getattr(target, "smooth", True):
        raise ValueError(
            f"target {name!r} has zero-density regions: -log q* is +inf there, so osc(V_m - V*) "
            "is infinite and no finite KL certificate exists (KL(model || target) is infinite "
            "for every positive model). Certify against the mixture (1-1/n) Q* + (1/n) P "
            "instead (seed §3(c)), or compute KL(target || model) by quadrature."
        )
    low, high = np.asarray(domain.low), np.asarray(domain.high)
    if np.any(low < 0) or np.any(high > 1):
        raise ValueError(
            f"domain {domain} leaves the support [0,1]^{d} of target {name!r}: q* = 0 there and "
            "no finite certificate exists"
        )
    make = getattr(target, "bounded_energy", None)
    inner: Energy | None = make() if make is not None else None
    if inner is not None:
        for p in inner.parameters():
            p.requires_grad_(False)
        return _AffineInput(inner, low, high - low)
    if lipschitz is None:
        raise ValueError(
            f"no analytic bounds for target {name!r}: pass lipschitz= (a Lipschitz constant of "
            "log q* in x) for sound Lipschitz bounds"
        )
    width = torch.as_tensor(high - low)
    lo_t = torch.as_tensor(low)

    def fn(u: torch.Tensor) -> torch.Tensor:
        x = (lo_t + width * u.detach().to(F64)).numpy()
        return torch.as_tensor(-target.log_prob(x), dtype=F64)

    L = float(lipschitz) * float(np.linalg.norm(high - low, ord=np.inf))
    return CallableEnergy(fn, d, lipschitz=L, name=f"-log q* ({name})")
