"""ebmfit: normalized energy-based density models on a box.

p(x) = exp(−V(x; θ)) dP(x) / Z_θ, learned by maximum likelihood through the gradient identity
∇L = E_data[∇V] − E_model[∇V], with honest log Z, exact samplers and certified KL bounds.
"""

from .base import Uniform
from .domain import Box, DataError
from .estimator import EnergyDensity
from .model import EnergyModel
from .partition.result import LogZ

__version__ = "0.1.0"

__all__ = ["Box", "DataError", "EnergyDensity", "EnergyModel", "LogZ", "Uniform", "__version__"]
