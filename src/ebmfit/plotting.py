"""Plots of fitted densities: a heatmap in 2-D, a curve in 1-D, marginals for d > 2.

All functions take an :class:`~ebmfit.model.EnergyModel` (public API only) and return the
matplotlib figure.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
import numpy as np
import torch

from .model import EnergyModel

__all__ = ["plot_density", "plot_density_comparison"]


def _grid2d(model: EnergyModel, res: int, dims=(0, 1)):
    lo, hi = np.asarray(model.domain.low), np.asarray(model.domain.high)
    g0 = np.linspace(lo[dims[0]], hi[dims[0]], res)
    g1 = np.linspace(lo[dims[1]], hi[dims[1]], res)
    G0, G1 = np.meshgrid(g0, g1, indexing="xy")
    return g0, g1, np.c_[G0.ravel(), G1.ravel()]


def plot_density(
    model: EnergyModel,
    data: np.ndarray | None = None,
    *,
    res: int = 200,
    n_samples: int = 20000,
    seed: int = 0,
    title: str | None = None,
    feature_names: list[str] | None = None,
):
    """Density heatmap with the data on top (d = 2), a curve (d = 1), marginals (d > 2)."""
    d = model.dim
    names = feature_names or [f"x{i}" for i in range(d)]
    if d == 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = np.linspace(model.domain.low[0], model.domain.high[0], 1000)[:, None]
        ax.plot(xs[:, 0], np.exp(model.log_prob(xs)), label="model density")
        if data is not None:
            ax.hist(np.asarray(data)[:, 0], bins=60, density=True, alpha=0.3, label="data")
        ax.set_xlabel(names[0])
        ax.legend()
    elif d == 2:
        fig, ax = plt.subplots(figsize=(6, 5.2))
        g0, g1, pts = _grid2d(model, res)
        dens = np.exp(model.log_prob(pts)).reshape(res, res)
        im = ax.pcolormesh(g0, g1, dens, shading="auto", cmap="viridis")
        fig.colorbar(im, ax=ax, label="density")
        if data is not None:
            data = np.asarray(data)
            ax.scatter(data[:, 0], data[:, 1], s=1, c="w", alpha=0.25, linewidths=0)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_aspect("equal")
    else:
        k = min(d, 6)
        fig, axes = plt.subplots(1, k, figsize=(3 * k, 3))
        S = model.sample(n_samples, generator=torch.Generator().manual_seed(seed))
        for i, ax in enumerate(axes):
            ax.hist(S[:, i], bins=50, density=True, histtype="step", label="model")
            if data is not None:
                ax.hist(np.asarray(data)[:, i], bins=50, density=True, alpha=0.3, label="data")
            ax.set_xlabel(names[i])
        axes[0].legend(fontsize=8)
        fig.suptitle(f"marginals (first {k} of {d} dimensions)")
    if title:
        (fig.axes[0]).set_title(title)
    fig.tight_layout()
    return fig


def plot_density_comparison(
    model: EnergyModel,
    true_log_prob,
    data: np.ndarray | None = None,
    *,
    res: int = 200,
    title: str = "",
):
    """Side by side: the true density, the model density and the data (2-D)."""
    if model.dim != 2:
        raise ValueError("plot_density_comparison is for 2-D models")
    g0, g1, pts = _grid2d(model, res)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (lab, lp) in zip(
        axes, [("target", true_log_prob(pts)), ("ebmfit model", model.log_prob(pts))], strict=True
    ):
        im = ax.pcolormesh(g0, g1, np.exp(lp).reshape(res, res), shading="auto", cmap="viridis")
        fig.colorbar(im, ax=ax)
        ax.set_title(lab)
        ax.set_aspect("equal")
    if data is not None:
        data = np.asarray(data)
        axes[1].scatter(data[:, 0], data[:, 1], s=1, c="w", alpha=0.2, linewidths=0)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
