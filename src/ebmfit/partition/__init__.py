"""Estimators of log Z; each returns a :class:`LogZ`."""

from .qmc import log_partition_qmc
from .quadrature import gauss_legendre_1d, log_partition_quadrature
from .result import LogZ

__all__ = ["LogZ", "gauss_legendre_1d", "log_partition_qmc", "log_partition_quadrature"]
