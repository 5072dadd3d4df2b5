r"""Negative-phase strategies: estimates of :math:`\mathbb{E}_{p_\theta}[\nabla_\theta V]`.

The gradient identity (seed §2) for the average negative log-likelihood reads

.. math:: \nabla_\theta L = \frac1n\sum_i \nabla_\theta V(x_i) - \mathbb{E}_{p_\theta}[\nabla_\theta V].

A strategy returns weighted points :math:`(u_k, \log w_k)`; the fit loop forms
:math:`\pi_k \propto w_k e^{-V(u_k)}` (``self_normalize=True``: quadrature or importance
sampling, where the points are not model samples) or :math:`\pi_k \propto w_k` (points that are
already model samples, e.g. MCMC), and estimates the model term by :math:`\sum_k \pi_k \nabla V(u_k)`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..base import BaseMeasure, Uniform
from ..energies.base import tensor_grid
from ..partition.quadrature import gauss_legendre_1d

__all__ = ["ImportanceNegatives", "Negatives", "ShiftedGridNegatives", "default_grid_points"]


class Negatives(NamedTuple):
    points: torch.Tensor  # (m, d) on the unit cube
    log_weights: torch.Tensor  # (m,) log w_k (float64)
    self_normalize: bool  # π ∝ w e^{-V} (True) or π ∝ w (False)


def default_grid_points(dim: int) -> int:
    """Points per axis of the training grid: 96 (d ≤ 2 → 96² = 9216), 32 in 3-D."""
    return {1: 512, 2: 96, 3: 32}.get(dim, 8)


class ShiftedGridNegatives:
    r"""Exact negative phase: a midpoint (or Gauss–Legendre) grid shifted at random every call.

    With nodes :math:`u_g + s \bmod 1` and a fresh uniform shift s, :math:`\sum_g w_g
    e^{-V(u_g+s)}` is an unbiased estimate of Z for any V, so the model cannot profit from
    hiding mass between fixed nodes.
    """

    def __init__(
        self,
        dim: int,
        points_per_axis: int | None = None,
        n_nodes: int = 1,
        base: BaseMeasure | None = None,
    ):
        self.dim = dim
        self.points_per_axis = points_per_axis or default_grid_points(dim)
        self.n_nodes = n_nodes
        self.base = base if base is not None else Uniform(dim)
        if self.points_per_axis % n_nodes:
            raise ValueError("points_per_axis must be a multiple of n_nodes")

    def __call__(self, energy, generator: torch.Generator | None = None) -> Negatives:
        dev = energy.param_device()
        shifts = torch.rand(self.dim, generator=generator, dtype=torch.float64, device=dev)
        axes, logw = [], torch.zeros((), dtype=torch.float64, device=dev)
        for i in range(self.dim):
            ax, w = gauss_legendre_1d(
                self.points_per_axis // self.n_nodes,
                self.n_nodes,
                shift=float(shifts[i]),
                device=dev,
            )
            axes.append(ax)
            logw = (logw[..., None] + torch.log(w)).reshape(-1)
        pts = tensor_grid(axes)
        if not isinstance(self.base, Uniform):
            logw = logw + self.base.log_prob(pts)
        return Negatives(pts, logw, True)


class ImportanceNegatives:
    r"""Self-normalised importance sampling from the base P (any dimension).

    :math:`u_k \sim P`, :math:`\pi_k \propto e^{-V(u_k)}`.  Consistent but biased for finite m;
    its effective sample size :math:`1/\sum_k \pi_k^2` says when it stops being useful.
    """

    def __init__(self, dim: int, n_samples: int = 8192, base: BaseMeasure | None = None):
        self.dim = dim
        self.n_samples = n_samples
        self.base = base if base is not None else Uniform(dim)

    def __call__(self, energy, generator: torch.Generator | None = None) -> Negatives:
        dev = energy.param_device()
        pts = self.base.sample(self.n_samples, generator=generator, device=dev)
        logw = torch.full(
            (self.n_samples,), -math.log(self.n_samples), dtype=torch.float64, device=dev
        )
        return Negatives(pts, logw, True)
