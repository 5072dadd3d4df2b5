r"""How one candidate of :class:`~ebmfit.EnergyDensity` is fitted: bases and energies.

The estimator decides *what* to fit (its policy); this module knows *how*:

- :func:`fit_base` fits a base measure to the training rows (choosing its structure on the
  validation rows) and :func:`refit_base` refits the chosen structure on all rows;
- :func:`fit_energy` fits V on a given base — the convex penalised likelihood for linear
  energies with the exact negative phase, Adam on the gradient identity otherwise — and
  returns its :class:`~ebmfit.training.FitResult` with a function that refits it on all rows
  (the convex fit at its selected penalty) or ``None``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import torch

from .base import BaseMeasure, LogitGMMBase, TruncatedGMMBase, Uniform
from .checkpoint import RunCheckpoint
from .energies import Energy
from .training import (
    FitResult,
    ImportanceNegatives,
    Negatives,
    PersistentChains,
    ShiftedGridNegatives,
    ShortRunChains,
    fit_convex,
    fit_sgd,
)
from .training.parallel import ParallelContext

__all__ = [
    "BASES",
    "NEGATIVE_PHASES",
    "Runtime",
    "best_on_validation",
    "current_runtime",
    "fit_base",
    "fit_energy",
    "make_negative_phase",
    "refit_base",
    "running",
]

#: Names accepted by ``EnergyDensity(base=...)``.
BASES = ("auto", "logit_gmm", "uniform", "gmm", "truncated_gmm", "flow")
#: Names accepted by ``EnergyDensity(negative_phase=...)``.
NEGATIVE_PHASES = ("auto", "exact", "pcd", "cd", "importance")

#: Persistent-chain and short-run settings (see :func:`make_negative_phase`).
PCD_CHAINS, PCD_STEPS, PCD_REINIT = 512, 5, 0.25
CD_CHAINS, CD_STEPS = 512, 10
#: Importance-sampling draws from the base per step.
IS_DRAWS = 8192
#: On a base with costly draws (a flow) importance negatives keep a pool of ``IS_DRAWS`` and
#: replace ``IS_DRAWS // IS_REFRESH_FRACTION`` of them per step.
IS_REFRESH_FRACTION = 64
MAX_EXACT_DIM = 3
#: ``base="auto"`` also trains a flow when d > :data:`MAX_EXACT_DIM`, zuko is installed and
#: there are at least ``FLOW_MIN_ROWS`` training rows, for :func:`flow_steps` steps (a step
#: costs more in more dimensions: 0.12–0.17 s at 64-D on 2 idle cores) and at most
#: ``FLOW_TIME_LIMIT`` s, a safety net for loaded machines (at 64-D a slow run can reach it;
#: the fit is then no longer reproducible from ``random_state`` alone).
FLOW_MIN_ROWS, FLOW_TIME_LIMIT = 500, 150.0


def flow_steps(dim: int) -> int:
    """Adam steps of the flow in ``base="auto"``: 64 000 / d, clipped to [1000, 4000]."""
    return max(1000, min(4000, 64000 // max(int(dim), 1)))


@dataclass(frozen=True)
class Runtime:
    """*Where* and *how safely* a fit runs — never *what* is fitted.

    ``parallel``: the ranks (default: one process); ``checkpoint``: where the SGD loops save
    their state (None: nowhere).  Set for the duration of ``EnergyDensity.fit(X,
    parallel=..., checkpoint=...)`` by :func:`running`.
    """

    parallel: ParallelContext = field(default_factory=ParallelContext)
    checkpoint: RunCheckpoint | None = None


_RUNTIME: ContextVar[Runtime] = ContextVar("ebmfit_runtime", default=Runtime())  # noqa: B039


def current_runtime() -> Runtime:
    """The runtime of the fit in progress (one process, no checkpoint by default)."""
    return _RUNTIME.get()


@contextlib.contextmanager
def running(
    parallel: ParallelContext | None = None, checkpoint: RunCheckpoint | None = None
) -> Iterator[Runtime]:
    """Run the fits inside the ``with`` block on ``parallel`` with ``checkpoint``."""
    rt = Runtime(parallel if parallel is not None else ParallelContext(), checkpoint)
    token = _RUNTIME.set(rt)
    try:
        yield rt
    finally:
        _RUNTIME.reset(token)


def fit_base(kind: str, U_tr: torch.Tensor, U_val: torch.Tensor, seed: int) -> BaseMeasure:
    """The base called ``kind`` fitted to the unit-cube rows (``"auto"``: the logit GMM
    unless a rival — the truncated GMM, a flow above 3-D — beats it by 2 SE on validation).

    In a parallel fit, rank 0 fits it (it is small, and scikit-learn's mixtures are not
    guaranteed bit-identical across processes) and sends it to every rank.
    """
    par = current_runtime().parallel
    if par.world_size > 1:
        base = _fit_base(kind, U_tr, U_val, seed) if par.is_main else None
        return par.broadcast_object(base)
    return _fit_base(kind, U_tr, U_val, seed)


@torch.no_grad()
def best_on_validation(
    bases: list[BaseMeasure], U_val: torch.Tensor, margin_se: float = 2.0
) -> BaseMeasure:
    """The first base (the incumbent) unless a rival beats it on ``U_val`` (shape (n, d)) by
    more than ``margin_se`` standard errors of the paired per-row difference of
    log-likelihoods; then the best such rival.  The incumbent is the logit-GMM base, whose
    structure was chosen on these rows (its score is the optimistic one), and on a few
    validation rows the noise of the comparison would otherwise pick families at random
    (iris, 24 rows: −0.06 nats/row when the better-scoring family was simply taken)."""
    U = U_val.to(torch.float64).cpu()
    rows = [b.log_prob(U).numpy() for b in bases]
    best, best_mean = bases[0], float(np.mean(rows[0]))
    n = U.shape[0]
    for b, r in zip(bases[1:], rows[1:], strict=True):
        diff = r - rows[0]
        if n < 2 or not np.all(np.isfinite(diff)):
            continue
        se = float(np.std(diff, ddof=1)) / math.sqrt(n)
        if float(np.mean(diff)) > margin_se * se and float(np.mean(r)) > best_mean:
            best, best_mean = b, float(np.mean(r))
    return best


def _fit_base(kind: str, U_tr: torch.Tensor, U_val: torch.Tensor, seed: int) -> BaseMeasure:
    d = U_tr.shape[1]
    if kind == "uniform":
        return Uniform(d)
    if kind == "logit_gmm":
        return LogitGMMBase.fit(U_tr, U_val, random_state=seed)
    if kind == "auto":  # the stronger exact family on the validation rows
        logit = LogitGMMBase.fit(U_tr, U_val, random_state=seed)
        trunc = TruncatedGMMBase.fit(U_tr.cpu().numpy(), random_state=seed % (2**31))
        rivals: list[BaseMeasure] = [logit, trunc]
        if d > MAX_EXACT_DIM and U_tr.shape[0] >= FLOW_MIN_ROWS and flows_available():
            from .base.flow import FlowBase

            flow = FlowBase.fit(
                U_tr, U_val, random_state=seed, max_steps=flow_steps(d), time_limit=FLOW_TIME_LIMIT
            )
            rivals.append(flow)
        return best_on_validation(rivals, U_val)
    if kind in ("gmm", "truncated_gmm"):
        return TruncatedGMMBase.fit(U_tr.cpu().numpy(), random_state=seed % (2**31))
    if kind == "flow":
        from .base.flow import FlowBase, better_of

        # the flow only where it beats the logit-GMM base on the validation rows
        gmm = LogitGMMBase.fit(U_tr, U_val, random_state=seed)
        return better_of(FlowBase.fit(U_tr, U_val, random_state=seed), gmm, U_val)
    raise ValueError(f"base must be one of {BASES}, got {kind!r}")


def flows_available() -> bool:
    """Whether zuko (``pip install ebmfit[flows]``) can be imported."""
    import importlib.util

    return importlib.util.find_spec("zuko") is not None


def refit_base(base: BaseMeasure, U_all: torch.Tensor, seed: int) -> BaseMeasure:
    """Refit ``base``'s chosen structure on all rows (the flow and the uniform are kept)."""
    if isinstance(base, LogitGMMBase) and getattr(base, "selected", None):
        return base.refit(U_all, random_state=seed)
    if isinstance(base, TruncatedGMMBase):
        return TruncatedGMMBase.fit(U_all.cpu().numpy(), random_state=seed % (2**31))
    return base


