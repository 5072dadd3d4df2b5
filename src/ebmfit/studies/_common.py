"""Shared helpers of the studies: tensor grids, exact population fits, report writing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..energies import Energy, LinearEnergy
from ..grid import gauss_legendre_1d, tensor_grid, tensor_log_weights
from ..training.convex import minimize_lbfgs

F64 = torch.float64


class Grid:
    """A tensor Gauss–Legendre grid on the unit cube: points (N, d), log-weights (N,)."""

    def __init__(self, dim: int, n_cells: int, n_nodes: int = 4):
        ax, w = gauss_legendre_1d(n_cells, n_nodes)
        self.dim = dim
        self.axes = [ax] * dim
        self.points = tensor_grid(self.axes)
        self.log_w = tensor_log_weights([w] * dim, F64)

    def energy(self, energy: Energy, chunk: int = 65536) -> torch.Tensor:
        with torch.no_grad():
            if isinstance(energy, LinearEnergy):
                return energy.grid_values(self.axes).to(F64)
            dt = energy.param_dtype()
            return torch.cat([energy(c.to(dt)).to(F64) for c in self.points.split(chunk)])


def fit_population(
    energy: LinearEnergy,
    grid: Grid,
    target_logp: torch.Tensor,
    *,
    ridge: float = 1e-9,
    max_iter: int = 500,
) -> float:
    r"""Fit a linear energy by *population* maximum likelihood on a grid, in place.

    Minimises :math:`\mathrm{KL}(Q^\dagger\|Q_\theta)` up to a constant, i.e. the convex
    :math:`\theta^\top \mathbb{E}_{Q^\dagger}[\phi] + \log\sum_g w_g e^{-V_\theta(u_g)}`
    (+ a tiny ridge), where :math:`Q^\dagger` has log-density ``target_logp`` at the grid
    points (−inf allowed): the infinite-sample limit of the fit, so the studies measure
    approximation error, not sampling error.  Returns the final objective.
    """
    pi = torch.softmax(grid.log_w + target_logp, 0)
    m = energy.grid_moments(grid.axes, pi).detach()
    theta = energy.coef.detach().clone().requires_grad_(True)

    def objective() -> torch.Tensor:
        V = energy.grid_values(grid.axes, theta)
        eff = theta * energy.mask
        return (eff * m).sum() + torch.logsumexp(grid.log_w - V, 0) + ridge * (eff**2).sum()

    minimize_lbfgs(
        theta,
        objective,
        max_iter=max_iter,
        history_size=50,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
    )
    with torch.no_grad():
        obj = float(objective())
        if not math.isfinite(obj):
            raise FloatingPointError("population fit produced a non-finite objective")
        energy.coef.copy_(theta * energy.mask)
    return obj


def md_table(header: list[str], rows: list[list]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, bool):
            return "yes" if v else "**no**"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(result: Any, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.md`` (with the figure linked) and ``NAME.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    result.plot(png)
    md = out / f"{name}.md"
    md.write_text(result.to_markdown() + f"\n\n![{name}]({png.name})\n", encoding="utf-8")
    return md, png
