r"""Seed §2: the gradient identity, checked on a model.

For the average negative log-likelihood :math:`L(\theta) = \frac1n\sum_i V(x_i;\theta) + \log Z_\theta`,

.. math:: \nabla_\theta L = \mathbb{E}_{\text{data}}[\nabla_\theta V] - \mathbb{E}_{p_\theta}[\nabla_\theta V].

Reference: automatic differentiation of L with :math:`\log Z` by a tensor Gauss–Legendre rule
(rule R1).  The right-hand side is formed with the data term exactly and the model term by

* quadrature with the same rule R1 — the identity itself, to round-off;
* quadrature with an independent finer rule R2 — agreement to the quadrature error;
* self-normalised importance sampling from the base, m points — error compared with its
  delta-method standard error :math:`\sqrt{\sum_k \pi_k^2 (g_k - \hat g)^2}`;
* MALA chains (:mod:`ebmfit.samplers`, when available) — error compared with the Monte Carlo
  standard error from the effective sample size of every gradient component.

Errors are relative, :math:`\|\hat g - \nabla L\| / \|\nabla L\|`, and the stochastic ones are
judged in units of their predicted standard error (a ratio ≲ 2–3 is what statistics allows).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike

from .._rng import as_generator
from ..domain import Box
from ..energies import Energy, MLPEnergy
from ..model import EnergyModel
from ._common import F64, Grid, md_table

__all__ = ["IdentityResult", "identity_study"]


def _per_sample_grads(energy: Energy, U: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """∇_θ V(u_k) for every row, flattened over parameters: shape (m, P), float64."""
    from torch.func import functional_call, grad, vmap

    names = [n for n, p in energy.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in energy.named_parameters() if p.requires_grad}

    def f(p: dict[str, torch.Tensor], u: torch.Tensor) -> torch.Tensor:
        return functional_call(energy, p, (u[None],))[0]

    out = []
    for c in U.split(chunk):
        g = vmap(grad(f), in_dims=(None, 0))(params, c.to(energy.param_dtype()))
        out.append(torch.cat([g[n].reshape(c.shape[0], -1) for n in names], 1).to(F64))
    return torch.cat(out)


def _grad_of(energy: Energy, scalar_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    params = [p for p in energy.parameters() if p.requires_grad]
    gs = torch.autograd.grad(scalar_fn(), params)
    return torch.cat([g.reshape(-1) for g in gs]).to(F64)


@dataclass
class EstimatorRow:
    estimator: str
    n_negatives: int
    rel_error: float
    predicted_rel_se: float  # 0 for deterministic rules
    seconds: float

    @property
    def ratio(self) -> float:
        return self.rel_error / self.predicted_rel_se if self.predicted_rel_se > 0 else math.nan


@dataclass
class IdentityResult:
    n_params: int
    n_data: int
    grad_norm: float
    rows: list[EstimatorRow]
    notes: list[str] = field(default_factory=list)

    def row(self, name: str) -> EstimatorRow:
        return next(r for r in self.rows if r.estimator.startswith(name))

    @property
    def claim_holds(self) -> bool:
        ok = self.row("quadrature, same rule").rel_error < 1e-10
        ok &= self.row("quadrature, finer rule").rel_error < 1e-4
        for r in self.rows:
            if r.predicted_rel_se > 0:
                ok &= r.ratio < 5.0
        return bool(ok)

    def to_markdown(self) -> str:
        rows = [
            [
                r.estimator,
                r.n_negatives,
                r.rel_error,
                r.predicted_rel_se if r.predicted_rel_se > 0 else "—",
                r.ratio if r.predicted_rel_se > 0 else "—",
                r.seconds,
            ]
            for r in self.rows
        ]
        return "\n".join(
            [
                "# The gradient identity (seed §2)",
                "",
                "∇L(θ) = E_data[∇V] − E_model[∇V], checked against automatic differentiation of the "
                f"exact NLL (log Z by quadrature). Model with {self.n_params} parameters, "
                f"{self.n_data} data points, ‖∇L‖ = {self.grad_norm:.4g}.",
                "",
                md_table(
                    [
                        "model term estimated by",
                        "negatives",
                        "relative error",
                        "predicted relative s.e.",
                        "error / s.e.",
                        "s",
                    ],
                    rows,
                ),
                "",
                "The same-rule row is the identity itself (round-off only); stochastic rows are "
                "judged in units of their own standard error.",
                *[f"- {n}" for n in self.notes],
            ]
        )

    def plot(self, path: str | os.PathLike) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 4))
        names = [f"{r.estimator}\n(n={r.n_negatives})" for r in self.rows]
        err = [max(r.rel_error, 1e-17) for r in self.rows]
        ax.bar(range(len(err)), err, color="tab:blue", label="relative error")
        se = [r.predicted_rel_se if r.predicted_rel_se > 0 else np.nan for r in self.rows]
        ax.plot(range(len(se)), se, "r_", markersize=30, mew=3, label="predicted s.e.")
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_ylabel("‖ĝ − ∇L‖ / ‖∇L‖")
        ax.set_title("gradient identity: autograd vs data − model term")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _default_model(seed: int) -> EnergyModel:
    e = MLPEnergy(2, hidden=(16, 16), n_fourier=8, fourier_scale=1.5, seed=seed, dtype=F64)
    with torch.no_grad():
        e.net[-1].weight.mul_(15.0)  # a clearly non-uniform density
    return EnergyModel(e, Box.unit(2))


def identity_study(
    model: EnergyModel | None = None,
    data: ArrayLike | None = None,
    *,
    quick: bool = False,
    random_state: int = 0,
) -> IdentityResult:
    """Check the gradient identity on ``model`` (default: a small random MLP energy on the unit
    square) with ``data`` (default: exact samples of the ``banana`` target), d ≤ 3."""
    g = as_generator(random_state)
    model = model if model is not None else _default_model(random_state)
    d = model.dim
    if d > 3:
        raise ValueError("the exact NLL needs tensor quadrature, d <= 3")
    energy = copy.deepcopy(model.energy_fn).double()
    for p in energy.parameters():
        p.requires_grad_(True)
    if data is None:
        from ..datasets import load_target

        data = load_target("banana").sample(500 if quick else 2000, random_state=random_state)
        if d != 2:
            raise ValueError("default data are 2-D; pass data= for other dimensions")
    U = model.domain.to_unit(torch.as_tensor(np.asarray(data), dtype=F64))
    n_params = sum(p.numel() for p in energy.parameters())
    cells = {1: 256, 2: 32 if quick else 48, 3: 12}[d]
    R1, R2 = Grid(d, cells, 4), Grid(d, int(cells * 1.5), 5)

    def log_z(grid: Grid) -> torch.Tensor:
        return torch.logsumexp(grid.log_w - energy(grid.points), 0)

    g_true = _grad_of(energy, lambda: energy(U).mean() + log_z(R1))
    g_data = _grad_of(energy, lambda: energy(U).mean())
    norm = float(g_true.norm())
    rows = []

    def add(
        name: str,
        n: int,
        g_model: torch.Tensor,
        se_vec: torch.Tensor | None,
        t0: float,
    ) -> None:
        err = float(((g_data - g_model) - g_true).norm()) / norm
        se = float(se_vec.norm()) / norm if se_vec is not None else 0.0
        rows.append(EstimatorRow(name, n, err, se, time.perf_counter() - t0))

    for name, grid in (("quadrature, same rule R1", R1), ("quadrature, finer rule R2", R2)):
        t0 = time.perf_counter()
        with torch.no_grad():
            pi = torch.softmax(grid.log_w - energy(grid.points), 0)
        add(
            name,
            grid.points.shape[0],
            _grad_of(energy, lambda grid=grid, pi=pi: (pi * energy(grid.points)).sum()),
            None,
            t0,
        )
    for m in (1024, 16384) if quick else (1024, 16384, 131072):
        t0 = time.perf_counter()
        pts = model.base.sample(m, generator=g)
        with torch.no_grad():
            pi = torch.softmax(-energy(pts) + model.base.log_prob(pts), 0)
        G = _per_sample_grads(energy, pts)
        gm = pi @ G
        var = (pi[:, None] ** 2 * (G - gm) ** 2).sum(0)
        add("importance sampling (base proposals)", m, gm, var.sqrt(), t0)
    notes = []
    try:
        from ..samplers import run_chains
        from ..samplers.diagnostics import mcse_mean
    except ImportError:  # pragma: no cover - samplers are part of the package
        run_chains = None
        notes.append("MCMC negatives skipped: ebmfit.samplers is not available")
    if run_chains is not None:
        t0 = time.perf_counter()
        n_chains, n_steps = (32, 100) if quick else (64, 400)
        det = copy.deepcopy(energy)
        for p in det.parameters():
            p.requires_grad_(False)
        u0 = model.base.sample(n_chains, generator=g)
        draws, info = run_chains("mala", det, u0, n_steps, g, warmup=100 if quick else 300)
        flat = draws.reshape(-1, d)
        G = _per_sample_grads(energy, flat).reshape(n_chains, n_steps, -1)
        gm = G.mean((0, 1))
        # components with no variance over the draws (e.g. zero gradients) have no MCSE
        se = torch.as_tensor(np.nan_to_num(mcse_mean(G.numpy()), nan=0.0), dtype=F64)
        add(f"MALA chains (accept {info['acceptance_rate']:.2f})", n_chains * n_steps, gm, se, t0)
    return IdentityResult(n_params, U.shape[0], norm, rows, notes)
