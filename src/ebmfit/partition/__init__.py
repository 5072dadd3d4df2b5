"""Estimators of log Z; each returns a :class:`LogZ` whose ``diagnostics`` field holds a typed
NamedTuple per method (:mod:`ebmfit.partition.result`); :func:`log_partition` applies the one
``"auto"`` rule (:mod:`ebmfit.partition.auto`)."""

from ..grid import gauss_legendre_1d
from .ais import (
    AISConfig,
    AISSandwich,
    ais_sandwich,
    ais_schedule,
    log_partition_ais,
    log_partition_reverse_ais,
)
from .auto import log_partition, log_partition_rule
from .importance import log_partition_importance
from .qmc import log_partition_qmc
from .quadrature import log_partition_quadrature
from .result import (
    AISDiagnostics,
    ISDiagnostics,
    LogZ,
    QMCDiagnostics,
    QuadratureDiagnostics,
)

__all__ = [
    "AISConfig",
    "AISDiagnostics",
    "AISSandwich",
    "ISDiagnostics",
    "LogZ",
    "QMCDiagnostics",
    "QuadratureDiagnostics",
    "ais_sandwich",
    "ais_schedule",
    "gauss_legendre_1d",
    "log_partition",
    "log_partition_ais",
    "log_partition_importance",
    "log_partition_qmc",
    "log_partition_quadrature",
    "log_partition_reverse_ais",
    "log_partition_rule",
]
