r"""Stacked density estimation: convex weights over candidate densities, by held-out likelihood.

Given held-out log-densities :math:`R_{ij} = \log q_j(x_i)` of J candidates on n rows (each
row scored by fits that never saw it: out-of-fold rows), the stacking weights maximise

.. math::
    \ell(\alpha) = \frac1n \sum_i \log \sum_j \alpha_j e^{R_{ij}}, \qquad
    \alpha \in \Delta^{J-1},

a concave problem (the EM fixed point is :math:`\alpha_j = \frac1n \sum_i r_{ij}` with
responsibilities :math:`r_{ij} \propto \alpha_j e^{R_{ij}}`; Smyth & Wolpert 1999, "Linearly
combining density estimators via stacking", Machine Learning 36), solved here by L-BFGS on
the softmax parameterisation, much faster than EM where weights tend to 0.
A mixture of normalized densities is a normalized density, so the stack stays exact.

The weights are fitted on the same rows that score them, so :math:`\ell(\hat\alpha)` is
optimistic.  :func:`stack_or_select` therefore compares, by a second cross-validation over
the rows of R (cheap: no candidate is refitted), the two rules "stack the candidates" and
"select the best single candidate", and keeps the stack only where it wins there.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

__all__ = ["stack_loglik", "stack_or_select", "stack_weights"]

#: weights below this (relative to the largest) are dropped and the rest refitted: a stack
#: member costs a refit and its components in every evaluation
PRUNE = 1e-3


def stack_weights(R: np.ndarray, *, max_iter: int = 500, tol: float = 1e-12) -> np.ndarray:
    r"""The maximiser :math:`\hat\alpha`, shape (J,), of :math:`\ell(\alpha)` for R of shape (n, J).

    Columns with a non-finite entry get weight 0 (a candidate that fails a row would make the
    stack fail it).  L-BFGS from the uniform weights (relative tolerance ``tol`` on ℓ); then
    weights below :data:`PRUNE` × the largest are dropped and the rest re-solved.
    """
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] < 1 or R.shape[1] < 1:
        raise ValueError(f"R must have shape (n >= 1, J >= 1), got {R.shape}")
    ok = np.all(np.isfinite(R), axis=0)
    if not ok.any():
        raise ValueError("every candidate has a non-finite held-out log-density")
    alpha = np.zeros(R.shape[1])
    keep = np.flatnonzero(ok)
    a = _solve(R[:, keep], max_iter, tol)
    big = a >= PRUNE * a.max()
    if not big.all():
        keep = keep[big]
        a = _solve(R[:, keep], max_iter, tol)
    alpha[keep] = a
    return alpha / alpha.sum()


def _solve(R: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    r"""Maximise :math:`\ell` over the simplex through :math:`\alpha = \mathrm{softmax}(\theta)`
    by L-BFGS (gradient :math:`\partial\ell/\partial\theta_j = \bar r_j - \alpha_j`, with
    :math:`\bar r_j` the mean responsibility); :math:`\ell` is concave in α and softmax maps
    onto the open simplex, so every stationary point is the maximum (weights at 0 are
    approached as :math:`\theta_j \to -\infty` and then pruned)."""
    j = R.shape[1]
    if j == 1:
        return np.ones(1)
    Rc = R - R.max(axis=1, keepdims=True)  # per-row shift: changes ℓ by a constant only

    def neg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        la = theta - logsumexp(theta)
        lw = Rc + la
        lse = logsumexp(lw, axis=1)
        resp = np.exp(lw - lse[:, None]).mean(axis=0)
        return -float(lse.mean()), -(resp - np.exp(la))

    res = minimize(
        neg,
        np.zeros(j),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-10},
    )
    a = softmax(res.x)
    # an optimum at a vertex is only approached (θ → −∞): never end below the best candidate
    best = int(np.argmax(Rc.mean(axis=0)))
    if float(Rc[:, best].mean()) >= -neg(res.x)[0]:
        a = np.zeros(j)
        a[best] = 1.0
    return a / a.sum()


def stack_loglik(R: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    r""":math:`\log \sum_j \alpha_j e^{R_{ij}}` per row, shape (n,)."""
    with np.errstate(divide="ignore"):
        la = np.log(alpha)
    use = alpha > 0
    return logsumexp(R[:, use] + la[use], axis=1)


def stack_or_select(R: np.ndarray, n_folds: int = 5, seed: int | None = 0) -> dict:
    r"""Whether stacking the columns of R (shape (n, J)) beats selecting the best column.

    Both rules are fitted on ``n_folds`` − 1 folds of R's rows and scored on the held-out
    fold.  Returns ``{"stack": bool, "weights": (J,) array, "gain": float, "gain_se": float}``:
    ``gain`` is the mean per-row held-out log-likelihood of the stack minus that of the
    selection and ``gain_se`` its standard error; ``stack`` is ``gain > 0``; ``weights`` are
    :func:`stack_weights` on all rows when stacking and the one-hot best column otherwise.
    """
    R = np.asarray(R, dtype=np.float64)
    n, j = R.shape
    finite = np.all(np.isfinite(R), axis=0)
    means = np.where(finite, R.mean(axis=0), -np.inf) if n else np.full(j, -np.inf)
    one_hot = np.zeros(j)
    one_hot[int(np.argmax(means))] = 1.0
    out = {"stack": False, "weights": one_hot, "gain": 0.0, "gain_se": 0.0}
    if j < 2 or n < 2 * n_folds or finite.sum() < 2:
        return out
    rng = np.random.default_rng(seed)
    diff = np.empty(n)
    for f in np.array_split(rng.permutation(n), n_folds):
        mask = np.ones(n, dtype=bool)
        mask[f] = False
        tr = R[mask]
        m = np.where(finite, tr.mean(axis=0), -np.inf)
        diff[f] = stack_loglik(R[f], stack_weights(tr)) - R[f, int(np.argmax(m))]
    out["gain"] = float(diff.mean())
    out["gain_se"] = float(diff.std(ddof=1) / np.sqrt(n))
    if out["gain"] > 0:
        out["stack"], out["weights"] = True, stack_weights(R)
    return out
