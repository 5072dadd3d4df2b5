"""Estimators of log Z; each returns a :class:`LogZ` (alone or inside a result with diagnostics)."""

from ..grid import gauss_legendre_1d
from .ais import (
    AISConfig,
    AISResult,
    AISSandwich,
    ais_sandwich,
    ais_schedule,
    log_partition_ais,
    log_partition_reverse_ais,
)
from .importance import ISResult, log_partition_importance
from .qmc import log_partition_qmc
from .quadrature import log_partition_quadrature
from .result import LogZ

__all__ = [
    "AISConfig",
    "AISResult",
    "AISSandwich",
    "ISResult",
    "LogZ",
    "ais_sandwich",
    "ais_schedule",
    "gauss_legendre_1d",
    "log_partition_ais",
    "log_partition_importance",
    "log_partition_qmc",
    "log_partition_quadrature",
    "log_partition_reverse_ais",
]
