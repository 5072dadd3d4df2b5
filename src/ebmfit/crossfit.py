r"""Cross-fitted validation scores: every row scored by models that never saw it.

The selection of :class:`~ebmfit.EnergyDensity` compares candidates through paired differences
of held-out log-likelihoods.  On a split of 10 % of the rows the standard error of such a
difference is often larger than the gain to be detected: on the 2-D banana target with 5 000
rows, the spline's gain over the logit-GMM base (≈ 0.01 nats/row, half the KL) was +0.002 ±
0.007 on 500 scoring rows, and the base was kept.  Cross-fitting scores *all* n rows instead.

For K folds :math:`I_1, \dots, I_K` of the rows and each fold k:

1. the incumbent base's chosen structure (type, components, regularisation, uniform weight)
   is refitted on the other folds, :math:`\hat P_{-k}`;
2. each convex candidate is refitted on the other folds at its selected penalty λ (warm
   started from its fit), over :math:`\hat P_{-k}` when it corrects the incumbent base and
   over its own fixed base otherwise, and normalized by its honest rule;
3. the rows of :math:`I_k` are scored by each of these models (the fold models' quadrature
   skips its adaptive check: these scores only rank candidates; the kept model is checked).

The hyperparameters themselves (the base's structure, each λ) were chosen once, on the usual
split, so the scores carry a little optimism — the same for every candidate and the base.
Each candidate's log Z error enters the mean of the rows as
:math:`\sqrt{\sum_k (n_k/n)^2\,\mathrm{SE}_k^2}`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch

from .base import BaseMeasure
from .energies import Energy
from .fitting import refit_base
from .partition.result import LogZ
from .selection import base_rows, honest_log_partition, row_log_likelihood

__all__ = ["CROSSFIT_FOLDS", "CROSSFIT_MAX_DIM", "CROSSFIT_MAX_ROWS", "crossfit_rows"]

#: Folds of the cross-fitted scores.
CROSSFIT_FOLDS = 5
#: In 3-D a spline's tensor-grid solves make K refits cost minutes (10 rows: 270 of 360 s of
#: the fit on a loaded 2-core machine); there the validation split decides.
CROSSFIT_MAX_DIM = 2
#: Above this many rows the validation split alone has enough scoring rows (≥ 2 000), and
#: K refits of the base would cost more than they tell.
CROSSFIT_MAX_ROWS = 20_000

#: ``(energy, its base, its refit function)`` of one convex candidate (see
#: :func:`~ebmfit.fitting.fit_energy`).
Candidate = tuple[Energy, BaseMeasure, Callable[..., object]]


def crossfit_rows(
    candidates: dict[str, Candidate],
    base: BaseMeasure,
    U: torch.Tensor,
    *,
    seed: int,
    generator: torch.Generator,
    n_folds: int = CROSSFIT_FOLDS,
) -> tuple[dict[str, np.ndarray], dict[str, LogZ]]:
    r"""Out-of-fold log-likelihoods on the cube of the base and of every candidate.

    Args:
        candidates: name → (energy, its base, refit function); a candidate whose base *is*
            ``base`` is refitted over the base refitted on each fold.
        base: the incumbent base (fitted on the training split, its structure chosen).
        U: all rows on the unit cube, shape (n, d).
        seed: for the folds and the base refits.
        generator: for the log Z rules that sample (importance, AIS).

    Returns:
        ``rows[name]`` of shape (n,) (``"base"`` included), each row's log-density on the cube
        under the models fitted without its fold; ``logz[name]``: the mean over folds of log Z
        with the pooled error of the mean row (:math:`\sqrt{\sum_k (n_k/n)^2 SE_k^2}`).
    """
    n = U.shape[0]
    if n < 2 * n_folds:
        raise ValueError(f"cross-fitting {n_folds} folds needs >= {2 * n_folds} rows, got {n}")
    folds = np.array_split(np.random.default_rng(seed).permutation(n), n_folds)
    rows = {"base": np.empty(n), **{k: np.empty(n) for k in candidates}}
    acc: dict[str, list[LogZ]] = {k: [] for k in candidates}
    weights = []
    for f in folds:
        mask = torch.ones(n, dtype=torch.bool, device=U.device)
        idx = torch.as_tensor(f, device=U.device)
        mask[idx] = False
        U_in, U_out = U[mask], U[idx]
        base_k = refit_base(base, U_in, seed)
        rows["base"][f] = base_rows(base_k, U_out)
        weights.append(f.size / n)
        for name, (energy, cbase, refit) in candidates.items():
            b = base_k if cbase is base else cbase
            e = copy.deepcopy(energy)  # warm start at the candidate's own fit
            refit(b, U_in, U_out, on_all=False, target=e)
            lz = honest_log_partition(e, b, generator=generator, check=False)
            rows[name][f] = row_log_likelihood(e, b, U_out, lz)
            acc[name].append(lz)
    w = np.asarray(weights)
    logz = {"base": LogZ(0.0, 0.0, "exact", 0, "none")}
    for name, lzs in acc.items():
        se = math.sqrt(float(np.sum((w * np.array([z.stderr for z in lzs])) ** 2)))
        logz[name] = LogZ(
            float(np.mean([z.value for z in lzs])),
            se,
            f"{lzs[0].method} ({n_folds} folds)",
            int(sum(z.n_evals for z in lzs)),
            lzs[0].bias,
        )
    return rows, logz
