"""Energy families V(u): (n, d) → (n,) on the unit cube, one family a file."""

from __future__ import annotations

from .analytic import CallableEnergy, QuadraticEnergy
from .base import Energy, LinearEnergy
from .defensive import DefensiveEnergy
from .fourier import CosineEnergy
from .legendre import LegendreEnergy
from .mlp import MLPEnergy
from .residual import ResidualEnergy
from .spline import SplineEnergy
from .zero import ZeroEnergy

__all__ = [
    "FAMILIES",
    "CallableEnergy",
    "CosineEnergy",
    "DefensiveEnergy",
    "Energy",
    "LegendreEnergy",
    "LinearEnergy",
    "MLPEnergy",
    "QuadraticEnergy",
    "ResidualEnergy",
    "SplineEnergy",
    "ZeroEnergy",
    "make_energy",
]

FAMILIES = {
    "mlp": MLPEnergy,
    "legendre": LegendreEnergy,
    "cosine": CosineEnergy,
    "spline": SplineEnergy,
    "quadratic": QuadraticEnergy,
    "residual": ResidualEnergy,
    "defensive": DefensiveEnergy,
    "zero": ZeroEnergy,
}


def make_energy(spec: dict) -> Energy:
    """Rebuild an energy from ``Energy.spec()`` (a plain dict; no code is executed)."""
    if not isinstance(spec, dict) or "family" not in spec:
        raise ValueError("energy spec must be a dict with a 'family' key")
    fam = spec["family"]
    if fam not in FAMILIES:
        raise ValueError(f"unknown energy family {fam!r}; known: {sorted(FAMILIES)}")
    kwargs = {k: v for k, v in spec.items() if k != "family"}
    if "hidden" in kwargs:
        kwargs["hidden"] = tuple(kwargs["hidden"])
    return FAMILIES[fam](**kwargs)
