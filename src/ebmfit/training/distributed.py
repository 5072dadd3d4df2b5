r"""log Z across processes (torch.distributed): each rank evaluates its share of the points.

The fit loops themselves run on N processes through :class:`~ebmfit.training.parallel.ParallelContext`
(``fit_sgd(parallel=...)``, ``fit_convex(parallel=...)``, ``EnergyDensity.fit(X,
parallel=...)``); this module splits the *estimates* of log Z over ranks: quadrature nodes,
scrambled Sobol points, importance batches and AIS chains, in rank order, so that the estimate
and its standard error are those of one process with the same points or chains, whatever the
number of ranks.  :func:`log_partition_distributed` resolves ``"auto"`` by the one rule of the
estimator and :class:`~ebmfit.EnergyModel`
(:func:`~ebmfit.partition.auto.log_partition_rule`).  Without an initialised process group
everything here runs as a single rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import qmc

from ..base import BaseMeasure, Uniform
from ..energies.base import Energy
from ..grid import gauss_legendre_1d
from ..partition.ais import log_partition_ais
from ..partition.auto import resolve_method
from ..partition.importance import check_draws, combine_batches, log_weight_stats
from ..partition.qmc import check_sobol, combine_replicates, log_integrand
from ..partition.quadrature import MAX_DIM, check_log_partition, default_resolution
from ..partition.result import AISDiagnostics, LogZ, QuadratureDiagnostics
from .fit import base_check_points
from .parallel import ParallelContext, init_parallel, partition_range, step_seed

__all__ = [
    "DistContext",
    "all_gather_logsumexp",
    "check_log_partition_distributed",
    "current_context",
    "gather_rows",
    "grid_logsumexp_distributed",
    "log_mean_exp_distributed",
    "log_partition_ais_distributed",
    "log_partition_distributed",
    "log_partition_importance_distributed",
    "log_partition_qmc_distributed",
    "log_partition_quadrature_distributed",
    "shard_rows",
    "validation_nll_distributed",
]

#: The context type (an alias kept for the log Z functions' signatures).
DistContext = ParallelContext
_AIS = 3  # random stream of AIS blocks in ``step_seed``
_IS = 4  # random stream of importance batches


def current_context(device: str | torch.device | None = None) -> ParallelContext:
    """The context of this process (an initialised process group, or one rank)."""
    return init_parallel(device=device)


def shard_rows(X: torch.Tensor, ctx: ParallelContext) -> torch.Tensor:
    """This rank's contiguous block of the rows of X (use when every rank has all the data)."""
    s, e = ctx.share(X.shape[0])
    return X[s:e]


def gather_rows(x: torch.Tensor, ctx: ParallelContext) -> torch.Tensor:
    """Concatenate every rank's rows of ``x`` (n_r may differ) in rank order."""
    return ctx.gather_rows(x)


def _all_gather(x: torch.Tensor, ctx: ParallelContext) -> torch.Tensor:
    return ctx.all_gather(x)


def _broadcast(obj: Any, ctx: ParallelContext) -> Any:
    return ctx.broadcast_object(obj)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def all_gather_logsumexp(local: torch.Tensor, ctx: ParallelContext) -> torch.Tensor:
    r"""Global :math:`\operatorname{logsumexp}` from per-rank values (any shape, same on all
    ranks): the logsumexp over ranks of ``local``, float64.  ``-inf`` (an empty share) is fine."""
    return torch.logsumexp(_all_gather(local.detach().to(torch.float64), ctx), 0)


