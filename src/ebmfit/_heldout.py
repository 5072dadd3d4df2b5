r"""``EnergyDensity.score``: the mean held-out log-likelihood, finite when the box came from
the data.

The density is zero outside its box, so ``score_samples`` gives −inf there, and it must: that
is the model.  But when ``low``/``high`` were not given the box is an *estimate* of the
support (the training rows' range plus a margin), and in cross-validation a held-out row beyond
its fold's range is an ordinary event (a fresh draw exceeds the sample maximum of n rows with
probability 1/(n+1) per column and side).  Scoring it −inf makes every candidate's mean −inf
and ``GridSearchCV``'s choice arbitrary.

So, for a data-derived box only, ``score`` treats a row outside the box as *censored at the
box*: it is scored at its projection onto the box (the nearest face point), as ``clip=True``
does for training rows.  Rows inside are scored exactly; candidates that put density near the
faces where such rows occur are rewarded, as they should be.  A :class:`CensoredRowsWarning`
says how many rows were censored.  With a box given by the user (``low``/``high``), a row
outside contradicts the stated support and ``score`` stays −inf.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["CensoredRowsWarning", "heldout_score"]


class CensoredRowsWarning(UserWarning):
    """``score`` scored rows outside a data-derived box at their projection onto the box."""


def box_from_data(est: Any) -> bool:
    """Whether ``est``'s box was derived from its training data (no ``low``/``high`` given)."""
    return getattr(est, "low", None) is None and getattr(est, "high", None) is None


def heldout_score(est: Any, X: ArrayLike) -> float:
    """Mean log-likelihood of the rows of X (see the module docstring for rows outside a
    data-derived box)."""
    lp = np.asarray(est.score_samples(X), dtype=np.float64)
    if np.isfinite(lp).all() or not box_from_data(est):
        return float(np.mean(lp))
    A = np.asarray(X, dtype=np.float64)
    if A.ndim == 1:
        A = A.reshape(-1, 1)
    low, high = np.asarray(est.domain_.low), np.asarray(est.domain_.high)
    out = ((A < low) | (A > high)).any(axis=1)
    lp = lp.copy()
    lp[out] = est.model_.log_prob(np.clip(A[out], low, high))
    warnings.warn(
        f"score: {int(out.sum())} of {len(A)} row(s) lie outside the box derived from the "
        "training data; they are scored at the nearest point of the box (censored), not as "
        "-inf. Give low=/high= to make the box part of the model (docs/robustness.md)",
        CensoredRowsWarning,
        stacklevel=3,
    )
    return float(np.mean(lp))
