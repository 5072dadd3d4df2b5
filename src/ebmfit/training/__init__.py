"""Training: negative-phase strategies and fit loops built on the gradient identity."""

from .convex import fit_convex
from .fit import FitError, FitResult, fit_sgd, validation_nll
from .negatives import ImportanceNegatives, Negatives, ShiftedGridNegatives

__all__ = [
    "FitError",
    "FitResult",
    "ImportanceNegatives",
    "Negatives",
    "ShiftedGridNegatives",
    "fit_convex",
    "fit_sgd",
    "validation_nll",
]