# ============================================================================ log Z across ranks
def _unravel(idx: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    out = []
    for n in reversed(sizes):
        out.append(idx % n)
        idx = idx // n
    return out[::-1]


@torch.no_grad()
def grid_logsumexp_distributed(
    energy: Energy,
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
    energy: Energy, base: BaseMeasure | None = None, ctx: DistContext | None = None
) -> LogZ:
    """:func:`ebmfit.partition.quadrature.log_partition_quadrature` (default resolutions,
    ``check=False``), with the nodes of both levels split over ranks."""
    ctx = ctx or current_context()
    d = energy.dim
    if d > MAX_DIM:
        raise ValueError(f"tensor quadrature is limited to d <= {MAX_DIM}; use QMC")
    base = base if base is not None else Uniform(d)
    cells, nodes = default_resolution(d)
    vals, n_evals = [], 0
    for c in (cells, 2 * cells):
        ax, w = gauss_legendre_1d(c, nodes)
        vals.append(grid_logsumexp_distributed(energy, base, [ax] * d, [w] * d, ctx))
        n_evals += ax.numel() ** d
    if not all(math.isfinite(v) for v in vals):
        raise FloatingPointError(f"log Z is not finite at the quadrature nodes: {vals}")
    diagnostics = QuadratureDiagnostics(cells, nodes, (vals[0], vals[1]))
    return LogZ(vals[1], abs(vals[1] - vals[0]), "gauss-legendre", n_evals, "none", diagnostics)


@torch.no_grad()
def log_partition_qmc_distributed(
    energy: Energy,
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
    check_sobol(n_points, n_rep)
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
    energy: Energy,
    base: BaseMeasure | None = None,
    ctx: DistContext | None = None,
    *,
    n_chains: int = 1024,
    n_blocks: int = 16,
    seed: int = 0,
    schedule: str | torch.Tensor = "adaptive",
    step_size: float | torch.Tensor | None = None,
    **ais_kwargs: Any,
) -> LogZ:
    r"""Forward AIS (:func:`ebmfit.partition.ais.log_partition_ais`) with the chains split over
    ranks.

    The plan (temperatures and frozen step sizes) is tuned once, by rank 0's pilot run, and
    sent to every rank, so all chains see the same sequence of exact kernels.  The ``n_chains``
    chains come in ``n_blocks`` fixed blocks; block b runs from its own generator
    ``step_seed(seed, 3, b)`` and rank r runs the blocks ``partition_range(n_blocks, r, W)``.
    The log-weights of all chains are gathered; the estimate, its standard error and the ESS
    are those of one process running the same blocks, whatever W.  In the
    :class:`~ebmfit.partition.result.AISDiagnostics`, ``samples`` holds this rank's final
    positions only; ``log_weights``, ``acceptance`` and ``divergences`` cover all chains.
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
            plan = (r.diagnostics.betas, r.diagnostics.step_sizes, r.n_evals)
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
    diags = [r.diagnostics for r in results]
    for r, g in zip(results, diags, strict=True):
        n = g.log_weights.numel()
        counts[:3] += torch.tensor([n, g.divergences, r.n_evals], dtype=torch.float64)
        counts[3:] += n * g.acceptance
    tot = _all_gather(counts, ctx).sum(0)
    lw_local = torch.cat([g.log_weights for g in diags] or [torch.empty(0, dtype=torch.float64)])
    lw = gather_rows(lw_local, ctx).cpu()
    value, stderr, ess = log_weight_stats(lw)
    samples = torch.cat(
        [g.samples for g in diags] or [torch.empty(0, energy.dim, dtype=torch.float64, device=dev)]
    )
    diagnostics = AISDiagnostics(ess, lw, tot[3:] / tot[0], betas, eps, samples, int(tot[1]))
    n_evals = int(tot[2]) + pilot_evals
    return LogZ(value, stderr, "ais-forward", n_evals, "lower", diagnostics)


@torch.no_grad()
def _batch_stats(energy: Energy, u: torch.Tensor) -> torch.Tensor:
    """``(logsumexp lw, logsumexp 2 lw, max lw)`` of the log-weights lw = −V(u), float64."""
    lw = -energy(u).to(torch.float64)  # as in log_partition_importance
    if torch.isnan(lw).any() or torch.isposinf(lw).any():
        raise FloatingPointError(
            "energy is NaN or -inf at a base draw; log Z is undefined or infinite"
        )
    return torch.stack([torch.logsumexp(lw, 0), torch.logsumexp(2 * lw, 0), lw.max()]).cpu()


def log_partition_importance_distributed(
    energy: Energy,
    base: BaseMeasure | None = None,
    ctx: DistContext | None = None,
    *,
    n_samples: int = 65536,
    n_batches: int = 4,
    seed: int = 0,
) -> LogZ:
    r""":func:`ebmfit.partition.importance.log_partition_importance` with its batches split
    over ranks.

    Batch b draws its ``n_samples`` points from the base with its own generator
    ``step_seed(seed, 4, b)``; rank r evaluates the batches ``partition_range(n_batches, r,
    W)``.  The batches' log-sums are gathered and pooled as in one process, so the estimate,
    its standard error and the :class:`~ebmfit.partition.result.ISDiagnostics` are those of
    one process running the same batches, whatever W.
    """
    ctx = ctx or current_context()
    base = base if base is not None else Uniform(energy.dim)
    n_samples, n_batches = check_draws(n_samples, n_batches)
    dev = energy.param_device()
    local = torch.full((n_batches, 3), -math.inf, dtype=torch.float64)
    b0, b1 = partition_range(n_batches, ctx.rank, ctx.world_size)
    for b in range(b0, b1):
        g = _generator(step_seed(seed, _IS, b), dev)
        u = base.sample(n_samples, generator=g, dtype=torch.float64, device=dev)
        local[b] = _batch_stats(energy, u)
    stats = all_gather_logsumexp(local, ctx)  # one rank holds each batch: exact
    return combine_batches(stats[:, 0], stats[:, 1], stats[:, 2], n_samples)


def log_partition_distributed(
    energy: Energy,
    base: BaseMeasure | None = None,
    ctx: DistContext | None = None,
    method: str = "auto",
    *,
    seed: int = 0,
) -> LogZ:
    """log Z by ``method`` with the work split over ranks; ``"auto"`` is the rule of the
    estimator and :class:`~ebmfit.EnergyModel`
    (:func:`~ebmfit.partition.auto.log_partition_rule`).

    ``"quadrature"`` splits both tensor levels over ranks, then rank 0 runs the independent
    adaptive check (:func:`~ebmfit.partition.quadrature.check_log_partition`) and sends the
    result to all; ``"qmc"``, ``"importance"`` and ``"ais"`` are the split estimators above,
    seeded by ``seed`` (the same on every rank); ``"exact"`` needs V ≡ 0.
    """
    ctx = ctx or current_context()
    base = base if base is not None else Uniform(energy.dim)
    method = resolve_method(energy, base, method)
    if method == "exact":
        return LogZ(0.0, 0.0, "exact", 0, "none")
    if method == "quadrature":
        lz = log_partition_quadrature_distributed(energy, base, ctx)
        checked = check_log_partition(energy, base, lz) if ctx.is_main else None
        return _broadcast(checked, ctx)
    if method == "qmc":
        return log_partition_qmc_distributed(energy, base, ctx, random_state=int(seed))
    if method == "importance":
        return log_partition_importance_distributed(energy, base, ctx, seed=seed)
    return log_partition_ais_distributed(energy, base, ctx, seed=seed)


def check_log_partition_distributed(energy: Energy, base: BaseMeasure, ctx: DistContext) -> float:
    """The checking rule of :func:`ebmfit.training.fit.check_log_partition`, split over ranks:
    the same rule and points (a grid for d ≤ 3; else scrambled Sobol for the uniform base and
    the fixed seeded draw of a fitted base), each rank evaluating its share."""
    d = energy.dim
    if d <= MAX_DIM:
        cells, nodes = default_resolution(d)
        ax, w = gauss_legendre_1d(cells, nodes)
        return grid_logsumexp_distributed(energy, base, [ax] * d, [w] * d, ctx)
    if isinstance(base, Uniform):
        return log_partition_qmc_distributed(
            energy, base, ctx, n_points=2**13, n_rep=8, random_state=12345
        ).value
    pts = base_check_points(base, energy.param_device())
    s, e = ctx.share(pts.shape[0])
    dt = energy.param_dtype()
    with torch.no_grad():
        v = torch.cat(
            [energy(c.to(dt)).to(torch.float64) for c in pts[s:e].split(65536)]
            or [torch.empty(0, dtype=torch.float64, device=pts.device)]
        )
    local = torch.logsumexp(-v, 0) if v.numel() else torch.tensor(-math.inf, dtype=torch.float64)
    return float(all_gather_logsumexp(local.cpu(), ctx)) - math.log(pts.shape[0])


@torch.no_grad()
def validation_nll_distributed(
    energy: Energy, U_val_local: torch.Tensor, base: BaseMeasure, ctx: DistContext
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
