r"""The fit loop: stochastic maximum likelihood through the gradient identity (seed §2).

Each step minimises the surrogate

.. math:: \ell(\theta) = \frac1{|B|}\sum_{i\in B} V_\theta(x_i) - \sum_k \operatorname{sg}(\pi_k)\,V_\theta(u_k),

whose gradient is exactly :math:`\mathbb{E}_{\text{data}}[\nabla V] - \mathbb{E}_{\pi}[\nabla V]`,
the gradient identity with the negative phase supplied by a strategy from
:mod:`ebmfit.training.negatives`.  The monitored value is the NLL estimate
:math:`\frac1{|B|}\sum V + \log\sum_k w_k e^{-V(u_k)}`.

Validation uses an independent, finer rule (:func:`ebmfit.partition.quadrature` for d ≤ 3,
scrambled Sobol otherwise) and keeps the best state.  A non-finite loss or energy is never
patched: the last good state is restored and the learning rate halved; after ``max_retries``
such events the fit stops with :class:`FitError`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..base import BaseMeasure, Uniform
from ..partition.qmc import log_partition_qmc
from ..partition.quadrature import (
    MAX_DIM,
    default_resolution,
    gauss_legendre_1d,
    grid_log_integrand,
)

__all__ = ["FitError", "FitResult", "fit_sgd", "validation_nll"]


class FitError(RuntimeError):
    """Training diverged and could not be recovered."""


@dataclass
class FitResult:
    n_iter: int
    best_val_nll: float
    best_iter: int
    stop_reason: str
    history: list[dict] = field(default_factory=list)


def check_log_partition(energy, base: BaseMeasure) -> float:
    """log Z by the *checking* rule (single level; independent of every training rule)."""
    d = energy.dim
    if d <= MAX_DIM:
        cells, nodes = default_resolution(d)
        ax, w = gauss_legendre_1d(cells, nodes)
        return float(torch.logsumexp(grid_log_integrand(energy, base, [ax] * d, [w] * d), 0))
    return log_partition_qmc(energy, base, n_points=2**13, n_rep=8, random_state=12345).value


@torch.no_grad()
def mean_energy(energy, U: torch.Tensor, chunk: int = 65536) -> float:
    dt = energy.param_dtype()
    return float(sum(energy(c.to(dt)).double().sum() for c in U.split(chunk)) / U.shape[0])


def validation_nll(energy, U: torch.Tensor, base: BaseMeasure) -> float:
    """Average NLL (on the unit cube) of the rows of U, with log Z from the checking rule."""
    lb = 0.0 if isinstance(base, Uniform) else float(base.log_prob(U).mean())
    return mean_energy(energy, U) + check_log_partition(energy, base) - lb


def fit_sgd(
    energy,
    U_train: torch.Tensor,
    U_val: torch.Tensor,
    negatives,
    *,
    base: BaseMeasure | None = None,
    max_iter: int = 2000,
    lr: float = 2e-3,
    batch_size: int | None = None,
    val_every: int = 50,
    patience: int = 10,
    max_retries: int = 3,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> FitResult:
    """Adam on the gradient-identity surrogate with a linearly decaying learning rate.

    ``U_train``, ``U_val``: data on the unit cube, shapes (n, d) and (n_val, d).
    Returns a :class:`FitResult`; ``energy`` is left at its best-validation state.
    """
    base = base if base is not None else Uniform(energy.dim)
    dev, dt = energy.param_device(), energy.param_dtype()
    U_train = U_train.to(device=dev, dtype=dt)
    n = U_train.shape[0]
    bs = n if batch_size is None or batch_size >= n else int(batch_size)
    opt = torch.optim.Adam(energy.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.02, 1 - t / max_iter))
    best = {
        "val": validation_nll(energy, U_val, base),
        "it": 0,
        "state": copy.deepcopy(energy.state_dict()),
    }
    good_state = (copy.deepcopy(energy.state_dict()), copy.deepcopy(opt.state_dict()))
    history: list[dict] = [{"iter": 0, "val_nll": best["val"]}]
    retries, since_best, reason = 0, 0, "max_iter"
    bar = tqdm(total=max_iter, disable=not progress, desc="fit", leave=False)
    it = 0
    while it < max_iter:
        idx = torch.randint(0, n, (bs,), generator=generator, device=dev) if bs < n else slice(None)
        neg = negatives(energy, generator)
        V_data = energy(U_train[idx])
        V_neg = energy(neg.points.to(dt)).to(torch.float64)
        logits = neg.log_weights - V_neg if neg.self_normalize else neg.log_weights
        log_z_hat = torch.logsumexp(neg.log_weights - V_neg, 0)
        pi = torch.softmax(logits.detach(), 0)
        surrogate = V_data.mean() - (pi * V_neg).sum()
        nll_est = float(V_data.mean().detach()) + float(log_z_hat.detach())
        if not (math.isfinite(nll_est) and torch.isfinite(surrogate)):
            retries += 1
            if retries > max_retries:
                bar.close()
                raise FitError(
                    f"training diverged at iteration {it} (non-finite loss/energies) and did not "
                    f"recover after {max_retries} restarts with smaller learning rates; "
                    f"best validation NLL {best['val']:.4f} at iteration {best['it']}"
                )
            energy.load_state_dict(good_state[0])
            opt.load_state_dict(good_state[1])
            for g in opt.param_groups:
                g["initial_lr"] = g.get("initial_lr", lr) / 2
            sched.base_lrs = [b / 2 for b in sched.base_lrs]
            history.append({"iter": it, "event": "divergence: restored last good state, lr halved"})
            continue
        opt.zero_grad(set_to_none=True)
        surrogate.backward()
        opt.step()
        sched.step()
        it += 1
        bar.update(1)
        if it % val_every == 0 or it == max_iter:
            val = validation_nll(energy, U_val, base)
            history.append(
                {
                    "iter": it,
                    "train_nll_est": nll_est,
                    "val_nll": val,
                    "lr": opt.param_groups[0]["lr"],
                }
            )
            bar.set_postfix(val_nll=f"{val:.4f}")
            if not math.isfinite(val):
                retries += 1
                if retries > max_retries:
                    bar.close()
                    raise FitError(f"validation NLL became non-finite at iteration {it}")
                energy.load_state_dict(good_state[0])
                opt.load_state_dict(good_state[1])
                continue
            good_state = (copy.deepcopy(energy.state_dict()), copy.deepcopy(opt.state_dict()))
            if val < best["val"] - 1e-5:
                best = {"val": val, "it": it, "state": copy.deepcopy(energy.state_dict())}
                since_best = 0
            else:
                since_best += 1
                if since_best >= patience:
                    reason = "early_stopping"
                    break
    bar.close()
    energy.load_state_dict(best["state"])
    return FitResult(it, best["val"], best["it"], reason, history)
