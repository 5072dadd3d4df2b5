r"""The result type of every log-partition estimator, and the typed diagnostics it carries.

Every ``log_partition_*`` function returns a :class:`LogZ`; what a method has to say beyond the
estimate (effective sample sizes, weights, the two quadrature levels, ...) is in its last
field, ``diagnostics``, a NamedTuple of one type per method:

============================================  =========================
estimator                                     ``diagnostics``
============================================  =========================
``log_partition_quadrature`` (and split)      :class:`QuadratureDiagnostics`
``log_partition_qmc`` (and split)             :class:`QMCDiagnostics`
``log_partition_importance``                  :class:`ISDiagnostics`
``log_partition_ais``, ``..._reverse_ais``    :class:`AISDiagnostics`
the exact rule (V ≡ 0), a file's log Z        ``None``
============================================  =========================

The diagnostics are not part of the estimate: they are not written to model files
(:meth:`LogZ.to_dict`), and two :class:`LogZ` compare (and hash) by their five scalar fields.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = [
    "AISDiagnostics",
    "Diagnostics",
    "ISDiagnostics",
    "LogZ",
    "QMCDiagnostics",
    "QuadratureDiagnostics",
]

_SCALARS = ("value", "stderr", "method", "n_evals", "bias")


class QuadratureDiagnostics(NamedTuple):
    r"""Tensor Gauss–Legendre quadrature (:func:`~ebmfit.partition.log_partition_quadrature`).

    Attributes:
        n_cells: cells per axis of the coarse level (the fine level has twice as many), after
            rounding up to the energy's ``panel_multiple``.
        n_nodes: Gauss–Legendre nodes per cell.
        levels: :math:`\log Z` of the coarse and the fine tensor rule.
        adaptive: :math:`\log Z` of the independent adaptive rule (None: not checked).
        adaptive_error: that rule's own error in nats (None: not checked).
        converged: whether the adaptive rule reached its tolerance (None: not checked).
        n_suspect: boxes whose sound bounds still allow hidden mass at the end (None: not
            checked).
    """

    n_cells: int
    n_nodes: int
    levels: tuple[float, float]
    adaptive: float | None = None
    adaptive_error: float | None = None
    converged: bool | None = None
    n_suspect: int | None = None


class QMCDiagnostics(NamedTuple):
    r"""Randomised quasi-Monte Carlo (:func:`~ebmfit.partition.log_partition_qmc`).

    Attributes:
        replicate_logz: :math:`\log\hat Z_r` of each scrambled Sobol set, shape (R,), float64.
        n_points: points per set.
    """

    replicate_logz: np.ndarray
    n_points: int


class ISDiagnostics(NamedTuple):
    r"""Importance sampling from the base (:func:`~ebmfit.partition.log_partition_importance`).

    Attributes:
        ess: Kish effective sample size of the normalized weights, in :math:`[1, N]`.
        max_weight: the largest normalized weight :math:`\max_k w_k / \sum_j w_j`.
        batch_logz: :math:`\log` of each batch's mean weight, shape (n_batches,), float64 (CPU);
            their spread is a direct check of the pooled standard error.
    """

    ess: float
    max_weight: float
    batch_logz: torch.Tensor


class AISDiagnostics(NamedTuple):
    r"""One AIS run, forward or reverse (:func:`~ebmfit.partition.log_partition_ais`).

    Attributes:
        ess: Kish effective sample size of the final weights, in :math:`[1, N]`.
        log_weights: per-chain log-weights, shape (N,), float64 on the CPU (forward:
            :math:`\log w_i` with mean :math:`Z`; reverse: :math:`\log w'_i` with mean
            :math:`1/Z`).
        acceptance: mean Metropolis acceptance probability over the main chains at each
            :math:`\beta_t`, shape (T,) for :math:`t = 1..T` (NaN where no transition ran:
            :math:`\beta_T` in reverse runs).
        betas: the temperatures :math:`\beta_0 = 0, \dots, \beta_T = 1`, shape (T+1,).
        step_sizes: the frozen :math:`\varepsilon_t` used at :math:`\beta_t`, shape (T,).
        samples: final positions, shape (N, d), on the energy's device (forward: after
            transitions at :math:`\beta = 1`, weighted by ``log_weights`` they estimate model
            expectations; reverse: positions at :math:`\beta_1`, a sanity check only).
        divergences: number of divergent transitions in the main run.
    """

    ess: float
    log_weights: torch.Tensor
    acceptance: torch.Tensor
    betas: torch.Tensor
    step_sizes: torch.Tensor
    samples: torch.Tensor
    divergences: int


#: The type of :attr:`LogZ.diagnostics`.
Diagnostics = QuadratureDiagnostics | QMCDiagnostics | ISDiagnostics | AISDiagnostics | None


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
        diagnostics: what the method saw, one NamedTuple type per method (see the module
            docstring); None for the exact rule and for an estimate read from a file.  Not
            compared, hashed or serialised.
    """

    value: float
    stderr: float
    method: str
    n_evals: int
    bias: str = "none"
    diagnostics: Diagnostics = None

    def __float__(self) -> float:
        return float(self.value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LogZ):
            return self.scalars() == other.scalars()
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash(self.scalars())

    def scalars(self) -> tuple[float, float, str, int, str]:
        """``(value, stderr, method, n_evals, bias)``: the estimate without its diagnostics."""
        return (self.value, self.stderr, self.method, self.n_evals, self.bias)

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """``(value - z*stderr, value + z*stderr)``."""
        return (self.value - z * self.stderr, self.value + z * self.stderr)

    def __str__(self) -> str:
        return f"{self.value:.6g} ± {self.stderr:.2g} ({self.method}, {self.n_evals} evals)"

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields (NaN as None), as stored in model files; no diagnostics."""
        return {
            k: (v if not (isinstance(v, float) and math.isnan(v)) else None)
            for k, v in zip(_SCALARS, self.scalars(), strict=True)
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogZ:
        """Rebuild from :meth:`to_dict` (``diagnostics`` is None)."""
        return cls(
            float(d["value"]),
            float(d["stderr"]),
            str(d["method"]),
            int(d["n_evals"]),
            str(d.get("bias", "none")),
        )
