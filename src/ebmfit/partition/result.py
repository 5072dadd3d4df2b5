"""The result type of every log-partition estimator."""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["LogZ"]


class LogZ(NamedTuple):
    r"""An estimate of :math:`\log Z` that is never a bare float.

    Attributes:
        value: the estimate of :math:`\log Z`.
        stderr: its standard error (stochastic rules) or a stated error estimate
            (deterministic rules, e.g. the difference between two quadrature resolutions).
        method: the rule that produced it, e.g. ``"gauss-legendre"`` or ``"sobol-qmc"``.
        n_evals: number of energy evaluations spent.
        bias: known direction of the bias of ``value`` as an estimate of log Z:
            ``"none"`` (deterministic or unbiased up to stderr), ``"lower"`` (E[value] <= log Z,
            e.g. log of an unbiased Z estimate by Jensen) or ``"upper"``.
    """

    value: float
    stderr: float
    method: str
    n_evals: int
    bias: str = "none"

    def __float__(self) -> float:
        return float(self.value)

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """``(value - z*stderr, value + z*stderr)``."""
        return (self.value - z * self.stderr, self.value + z * self.stderr)

    def __str__(self) -> str:
        return f"{self.value:.6g} ± {self.stderr:.2g} ({self.method}, {self.n_evals} evals)"

    def to_dict(self) -> dict:
        return {
            k: (v if not (isinstance(v, float) and math.isnan(v)) else None)
            for k, v in self._asdict().items()
        }

    @classmethod
    def from_dict(cls, d: dict) -> LogZ:
        return cls(
            float(d["value"]),
            float(d["stderr"]),
            str(d["method"]),
            int(d["n_evals"]),
            str(d.get("bias", "none")),
        )