def make_negative_phase(
    name: str,
    dim: int,
    base: BaseMeasure,
    U_train: torch.Tensor | None = None,
    is_draws: int = IS_DRAWS,
) -> ShiftedGridNegatives | PersistentChains | ShortRunChains | ImportanceNegatives:
    """The negative-phase strategy called ``name`` (see ``EnergyDensity(negative_phase=...)``).

    ``"auto"`` is ``"exact"`` for d ≤ 3, ``"importance"`` above on a fitted base and
    ``"pcd"`` above on the uniform base.  ``"exact"``: randomly shifted tensor quadrature
    (d ≤ 3 only).  ``"pcd"``: 512 persistent reflected-MALA chains, 5 transitions per step, a
    quarter of them offered a Metropolis restart from the base per step.  ``"cd"``: CD-10,
    512 short-run MALA chains started at data rows.  ``"importance"``: self-normalised
    importance sampling from the base (``is_draws`` per step, default 8192; on a base with
    costly draws, a flow, a pool of ``is_draws`` of which 1/64 is redrawn per step).
    """
    if name == "auto":
        if dim <= MAX_EXACT_DIM:
            name = "exact"
        else:
            name = "pcd" if isinstance(base, Uniform) else "importance"
    if name == "exact":
        if dim > MAX_EXACT_DIM:
            raise ValueError(
                f"negative_phase='exact' (tensor quadrature) is limited to d <= {MAX_EXACT_DIM}, "
                f"got d={dim}; use 'pcd', 'cd' or 'importance'"
            )
        return ShiftedGridNegatives(dim, base=base)
    if name == "pcd":
        return PersistentChains(dim, PCD_CHAINS, "mala", PCD_STEPS, PCD_REINIT, base)
    if name == "cd":
        return ShortRunChains(dim, CD_CHAINS, CD_STEPS, "data", U_train, "mala", base)
    if name == "importance":
        refresh = max(1, is_draws // IS_REFRESH_FRACTION) if base.costly_draws else None
        return ImportanceNegatives(dim, n_samples=is_draws, base=base, refresh=refresh)
    raise ValueError(f"unknown negative_phase {name!r}: use one of {NEGATIVE_PHASES}")


def fit_energy(
    energy: Energy,
    base: BaseMeasure,
    U_tr: torch.Tensor,
    U_val: torch.Tensor,
    *,
    phase: str | Callable[..., Negatives],
    max_iter: int | None,
    lr: float,
    generator: torch.Generator,
    progress: bool = False,
) -> tuple[FitResult, Callable[[], FitResult] | None]:
    """Fit ``energy`` on ``base`` (in place); returns its result and a refit-on-all function.

    Linear energies with ``phase`` ``"auto"``/``"exact"`` are solved by
    :func:`~ebmfit.training.fit_convex` along its penalty path *without* the final refit; the
    returned function refits at the selected penalty: by default on train ∪ validation over
    the same base, or on other rows over another base (cross-fitting, the final refit).  Everything else
    is trained by :func:`~ebmfit.training.fit_sgd` (no refit: early stopping used the
    validation rows).
    """
    d = energy.dim
    rt = current_runtime()
    par = rt.parallel
    progress = progress if par.is_main else False
    if energy.is_linear and phase in ("auto", "exact"):
        it = max_iter or 100
        res = fit_convex(
            energy,
            U_tr,
            U_val,
            max_iter=it,
            refit=False,
            base=base,
            progress=progress,
            parallel=par,
        )
        lam = res.history[res.best_iter]["lambda"]

        def refit(
            base_: BaseMeasure = base,
            U_fit: torch.Tensor = U_tr,
            U_check: torch.Tensor = U_val,
            *,
            on_all: bool = True,
            target: Energy = energy,
        ) -> FitResult:
            """``target`` (default: the fitted energy, in place) at the selected penalty on
            ``U_fit`` over ``base_``, then on ``U_fit`` ∪ ``U_check`` when ``on_all``."""
            return fit_convex(
                target,
                U_fit,
                U_check,
                lambdas=[lam],
                max_iter=it,
                refit=on_all,
                refit_max_iter=10 * it,
                base=base_,
                progress=progress if on_all else False,
                parallel=par,
            )

        return res, refit
    batch = min(1024, U_tr.shape[0])
    # importance draws: 4 per data row in the batch (a small data set needs few), 1024..8192
    draws = min(IS_DRAWS, max(1024, 4 * batch))
    neg = make_negative_phase(phase, d, base, U_tr, draws) if isinstance(phase, str) else phase
    mc = not isinstance(neg, ShiftedGridNegatives)
    res = fit_sgd(
        energy,
        U_tr,
        U_val,
        neg,
        base=base,
        max_iter=max_iter or 2000,
        lr=lr,
        batch_size=1024 if mc else None,
        generator=generator,
        progress=progress,
        # a residual starts at its base (V = 0): validate often, give up sooner if it never
        # improves on it (the base is kept then)
        **({"val_every": 25, "patience": 6} if energy.family == "residual" else {}),
        parallel=par,
        checkpoint=rt.checkpoint.section() if rt.checkpoint is not None else None,
    )
    return res, None
