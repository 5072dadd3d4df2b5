r"""Importance sampling from the base: :math:`\log Z = \log \mathbb{E}_P[e^{-V}]` in any dimension.

With :math:`u_1, \dots, u_N` i.i.d. from the base :math:`P` (exact sampler, no MCMC) and weights
:math:`w_k = e^{-V(u_k)}`,

.. math:: \hat Z = \frac1N \sum_k w_k, \qquad \mathbb E[\hat Z] = Z,

so :math:`\log \hat Z` is biased low by Jensen (bias ``"lower"``, about :math:`-\mathrm{SE}^2/2`).
The standard error is the delta method on the weights' sample variance,

.. math:: \mathrm{SE}(\log\hat Z) = \frac{s_w}{\sqrt N\,\bar w}
          = \sqrt{\frac{N/\mathrm{ESS} - 1}{N - 1}}, \qquad
          \mathrm{ESS} = \frac{(\sum_k w_k)^2}{\sum_k w_k^2},

where ESS is Kish's effective sample size of the normalized weights.  All sums are accumulated
in log space (float64) over ``n_batches`` batches of ``n_samples`` draws, so memory is bounded by
one batch.  The SE is only as good as the weights' second moment: when the ESS is a small
fraction of N (a model much sharper than the base) the weights are heavy-tailed, the SE is
itself unreliable and annealing (:mod:`ebmfit.partition.ais`) should be used instead.
"""

from __future__ import annotations

import math

import torch

from ..base import BaseMeasure, Uniform
from ..energies.base import Energy
from .result import ISDiagnostics, LogZ

__all__ = [
    "ISDiagnostics",
    "check_draws",
    "check_generator_device",
    "combine_batches",
    "log_partition_importance",
    "log_weight_stats",
]


def check_draws(n_samples: int, n_batches: int) -> tuple[int, int]:
    """``(n_samples, n_batches)`` as ints; ``ValueError`` unless both are ≥ 1 with ≥ 2 draws."""
    n_samples, n_batches = int(n_samples), int(n_batches)
    if n_samples < 1 or n_batches < 1 or n_samples * n_batches < 2:
        raise ValueError(
            f"need n_samples >= 1, n_batches >= 1 and at least 2 draws; got {n_samples}, "
            f"{n_batches}"
        )
    return n_samples, n_batches


def check_generator_device(generator: torch.Generator, device: torch.device) -> None:
    """Raise ``ValueError`` unless ``generator`` lives on ``device`` (the energy's device)."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(
            f"generator is on {generator.device} but the energy is on {device}; "
            f"create it with torch.Generator(device={str(device)!r})"
        )


def log_weight_stats(log_weights: torch.Tensor) -> tuple[float, float, float]:
    r"""``(log mean w, SE of it, ESS)`` from log-weights of shape (N,), N ≥ 2 (float64).

    The SE is the delta method :math:`\sqrt{(N/\mathrm{ESS} - 1)/(N - 1)}`; weights equal to 0
    (log-weight :math:`-\infty`) are allowed, NaN or :math:`+\infty` are not.
    """
    lw = log_weights.detach().to(torch.float64).reshape(-1)
    n = lw.numel()
    if n < 2:
        raise ValueError("need at least two weights to estimate a standard error")
    if torch.isnan(lw).any() or torch.isposinf(lw).any():
        raise FloatingPointError("log-weights contain NaN or +inf")
    l1 = float(torch.logsumexp(lw, 0))
    if l1 == -math.inf:
        raise FloatingPointError("every weight is zero (energy is +inf at every draw)")
    l2 = float(torch.logsumexp(2 * lw, 0))
    ess = math.exp(2 * l1 - l2)
    se = math.sqrt(max(n / ess - 1.0, 0.0) / (n - 1))
    return l1 - math.log(n), se, ess


def log_partition_importance(
    energy: Energy,
    base: BaseMeasure | None = None,
    *,
    n_samples: int = 65536,
    n_batches: int = 4,
    generator: torch.Generator,
) -> LogZ:
    r"""log Z by ``n_batches`` × ``n_samples`` i.i.d. draws from the base (see module docstring).

    Args:
        energy: an :class:`~ebmfit.energies.Energy` (shape (n, d) → (n,)), evaluated on its own
            device in float64 inputs.
        base: the base measure :math:`P` (default ``Uniform(energy.dim)``); only its exact
            sampler is used, since :math:`Z = \mathbb E_P[e^{-V}]`.
        n_samples: draws per batch (the memory unit).
        n_batches: number of batches; the total is ``n_samples * n_batches`` (at least 2).
        generator: a ``torch.Generator`` on the energy's device.

    Returns:
        :class:`LogZ` with ``method == "importance"``, ``bias == "lower"`` and
        :class:`~ebmfit.partition.result.ISDiagnostics` (ESS, largest weight, batch values).

    Example:
        >>> import torch
        >>> from ebmfit.energies import QuadraticEnergy
        >>> e = QuadraticEnergy(2, precision=4.0 * torch.eye(2))
        >>> r = log_partition_importance(e, n_samples=4096, n_batches=2,
        ...                              generator=torch.Generator().manual_seed(0))
        >>> r.bias, r.diagnostics.ess > 1000
        ('lower', True)
    """
    d = energy.dim
    base = base if base is not None else Uniform(d)
    n_samples, n_batches = check_draws(n_samples, n_batches)
    dev = energy.param_device()
    check_generator_device(generator, dev)
    l1s, l2s, maxs = [], [], []
    with torch.no_grad():
        for _ in range(n_batches):
            u = base.sample(n_samples, generator=generator, dtype=torch.float64, device=dev)
            lw = -energy(u).to(torch.float64)
            if torch.isnan(lw).any() or torch.isposinf(lw).any():
                raise FloatingPointError(
                    "energy is NaN or -inf at a base draw; log Z is undefined or infinite"
                )
            l1s.append(torch.logsumexp(lw, 0))
            l2s.append(torch.logsumexp(2 * lw, 0))
            maxs.append(lw.max())
    return combine_batches(
        torch.stack(l1s).cpu(), torch.stack(l2s).cpu(), torch.stack(maxs).cpu(), n_samples
    )


def combine_batches(
    l1b: torch.Tensor, l2b: torch.Tensor, maxb: torch.Tensor, n_samples: int
) -> LogZ:
    r"""The pooled estimate of :func:`log_partition_importance` from per-batch sums.

    ``l1b``, ``l2b``, ``maxb``: :math:`\log\sum_k w_k`, :math:`\log\sum_k w_k^2` and
    :math:`\max_k \log w_k` of each batch of ``n_samples`` draws, shape (n_batches,), float64
    on the CPU.
    """
    l1 = float(torch.logsumexp(l1b, 0))
    if l1 == -math.inf:
        raise FloatingPointError("every weight is zero (energy is +inf at every draw)")
    l2 = float(torch.logsumexp(l2b, 0))
    n = int(n_samples) * l1b.numel()
    ess = math.exp(2 * l1 - l2)
    se = math.sqrt(max(n / ess - 1.0, 0.0) / (n - 1))
    value = l1 - math.log(n)
    max_w = math.exp(float(maxb.max()) - l1)
    diagnostics = ISDiagnostics(ess, max_w, l1b - math.log(n_samples))
    return LogZ(value, se, "importance", n, "lower", diagnostics)
