r"""Tensor grids and composite Gauss–Legendre rules on the unit cube (one module for all).

The energies (:meth:`~ebmfit.energies.Energy.grid_values`), the log Z rules
(:mod:`ebmfit.partition.quadrature`), the negative phases and convex fits of
:mod:`ebmfit.training`, the certificates, the studies and the data sets' normalizers all build
their grids here.  A tensor rule on :math:`[0,1]^d` is the product of 1-D rules
:math:`(x^{(i)}_j, w^{(i)}_j)`; its nodes are enumerated in C order (the last axis fastest) and
its log-weights are :math:`\sum_i \log w^{(i)}_{j_i}`, accumulated axis by axis.

This module sits at the bottom of the layers (beside :mod:`ebmfit.domain`): it imports only
numpy and torch.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "gauss_legendre_1d",
    "gauss_legendre_cube",
    "gauss_legendre_nodes",
    "tensor_grid",
    "tensor_log_weights",
]


def gauss_legendre_nodes(
    n_cells: int, n_nodes: int, shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss–Legendre rule on [0, 1] in numpy float64: ``n_cells`` equal cells with
    ``n_nodes`` nodes each; nodes and weights, each shape (n_cells·n_nodes,).

    Exact for polynomials of degree 2·n_nodes − 1 on every cell.  With ``shift`` ≠ 0 every
    node is moved by ``shift`` modulo 1 (weights unchanged): a randomly shifted rule is an
    unbiased estimator of the integral of any function.
    """
    x, w = np.polynomial.legendre.leggauss(int(n_nodes))
    h = 1.0 / n_cells
    left = np.arange(n_cells)[:, None] * h
    nodes = (left + (x[None] + 1) / 2 * h).ravel()
    weights = np.tile(w / 2 * h, n_cells)
    if shift:
        nodes = np.mod(nodes + shift, 1.0)
    return nodes, weights


def gauss_legendre_1d(
    n_cells: int,
    n_nodes: int,
    shift: float = 0.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gauss_legendre_nodes` as tensors of ``dtype`` on ``device``."""
    nodes, weights = gauss_legendre_nodes(n_cells, n_nodes, shift)
    return (
        torch.as_tensor(nodes, dtype=dtype, device=device),
        torch.as_tensor(weights, dtype=dtype, device=device),
    )


def tensor_grid(axes: list[torch.Tensor]) -> torch.Tensor:
    """All points of the grid ``axes[0] × … × axes[d-1]`` in C order, shape (∏ n_i, d)."""
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def tensor_log_weights(
    weights: list[torch.Tensor], dtype: torch.dtype | None = None
) -> torch.Tensor:
    r"""Log-weights :math:`\sum_i \log w^{(i)}_{j_i}` of the tensor rule with 1-D weights
    ``weights[i]`` (shape (n_i,)), in the C order of :func:`tensor_grid`, shape (∏ n_i,).

    Accumulated axis by axis from 0 in ``dtype`` (default: that of ``weights[0]``) on the
    weights' device.
    """
    w0 = weights[0]
    logw = torch.zeros((), dtype=dtype or w0.dtype, device=w0.device)
    for w in weights:
        logw = (logw[..., None] + torch.log(w)).reshape(-1)
    return logw


def gauss_legendre_cube(
    n_nodes: int, dim: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n_nodes``^d Gauss–Legendre rule on one cube [0, 1]^d: nodes (q^d, d) and their
    log-weights (q^d,), float64 (the reference rule mapped onto boxes)."""
    x, w = gauss_legendre_1d(1, n_nodes, device=device)
    return tensor_grid([x] * dim), tensor_log_weights([w] * dim)
