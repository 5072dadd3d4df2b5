r"""Domains: an axis-aligned box :math:`K = \prod_i [a_i, b_i]` and its map to the unit cube.

Every model in ebmfit works internally on the unit cube :math:`[0,1]^d`.  The affine map

.. math:: u = (x - a) / (b - a), \qquad x = a + (b - a)\, u

has constant log-Jacobian :math:`\log |\det \partial u / \partial x| = -\sum_i \log(b_i - a_i)`,
so a density on the cube becomes a density in the user's coordinates by adding that constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = ["Box", "DataError", "reflect_unit"]


class DataError(ValueError):
    """Raised for input data that cannot be used; the message names the rows / columns."""


def _fmt_idx(idx: np.ndarray, limit: int = 10) -> str:
    idx = np.asarray(idx).ravel()
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    more = f" (and {idx.size - limit} more)" if idx.size > limit else ""
    return f"[{shown}]{more}"


@dataclass(frozen=True)
class Box:
    r"""The box :math:`\prod_i [\mathrm{low}_i, \mathrm{high}_i]` in :math:`\mathbb{R}^d`.

    Args:
        low: lower corner, shape (d,).
        high: upper corner, shape (d,), with ``high > low`` component-wise.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __init__(self, low: Sequence[float] | np.ndarray, high: Sequence[float] | np.ndarray):
        lo = np.atleast_1d(np.asarray(low, dtype=np.float64))
        hi = np.atleast_1d(np.asarray(high, dtype=np.float64))
        if lo.ndim != 1 or lo.shape != hi.shape:
            raise ValueError(
                f"low and high must be 1-D of the same length, got {lo.shape}, {hi.shape}"
            )
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError("box bounds must be finite")
        bad = np.flatnonzero(~(hi > lo))
        if bad.size:
            raise ValueError(f"box has high <= low in dimension(s) {_fmt_idx(bad)}")
        object.__setattr__(self, "low", tuple(float(v) for v in lo))
        object.__setattr__(self, "high", tuple(float(v) for v in hi))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def unit(cls, dim: int) -> Box:
        """The unit cube :math:`[0,1]^d`."""
        return cls(np.zeros(dim), np.ones(dim))

    @classmethod
    def from_data(cls, X: np.ndarray, margin: float = 0.05) -> Box:
        r"""The bounding box of ``X`` (shape (n, d)) widened by ``margin`` × range on each side.

        A constant column gets a half-width of ``max(1, |x|)·margin`` so the box is never empty.
        """
        X = np.asarray(X, dtype=np.float64)
        lo, hi = X.min(axis=0), X.max(axis=0)
        width = hi - lo
        pad = np.where(width > 0, margin * width, margin * np.maximum(1.0, np.abs(lo)))
        return cls(lo - pad, hi + pad)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return len(self.low)

    @property
    def width(self) -> np.ndarray:
        return np.asarray(self.high) - np.asarray(self.low)

    @property
    def log_volume(self) -> float:
        r""":math:`\sum_i \log(b_i - a_i)`; the log-density on the cube minus this is the density in x."""
        return float(np.sum(np.log(self.width)))

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: dict) -> Box:
        return cls(d["low"], d["high"])

    # ------------------------------------------------------------------ maps
    def to_unit(self, x: ArrayLike | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Map points of the box (shape (n, d)) to the unit cube; numpy or torch in, same out."""
        if isinstance(x, torch.Tensor):
            lo = torch.as_tensor(self.low, dtype=x.dtype, device=x.device)
            w = torch.as_tensor(self.width, dtype=x.dtype, device=x.device)
            return (x - lo) / w
        return (np.asarray(x, dtype=np.float64) - np.asarray(self.low)) / self.width

    def from_unit(self, u: ArrayLike | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Map points of the unit cube (shape (n, d)) to the box; numpy or torch in, same out."""
        if isinstance(u, torch.Tensor):
            lo = torch.as_tensor(self.low, dtype=u.dtype, device=u.device)
            w = torch.as_tensor(self.width, dtype=u.dtype, device=u.device)
            return lo + w * u
        return np.asarray(self.low) + self.width * np.asarray(u, dtype=np.float64)

    # ------------------------------------------------------------------ validation
    def validate(
        self, X: ArrayLike, *, clip: bool = False, min_rows: int = 1, name: str = "X"
    ) -> np.ndarray:
        """Check a data matrix against the box and return it as float64 of shape (n, d).

        Raises :class:`DataError` naming the offending rows / columns for: wrong number of
        dimensions or columns, too few rows, non-finite values, and rows outside the box
        (unless ``clip=True``, in which case such rows are clipped onto the box faces).
        """
        X = check_matrix(X, name=name, n_features=self.dim, min_rows=min_rows)
        lo, hi = np.asarray(self.low), np.asarray(self.high)
        outside = (X < lo) | (X > hi)
        if outside.any():
            if clip:
                return np.clip(X, lo, hi)
            rows = np.flatnonzero(outside.any(axis=1))
            cols = np.flatnonzero(outside.any(axis=0))
            raise DataError(
                f"{name}: {rows.size} row(s) {_fmt_idx(rows)} lie outside the box "
                f"(column(s) {_fmt_idx(cols)}; low={list(self.low)}, high={list(self.high)}). "
                "Widen the box (low=/high=) or pass clip=True to clip them onto its faces."
            )
        return X


def check_matrix(
    X: ArrayLike, *, name: str = "X", n_features: int | None = None, min_rows: int = 1
) -> np.ndarray:
    """Validate a 2-D numeric array: shape, enough rows, all values finite. Returns float64."""
    try:
        A = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name}: could not convert to a numeric array ({e})") from e
    if A.ndim == 1 and n_features == 1:
        A = A[:, None]
    if A.ndim != 2:
        raise DataError(
            f"{name}: expected a 2-D array of shape (n_samples, n_features), got {A.ndim}-D"
        )
    if n_features is not None and A.shape[1] != n_features:
        raise DataError(f"{name}: expected {n_features} column(s), got {A.shape[1]}")
    if A.shape[0] < min_rows:
        raise DataError(f"{name}: need at least {min_rows} row(s), got {A.shape[0]}")
    bad = ~np.isfinite(A)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        cols = np.flatnonzero(bad.any(axis=0))
        raise DataError(
            f"{name}: {rows.size} row(s) {_fmt_idx(rows)} contain NaN or infinite values "
            f"(column(s) {_fmt_idx(cols)})"
        )
    return A


def reflect_unit(u: torch.Tensor) -> torch.Tensor:
    r"""Reflect points into :math:`[0,1]^d` at the faces (period-2 mirror map).

    :math:`r(u) = 1 - |(u \bmod 2) - 1|`, applied coordinate-wise. It is the identity on the
    cube and an isometry on each reflected piece, which keeps reflected proposals symmetric.
    """
    return 1.0 - torch.abs(torch.remainder(u, 2.0) - 1.0)
