r"""Data-parallel training and log Z across processes and machines (torch.distributed + DDP).

Every rank holds a copy of the energy wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPUs, nccl on GPUs), a shard of the
data and its share of the negative phase.  One step minimises the same surrogate as
:func:`ebmfit.training.fit_sgd`,

.. math:: \ell(\theta) = \frac1B\sum_{i\in\mathcal B} V_\theta(x_i)
          - \sum_k \operatorname{sg}(\pi_k)\, V_\theta(u_k), \qquad
          \pi_k = \frac{w_k e^{-V(u_k)}}{\sum_{j} w_j e^{-V(u_j)}},

whose gradient is the gradient identity.  With :math:`W` ranks, rank r holds the rows
:math:`\mathcal B_r` of the global batch and the negatives :math:`K_r`, and

* the normaliser of π is *global*: each rank sends :math:`\operatorname{logsumexp}_{k\in K_r}
  (\log w_k - V(u_k))`, one all-gather later every rank has
  :math:`\log\sum_j w_j e^{-V(u_j)}` and forms its own :math:`\pi_k`, so that
  :math:`\sum_r\sum_{k\in K_r}\pi_k = 1`;
* the positive phase is divided by the *global* batch size B;
* DDP averages gradients over ranks, so rank r back-propagates :math:`W\,\ell_r` with
  :math:`\ell_r = \frac1B\sum_{\mathcal B_r} V - \sum_{K_r}\operatorname{sg}(\pi_k)V(u_k)`;
  then :math:`\frac1W\sum_r \nabla(W\ell_r) = \nabla\ell`, the single-process gradient.

Randomness never depends on the rank or on the number of ranks: the global batch (indices into
the global row order) and the negative phase of step t are drawn from generators seeded by
``(seed, stream, t)`` (and a block index for importance samples).  Hence W ranks compute the
single-process iterates up to the order of floating-point sums, and a run resumed from a
checkpoint, on the same or on a different number of ranks, continues the same trajectory.

Launch with ``torchrun --nproc-per-node N -m ebmfit fit ...`` or ``ebmfit fit ... --nproc N``;
see ``docs/distributed.md``.  Without an initialised process group everything here runs as a
single rank.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from scipy.stats import qmc

from ..base import BaseMeasure, Uniform
from ..checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
    save_checkpoint,
)
from ..partition.ais import AISResult, log_partition_ais
from ..partition.importance import log_weight_stats
from ..partition.qmc import combine_replicates, log_integrand
from ..partition.quadrature import MAX_DIM, default_resolution, gauss_legendre_1d
from ..partition.result import LogZ
from .fit import FitError, FitResult
from .negatives import ImportanceNegatives, Negatives, ShiftedGridNegatives

__all__ = [
    "DistContext",
    "DistributedFitResult",
    "GridShare",
    "ImportanceShare",
    "NegativeShare",
    "all_gather_logsumexp",
    "argv_from_click",
    "check_log_partition_distributed",
    "current_context",
    "fit_and_save",
    "fit_distributed",
    "fit_model_distributed",
    "gather_rows",
    "init_distributed",
    "is_torchrun_worker",
    "launch_local",
    "log_mean_exp_distributed",
    "log_partition_ais_distributed",
    "log_partition_grid_distributed",
    "log_partition_qmc_distributed",
    "log_partition_quadrature_distributed",
    "partition_range",
    "shard_rows",
    "shutdown_distributed",
    "step_seed",
    "validation_nll_distributed",
]

#: Default timeout of process-group set-up and of every collective.
DEFAULT_TIMEOUT = timedelta(seconds=60)

# random streams of ``step_seed``
_BATCH, _NEGATIVES, _AIS = 0, 1, 3


# ============================================================================ process groups
@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, its compute ``device``.

    ``backend`` is None when no process group is initialised (one process; every collective
    below is then the identity).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when collectives go through a process group."""
        return self.backend is not None and dist.is_available() and dist.is_initialized()

    @property
    def comm_device(self) -> torch.device:
        """Device of the tensors handed to collectives (CUDA for nccl, CPU otherwise)."""
        return self.device if self.backend == "nccl" else torch.device("cpu")


def is_torchrun_worker() -> bool:
    """True in a process started by ``torchrun`` / ``torch.distributed.run``."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def current_context(device: str | torch.device | None = None) -> DistContext:
    """The context of an already initialised process group (or a single-rank context)."""
    if dist.is_available() and dist.is_initialized():
        backend = dist.get_backend()
        local = int(os.environ.get("LOCAL_RANK", 0))
        if device is None:
            device = torch.device(f"cuda:{local}") if backend == "nccl" else torch.device("cpu")
        return DistContext(
            dist.get_rank(), dist.get_world_size(), local, torch.device(device), backend
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return DistContext(device=torch.device(device))


def init_distributed(
    backend: str | None = None,
    *,
    timeout: timedelta = DEFAULT_TIMEOUT,
    device: str | torch.device | None = None,
) -> DistContext:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``).

    ``backend`` defaults to nccl when CUDA is available and gloo otherwise.  ``timeout`` bounds
    the rendezvous and every later collective, so a rank that vanishes cannot make the others
    wait for ever.  Outside torchrun (or with ``WORLD_SIZE=1``) no group is created and a
    single-rank context is returned.
    """
    if dist.is_available() and dist.is_initialized():
        return current_context(device)
    if not is_torchrun_worker() or int(os.environ["WORLD_SIZE"]) == 1:
        return current_context(device)
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    backend = backend or ("nccl" if use_cuda else "gloo")
    local = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        device = torch.device(f"cuda:{local}")
        torch.cuda.set_device(device)
    elif device is None:
        device = torch.device("cpu")
    dist.init_process_group(backend=backend, timeout=timeout)
    return DistContext(dist.get_rank(), dist.get_world_size(), local, torch.device(device), backend)


