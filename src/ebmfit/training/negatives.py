r"""Negative-phase strategies: estimates of :math:`\mathbb{E}_{p_\theta}[\nabla_\theta V]`.

The gradient identity (seed §2) for the average negative log-likelihood reads

.. math:: \nabla_\theta L = \frac1n\sum_i \nabla_\theta V(x_i) - \mathbb{E}_{p_\theta}[\nabla_\theta V].

A strategy returns weighted points :math:`(u_k, \log w_k)`; the fit loop forms
:math:`\pi_k \propto w_k e^{-V(u_k)}` (``self_normalize=True``: quadrature or importance
sampling, where the points are not model samples) or :math:`\pi_k \propto w_k` (points that are
already model samples, e.g. MCMC), and estimates the model term by :math:`\sum_k \pi_k \nabla V(u_k)`.

Strategies:

- :class:`ShiftedGridNegatives` — exact (randomly shifted tensor quadrature), d ≤ 3;
- :class:`ImportanceNegatives` — self-normalised importance sampling from the base, any d;
- :class:`PersistentChains` — persistent MCMC chains (PCD) with a replay buffer, any d;
- :class:`ShortRunChains` — short-run chains from the base or from the data (CD-k).

A strategy is a callable ``strategy(energy, generator) -> Negatives``; state (chain positions,
adapted step size) lives in the object.  After every call ``strategy.last_info`` is a
:class:`NegativesInfo` of that call (acceptance rate, step size, ...; None where a field does not
apply); the fit loop adds the energy gap and, for self-normalised negatives, the effective
sample size, and records them.

The chain strategies live in :mod:`ebmfit.training.chain_negatives` and the protocol types in
:mod:`ebmfit.training.phase`; this module re-exports both.  ``__all__`` is the strategies and
their types (:mod:`ebmfit.training` re-exports it); the helpers the fit loop and the tests
share (:func:`chain_energy`, :func:`independence_step`, :func:`info_fields`,
:func:`default_grid_points`) are imported by name.
"""

from __future__ import annotations

import math

import torch

from ..base import BaseMeasure, Uniform
from ..energies.base import Energy
from ..grid import gauss_legendre_1d, tensor_grid, tensor_log_weights
from .chain_negatives import PersistentChains, ShortRunChains
from .chain_negatives import chain_energy as chain_energy
from .chain_negatives import independence_step as independence_step
from .phase import NegativePhaseError, Negatives, NegativesInfo
from .phase import info_fields as info_fields

__all__ = [
    "ImportanceNegatives",
    "NegativePhaseError",
    "Negatives",
    "NegativesInfo",
    "PersistentChains",
    "ShiftedGridNegatives",
    "ShortRunChains",
]


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
        self.last_info = NegativesInfo()

    def __call__(self, energy: Energy, generator: torch.Generator | None = None) -> Negatives:
        dev = energy.param_device()
        shifts = torch.rand(self.dim, generator=generator, dtype=torch.float64, device=dev)
        cells = self.points_per_axis // self.n_nodes
        rules = [gauss_legendre_1d(cells, self.n_nodes, shift=float(s), device=dev) for s in shifts]
        pts = tensor_grid([ax for ax, _ in rules])
        logw = tensor_log_weights([w for _, w in rules], torch.float64)
        if not isinstance(self.base, Uniform):
            logw = logw + self.base.log_prob(pts)
        self.last_info = NegativesInfo(n_points=int(pts.shape[0]))
        return Negatives(pts, logw, True)


class ImportanceNegatives:
    r"""Self-normalised importance sampling from the base P (any dimension).

    :math:`u_k \sim P`, :math:`\pi_k \propto e^{-V(u_k)}`.  Consistent but biased for finite m;
    its effective sample size :math:`1/\sum_k \pi_k^2` says when it stops being useful.

    ``refresh`` (for bases whose draws are costly, e.g. a flow: ``base.costly_draws``): keep a
    pool of ``n_samples`` draws and replace only its ``refresh`` oldest by fresh ones at each
    call, so that a step costs ``refresh`` draws instead of ``n_samples``.  Every pool is still
    an i.i.d. sample of P (each member is an exact draw, independent of the others), but
    consecutive pools share most of their members; the pool is the strategy's checkpointed
    state.  ``None``: all ``n_samples`` fresh at each call.
    """

    def __init__(
        self,
        dim: int,
        n_samples: int = 8192,
        base: BaseMeasure | None = None,
        refresh: int | None = None,
    ):
        self.dim = dim
        self.n_samples = n_samples
        self.base = base if base is not None else Uniform(dim)
        if refresh is not None and not 1 <= int(refresh) <= n_samples:
            raise ValueError(f"refresh must be None or in [1, {n_samples}], got {refresh}")
        self.refresh = None if refresh is None else int(refresh)
        self.last_info = NegativesInfo()
        self._pool: torch.Tensor | None = None
        self._next = 0

    def _points(self, dev: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        n, k = self.n_samples, self.refresh
        pool = self._pool
        if k is None or k >= n:
            return self.base.sample(n, generator=generator, device=dev)
        if pool is None or pool.shape[0] != n:
            self._pool, self._next = self.base.sample(n, generator=generator, device=dev), 0
            return self._pool
        idx = (self._next + torch.arange(k, device=pool.device)) % n
        fresh = self.base.sample(k, generator=generator, device=pool.device)
        self._pool = pool.index_copy(0, idx, fresh)  # out of place: earlier returns stay
        self._next = (self._next + k) % n
        return self._pool.to(dev)

    def __call__(self, energy: Energy, generator: torch.Generator | None = None) -> Negatives:
        dev = energy.param_device()
        pts = self._points(dev, generator)
        logw = torch.full(
            (self.n_samples,), -math.log(self.n_samples), dtype=torch.float64, device=dev
        )
        self.last_info = NegativesInfo(n_points=self.n_samples)
        return Negatives(pts, logw, True)

    def reset(self) -> None:
        """Forget the pool (the next call draws a new one)."""
        self._pool, self._next = None, 0

    def state_dict(self) -> dict:
        """The pool and its cursor (empty when every call draws afresh)."""
        if self._pool is None:
            return {}
        return {"pool": self._pool.detach().cpu(), "next": self._next}

    def load_state_dict(self, state: dict) -> None:
        pool = state.get("pool")
        if pool is not None and tuple(pool.shape) == (self.n_samples, self.dim):
            self._pool, self._next = pool.to(torch.float64), int(state.get("next", 0))
