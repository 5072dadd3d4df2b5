r"""Scoring the fitted candidates and keeping one: on the validation split, or cross-fitted.

Both paths score every candidate — the base alone included — with an honest log Z, mix each
correction with its base (stacked on the scoring rows when that base is the incumbent, at a
defensive weight otherwise), apply :func:`~ebmfit.selection.choose` and refit the choice on
all rows where that is well defined.  The estimator decides which path runs
(:meth:`ebmfit.EnergyDensity.fit`); see ``docs/selection.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .base import BaseMeasure
from .crossfit import CROSSFIT_FOLDS, crossfit_rows
from .energies import Energy
from .fitting import refit_base
from .partition.result import LogZ
from .selection import (
    DEFENSIVE_MIX,
    MARGIN_SE,
    MARGIN_STACKED,
    MIN_ROWS_OTHER_BASE,
    Selection,
    base_rows,
    best_mix,
    choose,
    defend,
    honest_log_partition,
    mix_with_base,
    mixed_rows,
    row_log_likelihood,
    stack,
    stack_weight,
)
from .training import FitResult

__all__ = ["Choice", "Fitted", "choose_by_crossfit", "choose_on_split"]

#: name → (energy, its base, its fit result or None, its refit function or None).
Fitted = dict[str, tuple[Energy, BaseMeasure, FitResult | None, Callable[..., FitResult] | None]]


class Choice(NamedTuple):
    """The outcome: the selection record, the kept energy and base, its fit result (None for
    the base alone) and its log Z when already known (None: to be computed)."""

    selection: Selection
    energy: Energy
    base: BaseMeasure
    result: FitResult | None
    log_z: LogZ | None


def choose_on_split(
    fitted: Fitted,
    base: BaseMeasure,
    U: torch.Tensor,
    U_tune: torch.Tensor,
    U_sel: torch.Tensor,
    *,
    seed: int,
    generator: torch.Generator,
    log_volume: float,
    force: str | None = None,
) -> Choice:
    """Score every candidate on the scoring rows ``U_sel`` (the second half of the validation
    split; ``U_tune`` the first), choose, refit.  ``force``: keep this candidate as it is
    (``selection="none"``: no mixture with the base; its scores are still recorded)."""
    g_val = generator
    # every candidate on the scoring rows, each with a log Z of its own honest rule, and
    # every correction mixed with its base, (1 - ε) Q_V + ε P (a floor for gaps) —
    # stacked on the scoring rows when P is the incumbent base, at an ε tuned on the
    # tuning rows when it is another base (see ebmfit.selection)
    logz, rows, mix, margins = {}, {}, {}, {}
    for name, (energy, cbase, res, refit) in fitted.items():
        lz = honest_log_partition(energy, cbase, generator=g_val)
        if name != "base" and force is None:
            stacked = cbase is base
            if stacked:
                energy, lz = stack(energy, cbase, U_sel, lz)
            else:
                energy, lz = defend(energy, cbase, U_tune, lz)
            few = U_sel.shape[0] < MIN_ROWS_OTHER_BASE
            margins[name] = MARGIN_STACKED if stacked else math.inf if few else MARGIN_SE
            mix[name] = energy.mix
            fitted[name] = (energy, cbase, res, refit)
        logz[name] = lz
        rows[name] = row_log_likelihood(energy, cbase, U_sel, lz)
    selection = choose(
        rows,
        logz,
        incumbent="base",
        log_volume=log_volume,
        margin_se=margins or MARGIN_SE,
        mix=mix,
        force=force,
    )
    chosen = selection.chosen
    energy, base, res, refit = fitted[chosen]
    lz_known = logz[chosen]
    if chosen == "base":
        base = refit_base(base, U, seed)
    elif refit is not None and chosen not in mix:  # selection="none": refit only
        res, lz_known = refit(), None
    elif refit is not None:  # refit V on train ∪ tuning rows, renormalize and re-mix
        res = refit()
        inner = energy.inner
        lz_inner = honest_log_partition(inner, base, generator=g_val)
        energy, lz_known = mix_with_base(inner, lz_inner, mix[chosen])
    return Choice(selection, energy, base, res, lz_known)


def choose_by_crossfit(
    fitted: Fitted,
    base: BaseMeasure,
    U: torch.Tensor,
    *,
    seed: int,
    generator: torch.Generator,
    log_volume: float,
) -> Choice:
    """Score the base and every convex candidate on all rows ``U`` by cross-fitting
    (:mod:`ebmfit.crossfit`), mix, choose, and refit the choice on all rows."""
    g_val = generator
    cands = {k: (e, b, refit) for k, (e, b, _, refit) in fitted.items() if k != "base"}
    raw, logz = crossfit_rows(cands, base, U, seed=seed, generator=g_val)
    rows, mix, margins = {"base": raw["base"]}, {}, {}
    n = U.shape[0]
    for name, (_, cbase, _) in cands.items():
        if cbase is base:  # stacked with the base it corrects
            own = raw["base"]
            eps = stack_weight(raw[name], own)
            margins[name] = MARGIN_STACKED
        else:  # mixed with its own (fixed) base at the best defensive weight
            own = base_rows(cbase, U)
            eps = best_mix(raw[name], own, DEFENSIVE_MIX)
            margins[name] = math.inf if n < MIN_ROWS_OTHER_BASE else MARGIN_SE
        rows[name] = mixed_rows(raw[name], own, eps)
        mix[name] = eps
    selection = choose(
        rows,
        logz,
        incumbent="base",
        log_volume=log_volume,
        margin_se=margins,
        mix=mix,
        scored_by=f"{CROSSFIT_FOLDS}-fold cross-fitted rows",
    )
    chosen = selection.chosen
    if chosen == "base":
        return Choice(selection, fitted["base"][0], refit_base(base, U, seed), None, None)
    energy, cbase, _, refit = fitted[chosen]
    b = refit_base(base, U, seed) if cbase is base else cbase
    half = U.shape[0] // 2  # refit on all rows (the split only orders the two solves)
    res = refit(b, U[:half], U[half:], on_all=True)
    lz = honest_log_partition(energy, b, generator=g_val)
    energy, lz_known = mix_with_base(energy, lz, mix[chosen])
    return Choice(selection, energy, b, res, lz_known)
