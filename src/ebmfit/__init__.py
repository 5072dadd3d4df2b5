"""ebmfit: normalized energy-based density models on a box.

p(x) = exp(−V(x; θ)) dP(x) / Z_θ, learned by maximum likelihood through the gradient identity
∇L = E_data[∇V] − E_model[∇V], with honest log Z, exact samplers and certified KL bounds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._lattice import GridDataWarning
from .base import Uniform
from .domain import Box, DataError
from .model import EnergyModel
from .partition.result import LogZ

if TYPE_CHECKING:
    from .estimator import EnergyDensity

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # the estimator (and scikit-learn with it) loads on first use: `import ebmfit.samplers`
    # stays free of scikit-learn
    if name == "EnergyDensity":
        from .estimator import EnergyDensity

        return EnergyDensity
    raise AttributeError(f"module 'ebmfit' has no attribute {name!r}")


__all__ = [
    "Box",
    "DataError",
    "EnergyDensity",
    "EnergyModel",
    "GridDataWarning",
    "LogZ",
    "Uniform",
    "__version__",
]
