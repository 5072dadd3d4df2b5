r"""The AIS path: its settings (:class:`AISConfig`, one frozen place) and fixed temperature
schedules (:func:`ais_schedule`).  The adaptive schedule is built in :mod:`~ebmfit.partition.ais`
from a pilot run."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["AISConfig", "ais_schedule"]


@dataclass(frozen=True)
class AISConfig:
    r"""The settings of an AIS path and its transitions (one place; shared by forward, reverse
    and sandwich runs).

    Attributes:
        n_temps: number T of temperature increments (ignored when ``schedule`` is a tensor).
        schedule: ``"adaptive"`` (pilot-estimated thermodynamic length), ``"sigmoid"``,
            ``"geometric"``, ``"linear"`` (:func:`ais_schedule`), or a tensor of temperatures
            from 0 to 1.
        kernel: ``"mala"`` or ``"hmc"`` (reflected, exact on the cube).
        n_steps: transitions per temperature.
        num_integration_steps: leapfrog steps L per HMC transition.
        step_size: fixed :math:`\varepsilon` (a float or one per :math:`\beta_1..\beta_T`);
            ``None`` tunes it with the pilot.
        target_accept: pilot's target mean acceptance (default: the kernel's).
        n_pilot: chains of the pilot run (not used in the estimate).
        chunk: chains processed at once (memory bound).
    """

    n_temps: int = 256
    schedule: str | torch.Tensor = "adaptive"
    kernel: str = "mala"
    n_steps: int = 1
    num_integration_steps: int = 5
    step_size: float | torch.Tensor | None = None
    target_accept: float | None = None
    n_pilot: int = 128
    chunk: int = 8192


def ais_schedule(
    n_temps: int, kind: str = "sigmoid", *, sharpness: float = 4.0, beta_min: float = 1e-4
) -> torch.Tensor:
    r"""Temperatures :math:`0 = \beta_0 < \dots < \beta_T = 1`, shape (T+1,), float64.

    ``kind``:

    * ``"linear"``: :math:`\beta_t = t/T`;
    * ``"geometric"``: :math:`\beta_t = \beta_{\min}^{(T-t)/(T-1)}` for :math:`t \ge 1`;
    * ``"sigmoid"`` (Grosse et al. 2015): :math:`\beta_t \propto \sigma(\delta(2t/T - 1))`
      rescaled to [0, 1], :math:`\delta` = ``sharpness``.

    The pilot-based ``"adaptive"`` schedule of :func:`log_partition_ais` is not a fixed rule
    and is built there.
    """
    T = int(n_temps)
    if T < 1:
        raise ValueError(f"n_temps must be >= 1, got {n_temps}")
    t = torch.arange(T + 1, dtype=torch.float64)
    if kind == "linear":
        b = t / T
    elif kind == "geometric":
        if not 0 < beta_min < 1:
            raise ValueError(f"beta_min must be in (0, 1), got {beta_min}")
        b = torch.zeros(T + 1, dtype=torch.float64)
        if T == 1:
            b[1] = 1.0
        else:
            b[1:] = torch.logspace(math.log10(beta_min), 0.0, T, dtype=torch.float64)
    elif kind == "sigmoid":
        s = torch.sigmoid(sharpness * (2 * t / T - 1))
        b = (s - s[0]) / (s[-1] - s[0])
    else:
        raise ValueError(
            f"unknown schedule {kind!r}; use 'adaptive', 'sigmoid', 'geometric', 'linear' "
            "or a tensor of temperatures"
        )
    b[0], b[-1] = 0.0, 1.0
    return b


def _check_betas(betas: torch.Tensor | list[float]) -> torch.Tensor:
    b = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().reshape(-1)
    if b.numel() < 2 or b[0] != 0 or b[-1] != 1 or not bool((b.diff() > 0).all()):
        raise ValueError("temperatures must be strictly increasing from exactly 0 to exactly 1")
    return b


def _adaptive_betas(grid: np.ndarray, sd: np.ndarray, n_temps: int) -> torch.Tensor:
    """Place ``n_temps`` increments evenly in thermodynamic length ∫ sd(V) dβ on ``grid``."""
    sd = np.nan_to_num(sd, nan=0.0, posinf=0.0)
    floor = 1e-3 * max(float(sd.mean()), 1e-12)  # keeps the length strictly increasing
    seg = np.diff(grid) * (0.5 * (sd[:-1] + sd[1:]) + floor)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(0.0, s[-1], n_temps + 1)
    b = np.interp(targets, s, grid)
    b[0], b[-1] = 0.0, 1.0
    b = np.maximum.accumulate(b)
    if np.any(np.diff(b) <= 0):  # degenerate (e.g. constant V): fall back to linear
        return ais_schedule(n_temps, "linear")
    return torch.as_tensor(b, dtype=torch.float64)
