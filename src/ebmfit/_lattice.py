"""Columns recorded on a grid: detection and the warning users get.

Many real tables record a column to a fixed resolution — magnitudes to 0.1, depths to the
kilometre, pixel intensities as integers 0..16 — so its held-out values coincide with its
training values.  A continuous density then scores *higher the spikier it is at the grid
values*, without bound: held-out log-likelihoods of continuous models (ebmfit's, a KDE's, a
flow's) on such columns measure how narrow the spikes are, not how good the density is.
ebmfit fits the continuous density (its base smooths across grid steps); a flow trained long
enough learns the spikes and "wins" (64-D digits: 197 nats/row against 99).

:func:`grid_columns` finds such columns; :class:`~ebmfit.EnergyDensity` records them in
``grid_columns_`` and emits one :class:`GridDataWarning` that names them and says what to do:
compare models on dequantized data, x + U(0, h) per grid column of step h (the standard
practice for discrete data under continuous densities), or treat the column as discrete.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["GridColumn", "GridDataWarning", "grid_columns", "grid_message"]

#: A column is on a grid when it has at most this fraction of the rows as distinct values …
MAX_LEVEL_FRACTION = 0.2
#: … and at least this many rows (below, repeats are not informative).
MIN_ROWS = 50


class GridDataWarning(UserWarning):
    """Some columns take few values on a regular grid: held-out likelihoods reward spikes."""


class GridColumn(NamedTuple):
    """One grid column: its index, number of distinct values and grid step (user units)."""

    column: int
    n_values: int
    step: float


def grid_columns(X: np.ndarray) -> list[GridColumn]:
    """The columns of X (shape (n, d), finite) whose values lie on a grid ``a + k·h``.

    A column qualifies when it has at least two distinct values, at most
    ``MAX_LEVEL_FRACTION · n`` of them (n ≥ ``MIN_ROWS``), and every gap between consecutive
    distinct values is an integer multiple of the smallest gap h (to 10⁻⁶ relative).
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    out: list[GridColumn] = []
    if X.ndim != 2 or n < MIN_ROWS:
        return out
    for j in range(X.shape[1]):
        v = np.unique(X[:, j])
        if v.size < 2 or v.size > MAX_LEVEL_FRACTION * n:
            continue
        gaps = np.diff(v)
        h = float(gaps.min())
        if not h > 0:
            continue
        k = gaps / h
        if np.all(np.abs(k - np.round(k)) <= 1e-6 * np.maximum(k, 1.0)):
            out.append(GridColumn(j, int(v.size), h))
    return out


def grid_message(cols: list[GridColumn], names: list[str] | None = None) -> str:
    """One line naming the grid columns (at most 5 shown) and the remedy."""

    def label(c: GridColumn) -> str:
        name = names[c.column] if names is not None else f"column {c.column}"
        return f"{name} ({c.n_values} values, step {c.step:.3g})"

    shown = ", ".join(label(c) for c in cols[:5]) + (
        f" and {len(cols) - 5} more" if len(cols) > 5 else ""
    )
    return (
        f"{len(cols)} column(s) take few values on a grid: {shown}; held-out log-densities "
        "at grid values reward spikes there, so compare models on dequantized data "
        "(add uniform noise of one grid step to every split)"
    )
