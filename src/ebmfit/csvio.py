"""Reading and writing numeric CSV files with errors that name rows and columns."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .domain import DataError

__all__ = ["read_csv", "write_csv"]


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_csv(path, delimiter: str | None = None) -> tuple[np.ndarray, list[str] | None]:
    """Read a numeric table. A first row that is not all numbers is taken as the header.

    Returns ``(X, column_names or None)``; raises :class:`DataError` naming the line and column
    of any cell that is not a number, and of rows with the wrong number of cells.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text = path.read_text()
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t ").delimiter
        except csv.Error:
            delimiter = ","
    rows = [
        (i + 1, r)
        for i, r in enumerate(csv.reader(text.splitlines(), delimiter=delimiter))
        if r and any(c.strip() for c in r)
    ]
    if not rows:
        raise DataError(f"{path}: the file has no data rows")
    header = None
    if not all(_is_float(c) for c in rows[0][1]):
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: the file has a header but no data rows")
    width = len(header) if header else len(rows[0][1])
    X = np.empty((len(rows), width))
    for k, (line, r) in enumerate(rows):
        if len(r) != width:
            raise DataError(f"{path}: line {line} has {len(r)} cells, expected {width}")
        for j, c in enumerate(r):
            try:
                X[k, j] = float(c)
            except ValueError:
                col = header[j] if header else str(j)
                raise DataError(
                    f"{path}: line {line}, column {col!r}: {c!r} is not a number"
                ) from None
    return X, header


def write_csv(path, X: np.ndarray, header: list[str] | None = None) -> None:
    """Write a 2-D array (or a 1-D one as a single column) as CSV with full float precision."""
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        for row in X:
            w.writerow([repr(float(v)) for v in row])
