"""Training: negative-phase strategies and fit loops built on the gradient identity."""

from .convex import fit_convex
from .fit import FitError, FitResult, FitWarning, StabilityMonitor, fit_sgd, validation_nll
from .negatives import (
    ImportanceNegatives,
    NegativePhaseError,
    Negatives,
    NegativesInfo,
    PersistentChains,
    ShiftedGridNegatives,
    ShortRunChains,
)

__all__ = [
    "FitError",
    "FitResult",
    "FitWarning",
    "ImportanceNegatives",
    "NegativePhaseError",
    "Negatives",
    "NegativesInfo",
    "PersistentChains",
    "ShiftedGridNegatives",
    "ShortRunChains",
    "StabilityMonitor",
    "fit_convex",
    "fit_sgd",
    "validation_nll",
]
