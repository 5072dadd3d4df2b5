r"""What ``"auto"`` means for log Z — one rule for the estimator, :class:`~ebmfit.EnergyModel`
and the split estimates of :mod:`ebmfit.training.distributed`.

:func:`log_partition_rule` picks the honest rule for :math:`e^{-V}\,dP`:

* ``"exact"`` for :math:`V \equiv 0` (:math:`\log Z = 0`);
* ``"quadrature"`` for d ≤ 3: tensor Gauss–Legendre checked against an independent adaptive
  rule (:mod:`ebmfit.partition.quadrature`);
* ``"importance"`` from a fitted base when the weights are provably bounded: the oscillation
  of V over the cube (sound interval bounds) is at most :data:`MAX_IS_OSCILLATION`, so every
  weight lies in :math:`(e^{-s}, e^{s})` relative to the others;
* ``"ais"`` otherwise (annealing from the base).

:func:`log_partition` applies it (or a named rule) and returns the :class:`LogZ`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._rng import RandomState, as_generator
from ..base import BaseMeasure, Uniform
from ..energies.base import Energy
from .ais import log_partition_ais
from .importance import log_partition_importance
from .qmc import log_partition_qmc
from .quadrature import MAX_DIM, log_partition_quadrature
from .result import LogZ

__all__ = [
    "LOG_PARTITION_METHODS",
    "MAX_IS_OSCILLATION",
    "cube_oscillation",
    "log_partition",
    "log_partition_rule",
    "resolve_method",
]

#: Above this oscillation of V over the cube (nats), importance weights from the base are not
#: provably tame and log Z is annealed instead.
MAX_IS_OSCILLATION = 12.0

#: The rules :func:`log_partition` accepts.
LOG_PARTITION_METHODS = ("auto", "exact", "quadrature", "qmc", "importance", "ais")


@torch.no_grad()
def cube_oscillation(energy: Energy) -> float:
    """A sound upper bound of sup V − inf V over the cube (interval bounds of one box); inf
    when the energy has no sound bounds."""
    d = energy.dim
    lo = torch.zeros(1, d, dtype=torch.float64, device=energy.param_device())
    try:
        L, H = energy.interval_bounds(lo, torch.ones_like(lo))
    except NotImplementedError:
        return math.inf
    osc = float(H.max() - L.min())
    return osc if math.isfinite(osc) else math.inf


def log_partition_rule(energy: Energy, base: BaseMeasure) -> str:
    """The honest default rule for ``e^{-V} dP``: ``"exact"`` (V ≡ 0), ``"quadrature"`` (d ≤ 3,
    checked against an independent adaptive rule), ``"importance"`` from a fitted base when
    the weights are provably bounded (:func:`cube_oscillation` ≤
    :data:`MAX_IS_OSCILLATION`), else ``"ais"``."""
    if getattr(energy, "family", None) == "zero":
        return "exact"
    if energy.dim <= MAX_DIM:  # checked against an adaptive rule (partition/quadrature.py)
        return "quadrature"
    if isinstance(base, Uniform):
        return "ais"
    return "importance" if cube_oscillation(energy) <= MAX_IS_OSCILLATION else "ais"


def resolve_method(energy: Energy, base: BaseMeasure, method: str) -> str:
    """The rule ``method`` names, ``"auto"`` resolved by :func:`log_partition_rule`; a
    ``ValueError`` for an unknown name, or for ``"exact"`` unless V ≡ 0."""
    if method not in LOG_PARTITION_METHODS:
        raise ValueError(
            f"unknown log-partition method {method!r}: use one of "
            + ", ".join(repr(m) for m in LOG_PARTITION_METHODS)
        )
    if method == "auto":
        method = log_partition_rule(energy, base)
    if method == "exact" and getattr(energy, "family", None) != "zero":
        raise ValueError("log_partition='exact' needs V = 0 (the base alone)")
    return method


def log_partition(
    energy: Energy,
    base: BaseMeasure | None = None,
    method: str = "auto",
    *,
    generator: torch.Generator | None = None,
    random_state: RandomState = None,
    **kwargs: Any,
) -> LogZ:
    """log Z of ``e^{-V} dP`` by ``method``: ``"auto"`` (:func:`log_partition_rule`),
    ``"exact"`` (V ≡ 0 only), ``"quadrature"``, ``"qmc"``, ``"importance"`` or ``"ais"``.

    ``generator`` (a ``torch.Generator`` on the energy's device) drives the importance and AIS
    rules; without it one is made from ``random_state``, which also seeds QMC (None: fresh
    entropy).  Extra keyword arguments go to the estimator.
    """
    base = base if base is not None else Uniform(energy.dim)
    method = resolve_method(energy, base, method)
    if method == "exact":
        return LogZ(0.0, 0.0, "exact", 0, "none")
    if method == "quadrature":
        return log_partition_quadrature(energy, base, **kwargs)
    if method == "qmc":
        return log_partition_qmc(energy, base, random_state=random_state, **kwargs)
    if generator is None:
        generator = as_generator(random_state, energy.param_device())
    fn = log_partition_ais if method == "ais" else log_partition_importance
    return fn(energy, base, generator=generator, **kwargs)
