"""Plots of fitted densities: a curve in 1-D, a heatmap in 2-D, a corner plot for d > 2.

All functions take an :class:`~ebmfit.model.EnergyModel` (public API only) and return the
matplotlib figure.  Every 2-D panel is square and spans the box in the box's own units (a box
of 1.4–5.3 min × 40–99 min is drawn as a square, not as an equal-units sliver), with the axes
labelled by the column names.  Memory is bounded in d: a corner plot samples the model
(``EnergyModel.sample``, exact or MCMC, never a table of 2^d box corners) and draws at most
``max_dims`` dimensions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
import numpy as np
import torch

from .model import EnergyModel

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

__all__ = ["plot_density", "plot_density_comparison"]


def _grid2d(
    model: EnergyModel, res: int, dims: tuple[int, int] = (0, 1)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = np.asarray(model.domain.low), np.asarray(model.domain.high)
    g0 = np.linspace(lo[dims[0]], hi[dims[0]], res)
    g1 = np.linspace(lo[dims[1]], hi[dims[1]], res)
    G0, G1 = np.meshgrid(g0, g1, indexing="xy")
    return g0, g1, np.c_[G0.ravel(), G1.ravel()]


def _square(ax: Axes, lo: np.ndarray, hi: np.ndarray, i: int, j: int) -> None:
    """A square panel spanning the box's sides i (x) and j (y) in their own units."""
    ax.set_xlim(lo[i], hi[i])
    ax.set_ylim(lo[j], hi[j])
    ax.set_box_aspect(1)


def _names(feature_names: Sequence[object] | None, d: int) -> list[str]:
    if feature_names is None:
        return [f"x{i}" for i in range(d)]
    names = [str(n) for n in feature_names]
    if len(names) != d:
        raise ValueError(f"{len(names)} feature name(s) for a model with {d} dimension(s)")
    return names


def _check_data(data: ArrayLike | None, d: int) -> np.ndarray | None:
    if data is None:
        return None
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != d:
        raise ValueError(f"data has shape {data.shape}; the model has {d} dimension(s)")
    return data


def plot_density(
    model: EnergyModel,
    data: np.ndarray | None = None,
    *,
    res: int = 200,
    n_samples: int = 20000,
    seed: int = 0,
    title: str | None = None,
    feature_names: list[str] | None = None,
    max_dims: int = 5,
) -> Figure:
    """The model's density with the data on top.

    d = 1: the density curve over a histogram of the data.  d = 2: a heatmap of the density
    on a square panel.  d > 2: a corner plot of the first ``max_dims`` dimensions — pairwise
    2-D histograms of ``n_samples`` model samples below the diagonal with the data as points,
    the model's and the data's 1-D marginals on the diagonal, the data's pairs above it.
    """
    d = model.dim
    names = _names(feature_names, d)
    data = _check_data(data, d)
    lo, hi = np.asarray(model.domain.low), np.asarray(model.domain.high)
    if d == 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = np.linspace(lo[0], hi[0], 1000)[:, None]
        ax.plot(xs[:, 0], np.exp(model.log_prob(xs)), label="model density")
        if data is not None:
            ax.hist(data[:, 0], bins=60, range=(lo[0], hi[0]), density=True, alpha=0.3,
                    label="data")  # fmt: skip
        ax.set_xlim(lo[0], hi[0])
        ax.set_xlabel(names[0])
        ax.set_ylabel("density")
        ax.legend()
    elif d == 2:
        fig, ax = plt.subplots(figsize=(6.2, 5.2))
        g0, g1, pts = _grid2d(model, res)
        dens = np.exp(model.log_prob(pts)).reshape(res, res)
        im = ax.pcolormesh(g0, g1, dens, shading="auto", cmap="viridis")
        fig.colorbar(im, ax=ax, label="density", shrink=0.85)
        if data is not None:
            ax.scatter(data[:, 0], data[:, 1], s=2, c="w", alpha=0.35, linewidths=0)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        _square(ax, lo, hi, 0, 1)
    else:
        fig = _corner(model, data, names, lo, hi, n_samples, seed, max_dims)
    if title:
        if d > 2:
            fig.suptitle(title)
        else:
            fig.axes[0].set_title(title)
    if d <= 2:
        fig.tight_layout()
    return fig


def _corner(
    model: EnergyModel,
    data: np.ndarray | None,
    names: list[str],
    lo: np.ndarray,
    hi: np.ndarray,
    n_samples: int,
    seed: int,
    max_dims: int,
) -> Figure:
    d = model.dim
    k = max(2, min(d, int(max_dims)))
    S = model.sample(n_samples, generator=torch.Generator().manual_seed(seed))
    info = model.last_sample_info
    how = "" if info is None else info.method
    fig, axes = plt.subplots(k, k, figsize=(2.3 * k, 2.3 * k), squeeze=False)
    for i in range(k):  # row: y axis = dimension i
        for j in range(k):  # column: x axis = dimension j
            ax = axes[i, j]
            if i == j:
                bins = np.linspace(lo[j], hi[j], 41)
                ax.hist(S[:, j], bins=bins, density=True, histtype="step", color="C0",
                        label="model")  # fmt: skip
                if data is not None:
                    ax.hist(data[:, j], bins=bins, density=True, alpha=0.3, color="C1",
                            label="data")  # fmt: skip
                ax.set_xlim(lo[j], hi[j])
                ax.set_box_aspect(1)
                ax.set_yticks([])
            elif i > j:
                ax.hist2d(S[:, j], S[:, i], bins=40, range=[[lo[j], hi[j]], [lo[i], hi[i]]],
                          density=True, cmap="viridis")  # fmt: skip
                if data is not None:
                    ax.scatter(data[:, j], data[:, i], s=1, c="w", alpha=0.3, linewidths=0)
                _square(ax, lo, hi, j, i)
            else:
                if data is not None:
                    ax.scatter(data[:, j], data[:, i], s=1, c="C1", alpha=0.3, linewidths=0)
                    _square(ax, lo, hi, j, i)
                else:
                    ax.axis("off")
                    continue
            if i == k - 1:
                ax.set_xlabel(names[j])
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
            elif i != j:
                ax.set_yticklabels([])
    axes[0, 0].legend(fontsize=7, loc="upper right")
    shown = f"first {k} of {d} dimensions" if k < d else f"{d} dimensions"
    fig.suptitle(
        f"corner plot ({shown}): model ({n_samples} {how} samples) below the diagonal, data above",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def plot_density_comparison(
    model: EnergyModel,
    true_log_prob: Callable[[np.ndarray], np.ndarray],
    data: np.ndarray | None = None,
    *,
    res: int = 200,
    title: str = "",
) -> Figure:
    """Side by side: the true density, the model density and the data (2-D), square panels."""
    if model.dim != 2:
        raise ValueError("plot_density_comparison is for 2-D models")
    lo, hi = np.asarray(model.domain.low), np.asarray(model.domain.high)
    g0, g1, pts = _grid2d(model, res)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (lab, lp) in zip(
        axes, [("target", true_log_prob(pts)), ("ebmfit model", model.log_prob(pts))], strict=True
    ):
        im = ax.pcolormesh(g0, g1, np.exp(lp).reshape(res, res), shading="auto", cmap="viridis")
        fig.colorbar(im, ax=ax)
        ax.set_title(lab)
        _square(ax, lo, hi, 0, 1)
    if data is not None:
        data = np.asarray(data)
        axes[1].scatter(data[:, 0], data[:, 1], s=1, c="w", alpha=0.2, linewidths=0)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