def shutdown_distributed() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ============================================================================ small collectives
def partition_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share ``[start, stop)`` of ``n`` items (sizes differ by ≤ 1)."""
    q, r = divmod(int(n), int(world_size))
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


def shard_rows(X: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's contiguous block of the rows of X (use when every rank has all the data)."""
    s, e = partition_range(X.shape[0], ctx.rank, ctx.world_size)
    return X[s:e]


def _all_gather(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Stack the same-shape tensor ``x`` of every rank: shape (W, *x.shape), in rank order."""
    if not ctx.active:
        return x.unsqueeze(0)
    xc = x.to(ctx.comm_device).contiguous()
    out = [torch.empty_like(xc) for _ in range(ctx.world_size)]
    dist.all_gather(out, xc)
    return torch.stack(out).to(x.device)


def gather_rows(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate every rank's rows of ``x`` (shape (n_r, ...), n_r may differ) in rank order."""
    if not ctx.active:
        return x
    n = _all_gather(torch.tensor([x.shape[0]], dtype=torch.int64), ctx).reshape(-1).tolist()
    m = max(n)
    pad = torch.zeros((m - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    allx = _all_gather(torch.cat([x, pad]), ctx)
    return torch.cat([allx[r, : n[r]] for r in range(ctx.world_size)]).to(x.device)


def all_gather_logsumexp(local: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    r"""Global :math:`\operatorname{logsumexp}` from per-rank values (any shape, same on all
    ranks): the logsumexp over ranks of ``local``, float64.  ``-inf`` (an empty share) is fine."""
    return torch.logsumexp(_all_gather(local.detach().to(torch.float64), ctx), 0)


def step_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``seed`` and non-negative ``keys`` (e.g. stream, step, block).

    The same on every rank and machine; used so that no draw depends on the rank.
    """
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *map(int, keys)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# ============================================================================ negative phase
class NegativeShare:
    r"""A rank's share of the negative phase: the protocol the distributed fit loop uses.

    ``share(energy, step, ctx)`` returns this rank's :class:`~ebmfit.training.Negatives`;
    the log-weights are those of the *global* rule (the loop normalises π with the global
    logsumexp).  ``state_dict()`` is this rank's state (tensors whose first axis runs over
    chains, and generator states); ``load_state_dicts(states, ctx)`` receives the states of
    *every* rank of the run that wrote the checkpoint, possibly of another world size, and
    keeps its share.  Persistent chains plug in here: each rank keeps its chains, and on a
    change of world size the concatenated chains are split again with :func:`partition_range`.
    """

    def __call__(
        self, energy, step: int, ctx: DistContext
    ) -> Negatives:  # pragma: no cover - interface
        raise NotImplementedError

    def config(self) -> dict:
        """A JSON-able description, checked against the checkpoint on resume."""
        return {"kind": type(self).__name__}

    def state_dict(self) -> dict:
        return {}

    def load_state_dicts(self, states: list[dict], ctx: DistContext) -> None:
        return None


class GridShare(NegativeShare):
    r"""The exact negative phase of :class:`~ebmfit.training.ShiftedGridNegatives`, split by rank.

    Every rank draws the *same* shift, from ``step_seed(seed, 1, step)``, builds the shifted
    grid and keeps its contiguous slice of the nodes (``partition_range``).  Building the grid
    costs O(G·d) per rank; the energy (the expensive part) is evaluated on the slice only.
    The union over ranks is the single-process grid, whatever the number of ranks.
    """

    def __init__(self, grid: ShiftedGridNegatives, seed: int = 0):
        self.grid = grid
        self.seed = int(seed)

    def __call__(self, energy, step: int, ctx: DistContext) -> Negatives:
        g = _generator(step_seed(self.seed, _NEGATIVES, step), energy.param_device())
        neg = self.grid(energy, g)
        s, e = partition_range(neg.points.shape[0], ctx.rank, ctx.world_size)
        return Negatives(neg.points[s:e], neg.log_weights[s:e], neg.self_normalize)

    def config(self) -> dict:
        return {
            "kind": "grid",
            "dim": self.grid.dim,
            "points_per_axis": self.grid.points_per_axis,
            "n_nodes": self.grid.n_nodes,
            "seed": self.seed,
        }


class ImportanceShare(NegativeShare):
    r"""Self-normalised importance sampling from the base, each rank drawing its own samples.

    The ``n_samples`` global samples come in ``n_blocks`` fixed blocks; block b of step t is
    drawn from its own generator ``step_seed(seed, 1, t, b)`` and rank r draws the blocks
    ``partition_range(n_blocks, r, W)``.  The seeds of different ranks are distinct, and the
    global sample set is the same for every world size (so W ranks reproduce one process and a
    resume on another world size is exact).  Log-weights are :math:`-\log n_{\text{samples}}`.
    """

    def __init__(
        self,
        dim: int,
        n_samples: int = 8192,
        *,
        base: BaseMeasure | None = None,
        n_blocks: int = 64,
        seed: int = 0,
    ):
        if n_blocks < 1 or n_samples < n_blocks:
            raise ValueError("need 1 <= n_blocks <= n_samples")
        self.dim = int(dim)
        self.n_samples = int(n_samples)
        self.base = base if base is not None else Uniform(dim)
        self.n_blocks = int(n_blocks)
        self.seed = int(seed)

    @classmethod
    def from_negatives(cls, neg: ImportanceNegatives, **kwargs) -> ImportanceShare:
        return cls(neg.dim, neg.n_samples, base=neg.base, **kwargs)

    def __call__(self, energy, step: int, ctx: DistContext) -> Negatives:
        dev = energy.param_device()
        b0, b1 = partition_range(self.n_blocks, ctx.rank, ctx.world_size)
        parts = [torch.empty(0, self.dim, dtype=torch.float64, device=dev)]
        for b in range(b0, b1):
            s, e = partition_range(self.n_samples, b, self.n_blocks)
            g = _generator(step_seed(self.seed, _NEGATIVES, step, b), dev)
            parts.append(self.base.sample(e - s, generator=g, device=dev))
        pts = torch.cat(parts)
        logw = torch.full(
            (pts.shape[0],), -math.log(self.n_samples), dtype=torch.float64, device=dev
        )
        return Negatives(pts, logw, True)  # u ~ P, so π ∝ e^{-V}: weights relative to P

    def config(self) -> dict:
        return {
            "kind": "importance",
            "dim": self.dim,
            "n_samples": self.n_samples,
            "n_blocks": self.n_blocks,
            "seed": self.seed,
        }


# ============================================================================ log Z across ranks
def _unravel(idx: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    out = []
    for n in reversed(sizes):
        out.append(idx % n)
        idx = idx // n
    return out[::-1]


@torch.no_grad()
def log_partition_grid_distributed(
    energy,
    base: BaseMeasure,
    axes: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    ctx: DistContext,
    chunk: int = 65536,
) -> float:
    r""":math:`\operatorname{logsumexp}_g(\log w_g - V(u_g) + \log p(u_g))` over a tensor grid,
    each rank evaluating its contiguous slice of the (C-order) nodes."""
    dev, dt = energy.param_device(), energy.param_dtype()
    axes = [a.to(device=dev, dtype=torch.float64) for a in axes]
    logws = [torch.log(w.to(device=dev, dtype=torch.float64)) for w in weights]
    sizes = [a.shape[0] for a in axes]
    s, e = partition_range(math.prod(sizes), ctx.rank, ctx.world_size)
    parts = [torch.full((), -math.inf, dtype=torch.float64, device=dev)]
    for c0 in range(s, e, chunk):
        idx = _unravel(torch.arange(c0, min(e, c0 + chunk), device=dev), sizes)
        pts = torch.stack([a[i] for a, i in zip(axes, idx, strict=True)], dim=-1)
        li = sum(lw[i] for lw, i in zip(logws, idx, strict=True)) - energy(pts.to(dt)).to(
            torch.float64
        )
        if not isinstance(base, Uniform):
            li = li + base.log_prob(pts)
        parts.append(torch.logsumexp(li, 0))
    return float(all_gather_logsumexp(torch.logsumexp(torch.stack(parts), 0), ctx))


def log_partition_quadrature_distributed(
    energy, base: BaseMeasure | None = None, ctx: DistContext | None = None
) -> LogZ:
    """:func:`ebmfit.partition.quadrature.log_partition_quadrature` (default resolutions), with
    the nodes of both levels split over ranks."""
    ctx = ctx or current_context()
    d = energy.dim
    if d > MAX_DIM:
        raise ValueError(f"tensor quadrature is limited to d <= {MAX_DIM}; use QMC")
    base = base if base is not None else Uniform(d)
    cells, nodes = default_resolution(d)
    vals, n_evals = [], 0
    for c in (cells, 2 * cells):
        ax, w = gauss_legendre_1d(c, nodes)
        vals.append(log_partition_grid_distributed(energy, base, [ax] * d, [w] * d, ctx))
        n_evals += ax.numel() ** d
    if not all(math.isfinite(v) for v in vals):
        raise FloatingPointError(f"log Z is not finite at the quadrature nodes: {vals}")
    return LogZ(vals[1], abs(vals[1] - vals[0]), "gauss-legendre", n_evals, "none")


@torch.no_grad()
def log_partition_qmc_distributed(
    energy,
    base: BaseMeasure | None = None,
    ctx: DistContext | None = None,
    *,
    n_points: int = 2**14,
    n_rep: int = 16,
    random_state: int | None = None,
    chunk: int = 65536,
) -> LogZ:
    r""":func:`ebmfit.partition.qmc.log_partition_qmc` with each rank evaluating its slice of
    every scrambled Sobol set.

    All ranks build the same scramblings from ``random_state``; rank r generates only its
    points (Sobol ``fast_forward``).  The per-rank logsumexps of each set are combined with an
    all-gather, and the estimate and its standard error (from the R set means, delta method)
    are those of one process with the same points.  ``random_state`` must be an int (or None
    → 0): it is shared by all ranks.
    """
    ctx = ctx or current_context()
    d = energy.dim
    base = base if base is not None else Uniform(d)
    if n_points & (n_points - 1):
        raise ValueError("n_points must be a power of 2 for Sobol balance")
    if n_rep < 2:
        raise ValueError("n_rep must be >= 2 to estimate a standard error")
    if random_state is not None and not isinstance(random_state, (int, np.integer)):
        raise TypeError("random_state must be an int shared by all ranks")
    rng = np.random.default_rng(0 if random_state is None else int(random_state))
    s, e = partition_range(n_points, ctx.rank, ctx.world_size)
    local = torch.full((n_rep,), -math.inf, dtype=torch.float64)
    for r in range(n_rep):
        sob = qmc.Sobol(d, scramble=True, seed=rng)
        if e > s:
            if s:
                sob.fast_forward(s)
            u = torch.as_tensor(sob.random(e - s))
            local[r] = torch.logsumexp(log_integrand(energy, base, u, chunk), 0).cpu()
    log_zr = all_gather_logsumexp(local, ctx).cpu().numpy() - math.log(n_points)
    return combine_replicates(log_zr, n_points)


def log_mean_exp_distributed(
    local_log_weights: torch.Tensor, ctx: DistContext | None = None, *, method: str = "is"
) -> LogZ:
    r"""log Z from importance (or AIS) log-weights spread over ranks.

    :math:`\log\hat Z = \log\frac1n\sum_k e^{\ell_k}` over the weights of *all* ranks (gathered
    in rank order; shape (n_r,) on rank r) and the delta-method standard error
    :math:`\sqrt{(n/\mathrm{ESS} - 1)/(n - 1)}` of
    :func:`ebmfit.partition.importance.log_weight_stats`.  By Jensen
    :math:`\mathbb{E}\log\hat Z \le \log Z` (bias "lower").
    """
    ctx = ctx or current_context()
    lw = gather_rows(local_log_weights.detach().to(torch.float64).reshape(-1), ctx).cpu()
    value, stderr, _ = log_weight_stats(lw)
    return LogZ(value, stderr, method, lw.numel(), "lower")


def log_partition_ais_distributed(
    energy,
    base: BaseMeasure | None = None,
    ctx: DistContext | None = None,
    *,
    n_chains: int = 1024,
    n_blocks: int = 16,
    seed: int = 0,
    schedule: str | torch.Tensor = "adaptive",
    step_size: float | torch.Tensor | None = None,
    **ais_kwargs: Any,
) -> AISResult:
    r"""Forward AIS (:func:`ebmfit.partition.ais.log_partition_ais`) with the chains split over
    ranks.

    The plan (temperatures and frozen step sizes) is tuned once, by rank 0's pilot run, and
    sent to every rank, so all chains see the same sequence of exact kernels.  The ``n_chains``
    chains come in ``n_blocks`` fixed blocks; block b runs from its own generator
    ``step_seed(seed, 3, b)`` and rank r runs the blocks ``partition_range(n_blocks, r, W)``.
    The log-weights of all chains are gathered; the estimate, its standard error and the ESS
    are those of one process running the same blocks, whatever W.  ``samples`` holds this
    rank's final positions only; ``acceptance`` and ``divergences`` cover all chains.
    ``ais_kwargs`` go to :func:`~ebmfit.partition.ais.log_partition_ais` (``n_temps``,
    ``kernel``, ``n_steps``, ``n_pilot``, ...).
    """
    ctx = ctx or current_context()
    base = base if base is not None else Uniform(energy.dim)
    n_blocks = max(1, min(int(n_blocks), int(n_chains) // 2))
    dev = energy.param_device()
    pilot_evals = 0
    if isinstance(schedule, torch.Tensor) and step_size is not None:  # nothing to tune
        betas = schedule.detach().to(torch.float64).cpu()
        eps = torch.as_tensor(step_size, dtype=torch.float64).reshape(-1)
        plan = (betas, eps.expand(betas.numel() - 1).clone() if eps.numel() == 1 else eps, 0)
    else:
        plan = None
        if ctx.is_main:  # a pilot plus two throw-away chains: the plan is all we keep
            g = _generator(step_seed(seed, _AIS, 0), dev)
            r = log_partition_ais(
                energy, base, n_chains=2, schedule=schedule, step_size=step_size, generator=g,
                **ais_kwargs,
            )  # fmt: skip
            plan = (r.betas, r.step_sizes, r.logz.n_evals)
        plan = _broadcast(plan, ctx)
        pilot_evals = plan[2]
    betas, eps = plan[0], plan[1]
    b0, b1 = partition_range(n_blocks, ctx.rank, ctx.world_size)
    results = []
    for b in range(b0, b1):
        s, e = partition_range(n_chains, b, n_blocks)
        g = _generator(step_seed(seed, _AIS, 1, b), dev)
        results.append(
            log_partition_ais(
                energy, base, n_chains=e - s, schedule=betas, step_size=eps, generator=g,
                **ais_kwargs,
            )
        )  # fmt: skip
    counts = torch.zeros(3 + betas.numel() - 1, dtype=torch.float64)  # n, div, evals, Σ acc
    for r in results:
        n = r.log_weights.numel()
        counts[:3] += torch.tensor([n, r.divergences, r.logz.n_evals], dtype=torch.float64)
        counts[3:] += n * r.acceptance
    tot = _all_gather(counts, ctx).sum(0)
    lw_local = torch.cat([r.log_weights for r in results] or [torch.empty(0, dtype=torch.float64)])
    lw = gather_rows(lw_local, ctx).cpu()
    value, stderr, ess = log_weight_stats(lw)
    logz = LogZ(value, stderr, "ais-forward", int(tot[2]) + pilot_evals, "lower")
    samples = torch.cat(
        [r.samples for r in results]
        or [torch.empty(0, energy.dim, dtype=torch.float64, device=dev)]
    )
    return AISResult(logz, ess, lw, tot[3:] / tot[0], betas, eps, samples, int(tot[1]))


def check_log_partition_distributed(energy, base: BaseMeasure, ctx: DistContext) -> float:
    """The checking rule of :func:`ebmfit.training.fit.check_log_partition`, split over ranks."""
    d = energy.dim
    if d <= MAX_DIM:
        cells, nodes = default_resolution(d)
        ax, w = gauss_legendre_1d(cells, nodes)
        return log_partition_grid_distributed(energy, base, [ax] * d, [w] * d, ctx)
    return log_partition_qmc_distributed(
        energy, base, ctx, n_points=2**13, n_rep=8, random_state=12345
    ).value


@torch.no_grad()
def validation_nll_distributed(
    energy, U_val_local: torch.Tensor, base: BaseMeasure, ctx: DistContext
) -> float:
    """:func:`ebmfit.training.validation_nll` of the union of the ranks' validation rows."""
    dt = energy.param_dtype()
    U = U_val_local.to(energy.param_device())
    sv = sum(
        (energy(c.to(dt)).double().sum() for c in U.split(65536)),
        torch.zeros((), dtype=torch.float64, device=U.device),
    )
    lb = (
        torch.zeros((), dtype=torch.float64, device=U.device)
        if isinstance(base, Uniform)
        else base.log_prob(U).double().sum()
    )
    stats = torch.stack([sv, lb, torch.tensor(float(U.shape[0]), dtype=torch.float64)])
    tot = _all_gather(stats.cpu(), ctx).sum(0)
    if tot[2] == 0:
        raise ValueError("no validation rows on any rank")
    log_z = check_log_partition_distributed(energy, base, ctx)
    return float(tot[0] / tot[2]) + log_z - float(tot[1] / tot[2])


# ============================================================================ the fit loop
@dataclass
class DistributedFitResult(FitResult):
    """:class:`~ebmfit.training.FitResult` plus the run's scale and speed."""

    world_size: int = 1
    wall_time: float = 0.0
    step_time: float = math.nan  # mean seconds per training step (no validation/checkpoint)
    resumed_from: int | None = None


def _ddp(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    kw: dict[str, Any] = {}
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in params:  # buffers (e.g. Fourier frequencies) are constant
        kw["forward_sync_buffers"] = False
    else:  # pragma: no cover - older torch
        kw["broadcast_buffers"] = False
    if ctx.device.type == "cuda":
        kw["device_ids"] = [ctx.device]
    return DistributedDataParallel(module, **kw)


def _config(energy, negatives, n_global, bs, max_iter, lr, seed, val_every, patience) -> dict:
    try:
        spec = energy.spec()
    except Exception:  # energies wrapping code have no spec; the weights still must fit
        spec = {"family": getattr(energy, "family", type(energy).__name__)}
    return {
        "energy": spec,
        "negatives": negatives.config(),
        "n_train": int(n_global),
        "batch_size": int(bs),
        "max_iter": int(max_iter),
        "lr": float(lr),
        "seed": int(seed),
        "val_every": int(val_every),
        "patience": int(patience),
    }


def _collect(obj: Any, ctx: DistContext) -> list:
    if not ctx.active:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def _broadcast(obj: Any, ctx: DistContext) -> Any:
    if not ctx.active:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def fit_distributed(
    energy,
    U_local: torch.Tensor,
    negatives: NegativeShare,
    *,
    U_val_local: torch.Tensor | None = None,
    base: BaseMeasure | None = None,
    max_iter: int = 2000,
    lr: float = 2e-3,
    batch_size: int | None = None,
    seed: int = 0,
    val_every: int = 50,
    patience: int = 10,
    restore_best: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    callback: Callable[[int, dict], Any] | None = None,
    ctx: DistContext | None = None,
    progress: bool = False,
) -> DistributedFitResult:
    r"""Adam on the gradient-identity surrogate, data-parallel over the ranks of ``ctx``.

    Args:
        energy: the model V (identical initial weights on every rank are *not* required:
            DDP broadcasts rank 0's).
        U_local: this rank's rows of the training data on the unit cube, shape (n_r, d); the
            global row order is rank 0's rows, then rank 1's, ... (see :func:`shard_rows`).
        negatives: this rank's share of the negative phase (:class:`GridShare`,
            :class:`ImportanceShare`, or any :class:`NegativeShare`).
        U_val_local: this rank's validation rows; None disables validation and early stopping.
        batch_size: global batch size B (rows drawn with replacement from all ranks' rows with
            a generator shared by the ranks); None or ≥ n: the full data every step.
        seed: seeds every draw together with the step number; never the rank.
        checkpoint: file written atomically by rank 0 every ``checkpoint_every`` steps and at
            the end (model, Adam, scheduler, step, best state, history, negative-phase state
            and the RNG states of every rank).
        resume: continue from ``checkpoint`` if it exists (on any number of ranks); the
            run's settings must equal those stored in it.
        callback: ``callback(step, info)`` after every step on every rank; a truthy return
            stops the run (it must then be truthy on every rank, e.g. a function of ``info``).

    Returns a :class:`DistributedFitResult` (the same on every rank).  The energy is left at
    its best-validation state if ``restore_best`` and validation is on, else at the last step.
    A non-finite loss stops every rank with :class:`~ebmfit.training.FitError`.
    """
    t_start = time.perf_counter()
    ctx = ctx or current_context()
    W = ctx.world_size
    base = base if base is not None else Uniform(energy.dim)
    energy = energy.to(ctx.device)
    dev, dt = energy.param_device(), energy.param_dtype()
    U_local = U_local.to(device=dev, dtype=torch.float64)
    sizes = _all_gather(torch.tensor([U_local.shape[0]], dtype=torch.int64), ctx).reshape(-1)
    n_global = int(sizes.sum())
    if n_global == 0:
        raise ValueError("no training rows on any rank")
    offset = int(sizes[: ctx.rank].sum())
    n_local = U_local.shape[0]
    bs = n_global if batch_size is None or batch_size >= n_global else int(batch_size)
    validate = U_val_local is not None
    cfg = _config(energy, negatives, n_global, bs, max_iter, lr, seed, val_every, patience)

    # ---- state, possibly from a checkpoint (rank 0 reads, everyone receives)
    ck = None
    if resume and checkpoint is not None:
        if ctx.is_main:
            remove_stale_temporaries(checkpoint)
        ck = _broadcast(
            load_checkpoint(checkpoint) if ctx.is_main and Path(checkpoint).is_file() else None,
            ctx,
        )
        if ck is not None:
            _check_resume(ck, cfg, checkpoint)
            energy.load_state_dict(ck["model"])
            energy.to(dev)
    model = _ddp(energy, ctx) if ctx.active and W > 1 else energy
    opt = torch.optim.Adam(energy.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.02, 1 - t / max_iter))
    step, since_best, history, finished = 0, 0, [], False
    best: dict[str, Any] = {"val": math.inf, "it": 0, "state": None}
    resumed_from, reason = None, "max_iter"
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, since_best, history = int(ck["step"]), int(ck["since_best"]), list(ck["history"])
        best = {"val": float(ck["best"]["val"]), "it": int(ck["best"]["it"])}
        best["state"] = ck["best"]["state"]
        negatives.load_state_dicts(list(ck["negatives"]), ctx)
        if int(ck["world_size"]) == W:
            restore_rng_state(ck["rng"][ctx.rank], ctx.device)
        elif ctx.is_main:
            warnings.warn(
                f"checkpoint written by {ck['world_size']} rank(s), resuming on {W}: the global "
                "RNG states of the ranks are not restored (ebmfit's own draws depend only on "
                "(seed, step) and are unaffected)",
                stacklevel=2,
            )
        resumed_from = step
        finished = bool(ck.get("finished", False))  # early-stopped or at max_iter: done
        if finished:
            reason = str(ck.get("stop_reason", reason))
    elif validate:
        best["val"] = validation_nll_distributed(energy, U_val_local, base, ctx)
        best["state"] = copy.deepcopy(energy.state_dict())
        history.append({"iter": 0, "val_nll": best["val"]})

    def write_checkpoint() -> None:
        if checkpoint is None:
            return
        rng = _collect(capture_rng_state(ctx.device), ctx)
        neg_states = _collect(negatives.state_dict(), ctx)
        if ctx.is_main:
            save_checkpoint(
                {
                    "config": cfg,
                    "step": step,
                    "world_size": W,
                    "model": energy.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "best": best,
                    "since_best": since_best,
                    "history": history,
                    "finished": finished,
                    "stop_reason": reason,
                    "negatives": neg_states,
                    "rng": rng,
                },
                checkpoint,
            )
        if ctx.active:  # everyone leaves only once the file is in place
            dist.barrier()

    bar = None
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, initial=step, desc=f"fit ×{W}", leave=False)
    step_time, n_timed = 0.0, 0
    while step < max_iter and not finished:
        t0 = time.perf_counter()
        if bs < n_global:
            g = torch.Generator().manual_seed(step_seed(seed, _BATCH, step))
            idx = torch.randint(0, n_global, (bs,), generator=g)
            idx = idx[(idx >= offset) & (idx < offset + n_local)] - offset
            X = U_local[idx.to(dev)]
        else:
            X = U_local
        neg = negatives(energy, step, ctx)
        V = model(torch.cat([X, neg.points.to(device=dev, dtype=torch.float64)]).to(dt))
        V_data, V_neg = V[: X.shape[0]], V[X.shape[0] :].to(torch.float64)
        log_w = neg.log_weights.to(dev)
        lz_local = torch.logsumexp(log_w - V_neg.detach(), 0)
        logits = log_w - V_neg.detach() if neg.self_normalize else log_w
        norm_local = lz_local if neg.self_normalize else torch.logsumexp(log_w, 0)
        stats = torch.stack([norm_local, lz_local, V_data.detach().to(torch.float64).sum()])
        allstats = _all_gather(stats.cpu(), ctx)
        log_norm = torch.logsumexp(allstats[:, 0], 0)
        log_z_hat = torch.logsumexp(allstats[:, 1], 0)
        nll_est = float(allstats[:, 2].sum() / bs + log_z_hat)
        if not (math.isfinite(nll_est) and math.isfinite(float(log_norm))):
            if bar is not None:
                bar.close()
            raise FitError(
                f"training diverged at step {step} (non-finite loss or energies on some rank); "
                f"best validation NLL {best['val']:.4f} at step {best['it']}"
                + (f"; the last checkpoint {checkpoint} is intact" if checkpoint else "")
            )
        pi = torch.exp(logits - log_norm.to(dev))
        loss = W * (V_data.sum() / bs - (pi * V_neg).sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        step_time += time.perf_counter() - t0
        n_timed += 1
        info: dict[str, Any] = {"step": step, "train_nll_est": nll_est}
        if bar is not None:
            bar.update(1)
        stop = False
        if validate and (step % val_every == 0 or step == max_iter):
            val = validation_nll_distributed(energy, U_val_local, base, ctx)
            row = {"iter": step, "train_nll_est": nll_est, "val_nll": val}
            row["lr"] = opt.param_groups[0]["lr"]
            history.append(row)
            info["val_nll"] = val
            if bar is not None:
                bar.set_postfix(val_nll=f"{val:.4f}")
            if not math.isfinite(val):
                raise FitError(f"validation NLL became non-finite at step {step}")
            if val < best["val"] - 1e-5:
                best = {"val": val, "it": step, "state": copy.deepcopy(energy.state_dict())}
                since_best = 0
            else:
                since_best += 1
                if since_best >= patience:
                    reason, stop = "early_stopping", True
        finished = stop or step == max_iter
        if callback is not None and callback(step, info):
            reason, stop = "callback", True  # an interruption: a resume carries on
        if checkpoint is not None and (step % checkpoint_every == 0 or stop or finished):
            write_checkpoint()
        if stop:
            break
    if bar is not None:
        bar.close()
    if validate and restore_best and best["state"] is not None:
        energy.load_state_dict(best["state"])
    return DistributedFitResult(
        n_iter=step,
        best_val_nll=best["val"],
        best_iter=best["it"],
        stop_reason=reason,
        history=history,
        world_size=W,
        wall_time=time.perf_counter() - t_start,
        step_time=step_time / n_timed if n_timed else math.nan,
        resumed_from=resumed_from,
    )


def _check_resume(ck: dict, cfg: dict, path) -> None:
    old = ck.get("config", {})
    diff = {k: (old.get(k), v) for k, v in cfg.items() if old.get(k) != v}
    if diff:
        lines = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"{path}: the checkpoint belongs to a run with other settings ({lines}); resume "
            "with the same data and options, or start a new run with another checkpoint path"
        )


# ============================================================================ high level
def fit_model_distributed(
    X: np.ndarray,
    *,
    energy: str = "mlp",
    energy_params: dict | None = None,
    low=None,
    high=None,
    margin: float = 0.05,
    clip: bool = False,
    validation_fraction: float = 0.2,
    max_iter: int = 2000,
    lr: float = 2e-3,
    batch_size: int | None = None,
    negatives: str = "auto",
    seed: int = 0,
    checkpoint=None,
    checkpoint_every: int = 50,
    resume: bool = False,
    ctx: DistContext | None = None,
    progress: bool = False,
):
    """Fit a normalized energy model to the rows of ``X`` (user coordinates) on all ranks.

    Every rank passes the same ``X`` (e.g. read from the same file); the box, the
    train/validation split (from ``seed``) and the energy are built identically on every
    rank, then each rank keeps its shard of the rows.  ``negatives``: ``"grid"`` (exact,
    d ≤ 3), ``"importance"`` or ``"auto"``.  Only SGD-trained (neural) energies are
    distributed; the convex linear families are fitted on one process by
    :class:`~ebmfit.EnergyDensity`.

    Returns ``(model, result)``: an :class:`~ebmfit.model.EnergyModel` (the same on every
    rank, with ``log_partition_`` computed across ranks) and a :class:`DistributedFitResult`.
    """
    from ..domain import Box, check_matrix
    from ..estimator import default_energy
    from ..model import EnergyModel

    ctx = ctx or current_context()
    X = check_matrix(X, name="X", min_rows=10)
    d = X.shape[1]
    if low is None and high is None:
        box = Box.from_data(X, margin)
    elif low is None or high is None:
        raise ValueError("give both low and high, or neither (bounds from the data)")
    else:
        box = Box(
            np.broadcast_to(np.asarray(low, dtype=np.float64), (d,)),
            np.broadcast_to(np.asarray(high, dtype=np.float64), (d,)),
        )
    X = box.validate(X, clip=clip)
    family = "mlp" if energy == "auto" else energy
    params = dict(energy_params or {})
    params.setdefault("seed", seed)
    V = default_energy(family, d, params)
    if V.is_linear:
        raise ValueError(
            f"energy {family!r} is linear and is fitted to its convex optimum on one process "
            "(EnergyDensity / ebmfit fit without --nproc); distributed training is for 'mlp'"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(X.shape[0])
    n_val = max(1, int(round(validation_fraction * X.shape[0])))
    U = torch.as_tensor(box.to_unit(X))
    U_val, U_tr = U[perm[:n_val]], U[perm[n_val:]]
    kind = negatives if negatives != "auto" else ("grid" if d <= MAX_DIM else "importance")
    if kind == "grid":
        share: NegativeShare = GridShare(ShiftedGridNegatives(d), seed=seed)
    elif kind == "importance":
        share = ImportanceShare(d, seed=seed)
    else:
        raise ValueError(f"unknown negatives {negatives!r}: 'auto', 'grid' or 'importance'")
    res = fit_distributed(
        V,
        shard_rows(U_tr, ctx),
        share,
        U_val_local=shard_rows(U_val, ctx),
        max_iter=max_iter,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        ctx=ctx,
        progress=progress,
    )
    V.eval()
    model = EnergyModel(V, box)
    if d <= MAX_DIM:
        model.log_partition_ = log_partition_quadrature_distributed(V, model.base, ctx)
    else:
        model.log_partition_ = log_partition_qmc_distributed(V, model.base, ctx, random_state=seed)
    return model, res


# ============================================================================ launching
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_env(env: dict) -> dict:
    env = dict(env)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if sys.platform.startswith("linux") and "lo" in {n for _, n in socket.if_nameindex()}:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def launch_local(
    nproc: int,
    args: Sequence[str],
    *,
    module: str = "ebmfit",
    timeout: float | None = None,
    env: dict | None = None,
) -> int:
    """Run ``python -m <module> <args>`` as ``nproc`` ranks on this machine (torchrun, loopback).

    Returns torchrun's exit status: non-zero as soon as one rank fails (torchrun then stops the
    others, and a line saying so goes to stderr).  Each rank gets ``OMP_NUM_THREADS = cores // nproc`` unless it is set.
    """
    if nproc < 1:
        raise ValueError("nproc must be >= 1")
    env = _loopback_env(os.environ if env is None else env)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "--max-restarts",
        "0",
        "-m",
        module,
        *args,
    ]
    rc = subprocess.run(cmd, env=env, timeout=timeout, check=False).returncode
    if rc:
        print(
            f"error: the {nproc}-process run failed (torchrun exit status {rc}); the failing "
            "rank's message is above. Checkpoints written so far are intact (use --resume).",
            file=sys.stderr,
            flush=True,
        )
    return rc


def fit_and_save(
    X: np.ndarray,
    output,
    *,
    feature_names: Sequence[str] | None = None,
    echo: Callable[[str], Any] = print,
    **fit_kwargs: Any,
) -> int:
    """What ``ebmfit fit`` runs in each rank: join the group, fit, let rank 0 write ``output``.

    ``fit_kwargs`` go to :func:`fit_model_distributed`.  Returns the exit status (0, or 1
    after printing which rank failed and why); the process group is always left.
    """
    from ..io import save_model

    ctx = init_distributed()
    try:
        model, res = fit_model_distributed(X, ctx=ctx, **fit_kwargs)
        if ctx.is_main:
            extra = {
                "n_features_in": int(X.shape[1]),
                "n_iter": int(res.n_iter),
                "fit_time": float(res.wall_time),
                "stop_reason": str(res.stop_reason),
                "world_size": int(res.world_size),
            }
            if feature_names is not None:
                extra["feature_names"] = [str(c) for c in feature_names]
            save_model(model, output, extra=extra)
            echo(
                f"fitted {X.shape[0]} rows × {X.shape[1]} columns on {res.world_size} rank(s) in "
                f"{res.wall_time:.1f} s ({res.n_iter} steps, {1 / res.step_time:.1f} steps/s, "
                f"{res.stop_reason}); log Z = {model.log_partition_}; best validation NLL "
                f"{res.best_val_nll:.4f}"
            )
            echo(f"wrote {output}")
        return 0
    except Exception as e:
        ck = fit_kwargs.get("checkpoint")
        print(
            f"error: rank {ctx.rank} of {ctx.world_size} failed: {type(e).__name__}: {e}"
            + (f" (the last checkpoint {ck} is intact)" if ck else ""),
            file=sys.stderr,
            flush=True,
        )
        return 1
    finally:
        shutdown_distributed()


def argv_from_click(ctx, exclude: Sequence[str] = ("nproc",)) -> list[str]:
    """Rebuild the command line of the running click/typer command (for re-launching it).

    Parameters named in ``exclude`` are left out: ``--nproc`` must not reach torchrun's own
    argument parser, which would reject it as an ambiguous abbreviation of
    ``--nproc-per-node``; ranks know they are ranks from torchrun's environment.
    """
    argv = [ctx.info_name]
    for p in ctx.command.params:
        v = ctx.params.get(p.name)
        if p.name in exclude or p.name not in ctx.params:
            continue
        if p.param_type_name == "argument":
            argv += [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        elif getattr(p, "is_flag", False):
            if v and p.opts:
                argv.append(p.opts[0])
            elif not v and p.secondary_opts:
                argv.append(p.secondary_opts[0])
        elif v is not None:
            for x in v if isinstance(v, (list, tuple)) else [v]:
                argv += [p.opts[0], str(x)]
    return argv
