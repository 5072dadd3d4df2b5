r"""Penalised maximum likelihood for linear energies: a convex problem solved to its optimum.

For :math:`V_\theta = \theta^\top\phi` the objective

.. math:: J_\lambda(\theta) = \theta^\top\bar\phi_{\text{data}}
   + \log \sum_g w_g\, e^{-\theta^\top \phi(u_g)} + \lambda R(\theta)

is convex (log-sum-exp of linear functions plus a PSD quadratic); its gradient
:math:`\bar\phi_{\text{data}} - \mathbb{E}_{\pi}[\phi] + \lambda\nabla R` is the gradient
identity with the exact (quadrature) negative phase.  The data enter only through the mean
feature vector, so each iteration costs one tensor-grid evaluation (mode products).

It is solved by L-BFGS in preconditioned coordinates :math:`\theta = \theta_0 + (s\odot\eta)
\times_1 Q \cdots \times_d Q`, where Q diagonalises the roughness penalty per axis (identity for
the Legendre and cosine penalties, the Demmler–Reinsch basis for the spline difference penalty)
and :math:`s_j^{-2}` is the diagonal of the Hessian in those coordinates,
:math:`\mathrm{Var}_\pi(\tilde\phi_j) + \lambda \tilde R_{jj}` (two adjoint mode products).  The penalty λ is chosen on a decreasing log-spaced path with warm starts, by the
validation NLL under the independent checking rule; the final model is refitted on all data at
that λ.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..base import BaseMeasure, Uniform
from ..energies.base import LinearEnergy
from ..grid import gauss_legendre_1d, tensor_grid, tensor_log_weights
from ._progress import nll_offset, progress_bar
from .fit import FitResult, validation_nll
from .parallel import ParallelContext

__all__ = ["fit_convex", "minimize_lbfgs", "training_rule"]


def training_rule(energy: LinearEnergy) -> tuple[int, int]:
    """(n_cells, n_nodes) of the fixed training quadrature for a linear energy."""
    per_axis = {1: 1024, 2: 192, 3: 72}.get(energy.dim, 16)
    return per_axis // 4, 4


def _objective(
    energy: LinearEnergy,
    coef: torch.Tensor,
    phi_bar: torch.Tensor,
    axes: list[torch.Tensor],
    logw: torch.Tensor,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    log_z = torch.logsumexp(logw - energy.grid_values(axes, coef), 0)
    nll = (energy.effective_coef(coef) * phi_bar).sum() + log_z
    return nll + lam * energy.roughness(coef), nll


def _mode_product(T: torch.Tensor, Q: torch.Tensor | None) -> torch.Tensor:
    if Q is None:
        return T
    for i in range(T.dim()):
        T = torch.tensordot(Q, T, dims=([1], [i])).movedim(0, i)
    return T


def minimize_lbfgs(
    param: torch.Tensor,
    objective: Callable[[], torch.Tensor],
    *,
    max_iter: int,
    history_size: int = 30,
    tolerance_grad: float = 1e-8,
    tolerance_change: float = 1e-11,
) -> int:
    """Minimise the scalar ``objective()`` over the leaf tensor ``param`` (``requires_grad``),
    in place, by one ``step`` of L-BFGS with unit learning rate and a strong-Wolfe line search;
    returns the number of L-BFGS iterations taken.  The defaults are the convex fit's."""
    opt = torch.optim.LBFGS(
        [param],
        lr=1,
        max_iter=max_iter,
        history_size=history_size,
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        obj = objective()
        obj.backward()
        return obj

    opt.step(closure)
    return int(opt.state[param].get("n_iter", 0))


def _solve(
    energy: LinearEnergy,
    phi_bar: torch.Tensor,
    axes: list[torch.Tensor],
    logw: torch.Tensor,
    lam: float,
    max_iter: int,
) -> tuple[float, int, float]:
    """Minimise J_λ from the current coefficients; returns (train NLL, iterations)."""
    theta0 = energy.coef.detach().clone()
    Q, pen_diag = energy.penalty_transform()
    with torch.no_grad():
        pi = torch.softmax(logw - energy.grid_values(axes, theta0), 0)
        m2 = energy.grid_moments(axes, pi, power=2, transform=Q)
        m1 = energy.grid_moments(axes, pi, transform=Q)
        h = (m2 - m1**2).clamp_min(0) + lam * pen_diag
    mask = energy.mask if Q is None else torch.ones_like(energy.mask)
    scale = h.clamp_min(1e-12).rsqrt() * mask
    eta = torch.zeros_like(theta0, requires_grad=True)

    def objective() -> torch.Tensor:
        obj, _ = _objective(
            energy, theta0 + _mode_product(scale * eta, Q), phi_bar, axes, logw, lam
        )
        return obj

    n_iter = minimize_lbfgs(eta, objective, max_iter=max_iter)
    theta = (theta0 + _mode_product(scale * eta, Q)).detach().requires_grad_(True)
    obj, nll = _objective(energy, theta, phi_bar, axes, logw, lam)
    if not torch.isfinite(obj):
        raise FloatingPointError(f"convex fit produced a non-finite objective at lambda={lam:g}")
    (grad,) = torch.autograd.grad(obj, theta)
    with torch.no_grad():
        energy.coef.copy_(theta)
    return float(nll.detach()), n_iter, float((grad * energy.mask).abs().max())


def _mean_features(
    energy: LinearEnergy, U: torch.Tensor, par: ParallelContext | None
) -> torch.Tensor:
    """The mean feature vector of the rows of U, summed over the ranks' shares of U."""
    if par is None or par.world_size == 1:
        return energy.mean_features(U)
    s, e = par.share(U.shape[0])
    local = energy.mean_features(U[s:e]) * (e - s) if e > s else torch.zeros_like(energy.coef)
    return par.all_reduce_sum(local) / U.shape[0]


def fit_convex(
    energy: LinearEnergy,
    U_train: torch.Tensor,
    U_val: torch.Tensor,
    *,
    lambdas: list[float] | None = None,
    max_iter: int = 100,
    patience: int = 2,
    refit: bool = True,
    refit_max_iter: int = 1000,
    base: BaseMeasure | None = None,
    progress: bool = False,
    parallel: ParallelContext | None = None,
) -> FitResult:
    r"""Fit a :class:`~ebmfit.energies.LinearEnergy` along a penalty path.

    With a base P other than the uniform one, the quadrature weights become
    :math:`w_g\,p(u_g)` and V learns a correction of P (penalised towards it).

    ``U_train``/``U_val``: unit-cube data, shapes (n, d), (n_val, d).  ``energy`` ends at the
    selected penalty, refitted on train ∪ val when ``refit`` and solved to tight tolerance
    (up to ``refit_max_iter`` iterations; along the path ``max_iter`` suffices to rank the
    penalties).  History rows hold ``lambda``, ``train_nll``, ``val_nll`` (checking rule),
    ``iters`` and ``grad_max`` (max |∇J_λ| at the end: the optimality check of each solve).

    ``parallel``: the ranks this fit runs on (every rank passes the same rows).  The data
    enter only through the mean feature vector: each rank sums the features of its share of
    the rows and one all-reduce gives every rank the same vector; the solve on the grid is
    then the same deterministic computation on every rank.
    """
    if not energy.is_linear:
        raise TypeError("fit_convex needs a linear energy (legendre, cosine, spline)")
    lambdas = list(lambdas) if lambdas is not None else list(np.logspace(1, -9, 21))
    d = energy.dim
    dev, dt = energy.coef.device, energy.coef.dtype
    cells, nodes = training_rule(energy)
    ax, w = gauss_legendre_1d(cells, nodes, dtype=dt, device=dev)
    axes = [ax] * d
    logw = tensor_log_weights([w] * d, dt)
    base = base if base is not None else Uniform(d)
    if not isinstance(base, Uniform):
        pts = tensor_grid(axes)
        logw = logw + torch.cat([base.log_prob(c) for c in pts.split(65536)]).to(logw)
    U_train, U_val = U_train.to(dev), U_val.to(dev)
    phi_tr = _mean_features(energy, U_train, parallel)
    history: list[dict] = []
    best_val, best_lam, best_coef, best_idx = math.inf, lambdas[0], None, 0
    since_best, total_iter = 0, 0
    bar = progress_bar(progress, iterable=lambdas, desc="penalty path")
    off = nll_offset(progress)
    for lam in bar:
        nll, k, gmax = _solve(energy, phi_tr, axes, logw, lam, max_iter)
        total_iter += k
        val = validation_nll(energy, U_val, base)
        history.append(
            {"lambda": float(lam), "train_nll": nll, "val_nll": val, "iters": k, "grad_max": gmax}
        )
        bar.set_postfix(lam=f"{lam:.1e}", val_nll=f"{val + off:.4f}")
        if val < best_val - 1e-6:
            best_val, best_lam, best_idx = val, lam, len(history) - 1
            best_coef = energy.coef.detach().clone()
            since_best = 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    bar.close()
    if best_coef is None:
        raise FloatingPointError("convex fit: the validation NLL was never finite")
    with torch.no_grad():
        energy.coef.copy_(best_coef)
    if refit:
        phi_all = _mean_features(energy, torch.cat([U_train, U_val]), parallel)
        nll, k, gmax = _solve(energy, phi_all, axes, logw, best_lam, refit_max_iter)
        total_iter += k
        history.append(
            {"lambda": float(best_lam), "refit_all_nll": nll, "iters": k, "grad_max": gmax}
        )
    with torch.no_grad():  # the constant direction is absorbed by log Z: centre for tidiness
        if energy.family == "spline":
            energy.coef.sub_(energy.coef.mean())
    return FitResult(total_iter, best_val, best_idx, f"selected lambda={best_lam:.3g}", history)
