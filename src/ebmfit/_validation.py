"""Checks of ``EnergyDensity``'s parameters, run by ``fit`` (scikit-learn's convention:
``__init__`` stores its arguments unchanged, ``fit`` validates them).

Every check raises ``ValueError`` (or ``TypeError`` for a wrong type) whose message names the
parameter, the value given and what is allowed — a bad flag is refused before any work, never
turned into a default or a numerical error far downstream.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

__all__ = ["MIN_TRAIN_ROWS", "check_n_samples", "check_params", "resolve_device"]

#: Fewest rows either side of the train/validation split may have.
MIN_TRAIN_ROWS = 5
MIN_VAL_ROWS = 1

LOG_PARTITIONS = ("auto", "quadrature", "qmc", "ais", "importance")


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_positive_int(name: str, v: object, *, minimum: int = 1, allow_none: bool = False) -> None:
    """``v`` is an integer >= ``minimum`` (or None when ``allow_none``)."""
    if v is None and allow_none:
        return
    if not _is_int(v):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")


def check_n_samples(n: object) -> int:
    """``n_samples`` of ``sample``: an integer >= 1 (2.7 is refused, not truncated)."""
    check_positive_int("n_samples", n)
    return int(n)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device for ``device`` (None: CUDA when available, else CPU), refusing a
    device that this machine does not have."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"device={device!r} is not a torch device ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device={device!r} but MPS is not available on this machine")
    elif dev.type not in ("cpu",):
        raise ValueError(f"device={device!r}: only 'cpu', 'cuda[:i]' and 'mps' are supported")
    return dev


def check_params(est: Any, n_rows: int) -> None:
    """Validate the parameters of an ``EnergyDensity`` about to be fitted to ``n_rows`` rows."""
    check_positive_int("max_iter", getattr(est, "max_iter", None), allow_none=True)
    m = getattr(est, "margin", 0.0)
    if not _is_real(m) or not math.isfinite(m) or m < 0:
        raise ValueError(
            f"margin must be a finite number >= 0 (fraction of each column's range added on "
            f"both sides), got {m!r}"
        )
    f = getattr(est, "validation_fraction", 0.2)
    if not _is_real(f) or not 0 < f < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {f!r}")
    n_val = max(1, int(round(f * n_rows)))
    n_train = n_rows - n_val
    if n_train < MIN_TRAIN_ROWS or n_val < MIN_VAL_ROWS:
        raise ValueError(
            f"validation_fraction={f!r} splits {n_rows} rows into {n_train} for training and "
            f"{n_val} for validation; training needs at least {MIN_TRAIN_ROWS} rows (lower "
            "validation_fraction or give more data)"
        )
    lr = getattr(est, "lr", 1e-3)
    if not _is_real(lr) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    lp = getattr(est, "log_partition", "auto")
    if lp not in LOG_PARTITIONS:
        raise ValueError(f"log_partition must be one of {LOG_PARTITIONS}, got {lp!r}")
    if getattr(est, "energy_params", None) is not None and not isinstance(
        getattr(est, "energy_params", None), dict
    ):
        raise TypeError(
            f"energy_params must be a dict or None, got {getattr(est, 'energy_params', None)!r}"
        )
    resolve_device(getattr(est, "device", None))
