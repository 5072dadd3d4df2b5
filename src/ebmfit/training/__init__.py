"""Training: negative-phase strategies and fit loops built on the gradient identity."""

from . import negatives
from .convex import fit_convex
from .fit import FitError, FitResult, FitWarning, StabilityMonitor, fit_sgd, validation_nll
from .negatives import *  # noqa: F403 - the strategies and their types, negatives.__all__

__all__ = [
    "FitError",
    "FitResult",
    "FitWarning",
    "StabilityMonitor",
    "fit_convex",
    "fit_sgd",
    "validation_nll",
]
__all__ += negatives.__all__
