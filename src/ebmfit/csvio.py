"""Reading and writing numeric CSV files with errors that name rows and columns.

The reader decides what the first row is without guessing: a row of names (no cell is a
number) is the header, a row of numbers is data, and a row that mixes both is refused with the
cells named (a typo in the first data row must not silently become the header).  A header of
numbers cannot be told from data by looking at it: ``header=True`` says so, and
``expected_names`` (a model's feature names) recognises it when it repeats them.  A UTF-8 byte
order mark is dropped, and lines whose first non-blank character is ``#`` are comments (line
numbers in messages still count them).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from .domain import DataError

__all__ = ["align_columns", "read_csv", "write_csv"]


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "save the file as UTF-8 CSV"
        ) from None


def read_csv(
    path: str | os.PathLike,
    delimiter: str | None = None,
    *,
    header: bool | None = None,
    expected_names: list[str] | None = None,
) -> tuple[np.ndarray, list[str] | None]:
    """Read a numeric table; returns ``(X, column_names or None)``.

    ``header``: ``True`` (the first row names the columns, even if it looks numeric),
    ``False`` (every row is data) or ``None`` (decide: a first row without any number is the
    header, one of numbers is data — or the header when it equals ``expected_names`` —, and a
    mix is an error naming the cells).  Raises :class:`DataError` naming the line and column of
    any cell that is not a number, and of rows with the wrong number of cells.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file" + (" (a folder)" if path.is_dir() else ""))
    text = _read_text(path)
    lines = [
        ("" if ln.lstrip().startswith("#") else ln) for ln in text.splitlines()
    ]  # comments become blank lines: line numbers stay right
    if delimiter is None:
        sample = "\n".join(ln for ln in lines if ln.strip())[:4096]
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t ").delimiter
        except csv.Error:
            delimiter = ","
    rows = [
        (i + 1, r)
        for i, r in enumerate(csv.reader(lines, delimiter=delimiter))
        if r and any(c.strip() for c in r)
    ]
    if not rows:
        raise DataError(f"{path}: the file has no data rows")
    first_line, first = rows[0]
    names = None
    cells = [c.strip() for c in first]
    numeric = [_is_float(c) for c in cells]
    if header is None:
        if expected_names is not None and cells == [str(n) for n in expected_names]:
            header = True
        elif all(numeric):
            header = False
        elif not any(numeric):
            header = True
        else:
            num = [f"{c!r}" for c, ok in zip(cells, numeric, strict=True) if ok][:3]
            txt = [f"{c!r}" for c, ok in zip(cells, numeric, strict=True) if not ok][:3]
            raise DataError(
                f"{path}: line {first_line} mixes numbers ({', '.join(num)}) and text "
                f"({', '.join(txt)}): a header must name every column and a data row must be "
                "all numbers (fix the cell, or say --header / --no-header)"
            )
    if header:
        names = cells
        if any(not c for c in names):
            j = names.index("")
            raise DataError(f"{path}: line {first_line}: header column {j} has no name")
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise DataError(f"{path}: line {first_line}: duplicate column name(s) {dup}")
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: the file has a header but no data rows")
    width = len(names) if names else len(rows[0][1])
    X = np.empty((len(rows), width))
    for k, (line, r) in enumerate(rows):
        if len(r) != width:
            raise DataError(f"{path}: line {line} has {len(r)} cells, expected {width}")
        for j, c in enumerate(r):
            try:
                X[k, j] = float(c)
            except ValueError:
                col = names[j] if names else str(j)
                raise DataError(
                    f"{path}: line {line}, column {col!r}: {c!r} is not a number"
                ) from None
    return X, names


def align_columns(
    X: np.ndarray, header: list[str] | None, names: list[str] | None, source: str = "X"
) -> np.ndarray:
    """Reorder the columns of ``X`` (named ``header``) into the order of ``names``.

    Columns are matched by name when both are known (the order in the file does not matter);
    a name missing from, or unknown to, the model is an error that lists them.  Without names
    on either side the columns are taken by position.
    """
    if header is None or names is None:
        return X
    names = [str(n) for n in names]
    missing = [n for n in names if n not in header]
    extra = [h for h in header if h not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unknown column(s) {extra}")
        raise DataError(f"{source}: {'; '.join(parts)} — the model's columns are {names}")
    return X[:, [header.index(n) for n in names]]


def write_csv(
    path: str | os.PathLike | TextIO, X: np.ndarray, header: list[str] | None = None
) -> None:
    """Write a 2-D array (or a 1-D one as a single column) as CSV with full float precision.

    ``path`` may be ``"-"`` (standard output) or an open text file.
    """
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    if header is not None and len(header) != X.shape[1]:
        raise ValueError(f"{len(header)} column name(s) for {X.shape[1]} column(s)")
    if hasattr(path, "write"):
        _write_rows(path, X, header)
    elif str(path) == "-":
        buf = io.StringIO()
        _write_rows(buf, X, header)
        sys.stdout.write(buf.getvalue())
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            _write_rows(f, X, header)


def _write_rows(f: TextIO, X: np.ndarray, header: list[str] | None) -> None:
    w = csv.writer(f, lineterminator="\n")
    if header:
        w.writerow(header)
    for row in X:
        w.writerow([repr(float(v)) for v in row])
