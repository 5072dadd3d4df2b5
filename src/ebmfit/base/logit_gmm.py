r""":class:`LogitGMMBase`: a Gaussian mixture in logit coordinates, exact on the cube.

With :math:`y = \operatorname{logit}(u) = \log\frac{u}{1-u}` coordinate-wise,

.. math::
    p(u) = w_0 + (1 - w_0) \sum_{k=1}^K \pi_k\,
        \mathcal N\big(\operatorname{logit} u;\ \mu_k, \Sigma_k\big)
        \prod_{j=1}^d \frac{1}{u_j (1 - u_j)},
    \qquad u \in (0, 1)^d,

the law of :math:`\operatorname{expit}(Y)`, :math:`Y \sim \sum_k \pi_k \mathcal N(\mu_k,
\Sigma_k)`, mixed with the uniform (weight :math:`w_0`).  It is normalized *exactly* on the cube
(a change of variables, no truncation), has an exact sampler (draw y, map back), and unlike an
axis-aligned mixture it captures correlation (full or tied covariances), skew (the logit
stretches the faces) and data piled near a face.  :math:`w_0 > 0` bounds
:math:`-\log p \le -\log w_0`, which keeps importance weights and residual energies tame.

Covariances are stored as lower Cholesky factors :math:`\Sigma_k = C_k C_k^\top`, shape
(K, d, d), whatever the covariance type they were fitted with.

Numerics: evaluation is float64; u is clamped to :math:`[2^{-53}, 1 - 2^{-53}]` (so
:math:`|y| \le 36.7`) before the logit — the continuous extension of the density to the
closed faces, exact everywhere inside.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import linalg as sla

if TYPE_CHECKING:
    from sklearn.mixture import GaussianMixture

from .._threads import single_threaded
from .measure import BaseMeasure
from .stacking import stack_loglik, stack_or_select

__all__ = ["COVARIANCE_TYPES", "LogitGMMBase", "logit"]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_EPS = 2.0**-53
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
#: EM tolerance (sklearn's ``tol``, on the per-row lower bound) of the structure search on
#: a validation split, and of every final fit (and of the cross-validated search on small
#: data).  On the 64-D table of ``benchmarks/fit_time.py`` (40 000 rows) 1e-2 halves the
#: split search's time and picks the same structure (diamonds, 27 000 training rows: the
#: same structure, test log-likelihood within 0.002); under cross-validation on a few hundred
#: rows it stopped slowly converging mixtures early and under-ranked them (diabetes, 442 rows:
#: 2–4 components instead of 8, −0.38 nats/row on 5 folds), so that search, cheap there, runs
#: at sklearn's default 1e-3.
SEARCH_TOL, FINAL_TOL = 1e-2, 1e-3
_CHUNK_ELEMS = 1 << 22  # rows × components × d per evaluation chunk (bounded memory)


def logit(u: np.ndarray) -> np.ndarray:
    """The clamped logit used by :class:`LogitGMMBase` (numpy or torch, float64)."""
    if isinstance(u, torch.Tensor):
        uc = u.to(torch.float64).clamp(_EPS, 1.0 - _EPS)
        return torch.log(uc) - torch.log1p(-uc)
    uc = np.clip(np.asarray(u, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(uc) - np.log1p(-uc)


def _log_jacobian(u: np.ndarray) -> np.ndarray:
    r""":math:`\log|dy/du| = -\sum_j \log(u_j(1-u_j))` per row (clamped as in :func:`logit`)."""
    uc = np.clip(u, _EPS, 1.0 - _EPS)
    return -np.sum(np.log(uc) + np.log1p(-uc), axis=1)


def _chols_of(gm: GaussianMixture) -> np.ndarray:
    """Lower Cholesky factors (K, d, d) of a fitted ``GaussianMixture``'s covariances."""
    k, d = gm.means_.shape
    cov = gm.covariances_
    if gm.covariance_type == "full":
        return np.linalg.cholesky(cov)
    if gm.covariance_type == "tied":
        return np.broadcast_to(np.linalg.cholesky(cov), (k, d, d)).copy()
    if gm.covariance_type == "diag":
        return np.sqrt(cov)[:, :, None] * np.eye(d)
    return np.sqrt(cov)[:, None, None] * np.eye(d)


class LogitGMMBase(BaseMeasure):
    r"""Gaussian mixture on :math:`\operatorname{logit}(u)`, mixed with the uniform (see module).

    Args:
        weights: :math:`\pi_1..\pi_K`, shape (K,), non-negative (rescaled to sum to
            :math:`1 - w_0`).
        means: :math:`\mu`, shape (K, d), in logit coordinates.
        chols: lower Cholesky factors of :math:`\Sigma_k`, shape (K, d, d), positive diagonal.
        uniform_weight: :math:`w_0 \in [0, 1)`.
        covariance_type: how the covariances were constrained when fitted (informational).

    Attributes:
        fit_info: after :meth:`fit`, every configuration tried and its validation score.
    """

    def __init__(
        self,
        weights: ArrayLike,
        means: ArrayLike,
        chols: ArrayLike,
        uniform_weight: float = 0.0,
        covariance_type: str = "full",
    ) -> None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        m = np.atleast_2d(np.asarray(means, dtype=np.float64))
        c = np.asarray(chols, dtype=np.float64)
        k, d = m.shape
        if w.size != k or c.shape != (k, d, d):
            raise ValueError(
                f"weights (K,), means (K, d) and chols (K, d, d) disagree: {w.shape}, "
                f"{m.shape}, {c.shape}"
            )
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(m)) and np.all(np.isfinite(c))):
            raise ValueError("weights, means and chols must be finite")
        if np.any(w < 0) or not w.sum() > 0:
            raise ValueError("weights must be non-negative with a positive sum")
        diag = np.diagonal(c, axis1=1, axis2=2)
        if not np.all(diag > 0):
            raise ValueError("chols must have a positive diagonal (Cholesky factors)")
        if np.any(np.triu(c, 1) != 0):
            raise ValueError("chols must be lower triangular")
        w0 = float(uniform_weight)
        if not 0.0 <= w0 < 1.0:
            raise ValueError(f"uniform_weight must be in [0, 1), got {uniform_weight}")
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}")
        self.dim = int(d)
        self.covariance_type = covariance_type
        self.uniform_weight = w0
        self.weights = w / w.sum() * (1.0 - w0)
        self.means = m
        self.chols = c
        # inverse factors: z = C^{-1} (y - mu) is standard normal under component k
        eye = np.eye(d)
        self._inv = np.stack([sla.solve_triangular(ck, eye, lower=True) for ck in c])
        with np.errstate(divide="ignore"):
            self._logw = np.log(self.weights) - np.log(diag).sum(1) - d * _LOG_SQRT_2PI
        self._cache: dict = {}
        self.fit_info: list[dict] = []
        self.selected: dict = {}

    @property
    def n_components(self) -> int:
        return int(self.weights.size)

    # ------------------------------------------------------------------ density
    def _tensors(self, device: torch.device | str | None):
        key = str(device)
        if key not in self._cache:
            t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
            self._cache[key] = (t(self.means), t(self._inv), t(self._logw), t(self.chols))
        return self._cache[key]

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        r"""Exact :math:`\log p(u)`, shape (n,) for u of shape (n, d); −inf outside the cube.

        Computed in float64 (returned in u's floating dtype), differentiable in u.
        """
        out_dt = u.dtype if u.dtype.is_floating_point else torch.float64
        uu = u.to(torch.float64)
        m, inv, logw, _ = self._tensors(u.device)
        flat = uu.reshape(-1, self.dim)
        rows = max(1, _CHUNK_ELEMS // max(1, self.n_components * self.dim))
        parts = []
        for c in flat.split(rows):
            uc = c.clamp(_EPS, 1.0 - _EPS)
            y = torch.log(uc) - torch.log1p(-uc)
            log_jac = -(torch.log(uc) + torch.log1p(-uc)).sum(-1)
            z = torch.einsum("nkj,kij->nki", y[:, None, :] - m, inv)  # (n, K, d)
            lg = torch.logsumexp(logw - 0.5 * (z * z).sum(-1), -1) + log_jac
            if self.uniform_weight > 0:
                lg = torch.logaddexp(lg, torch.full_like(lg, math.log(self.uniform_weight)))
            parts.append(lg)
        out = (torch.cat(parts) if parts else flat.new_zeros(0)).reshape(uu.shape[:-1])
        inside = ((uu >= 0) & (uu <= 1)).all(dim=-1)
        out = torch.where(inside, out, torch.full_like(out, -torch.inf))
        return out.to(out_dt)

    # ------------------------------------------------------------------ sampling
    def _draw(self, n: int, generator: torch.Generator | None, gdev: torch.device) -> torch.Tensor:
        """A component per row (the last one uniform), then sigmoid(m_k + L_k ε); in the closed
        cube."""
        m, _, _, chol = self._tensors(gdev)
        probs = torch.as_tensor(
            np.append(self.weights, self.uniform_weight), dtype=torch.float64, device=gdev
        )
        comp = torch.multinomial(probs, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64, device=gdev)
        flat = torch.rand(n, self.dim, generator=generator, dtype=torch.float64, device=gdev)
        u = flat  # rows of the uniform component keep their uniform draw
        for k in range(self.n_components):  # one matrix product per component
            rows = comp == k
            if rows.any():
                u[rows] = torch.sigmoid(m[k] + eps[rows] @ chol[k].T)
        return u

    # ------------------------------------------------------------------ fitting
    @classmethod
    def from_mixture(
        cls,
        gm: GaussianMixture | list[tuple[float, GaussianMixture]],
        uniform_weight: float = 0.0,
    ) -> LogitGMMBase:
        r"""Wrap a ``sklearn.mixture.GaussianMixture`` fitted on logit coordinates, or a stack
        of them: ``[(alpha_j, mixture_j), ...]`` is :math:`\sum_j \alpha_j` mixture_j, one
        mixture with every member's components (covariance type ``"full"`` where the members'
        types differ)."""
        if not isinstance(gm, list):
            gm = [(1.0, gm)]
        types = {g.covariance_type for _, g in gm}
        return cls(
            np.concatenate([a * g.weights_ for a, g in gm]),
            np.concatenate([g.means_ for _, g in gm]),
            np.concatenate([_chols_of(g) for _, g in gm]),
            uniform_weight=uniform_weight,
            covariance_type=types.pop() if len(types) == 1 else "full",
        )

    @classmethod
    @single_threaded
    def fit(
        cls,
        U: ArrayLike | torch.Tensor,
        U_val: ArrayLike | torch.Tensor | None = None,
        *,
        covariance_types: tuple[str, ...] = ("full", "tied", "diag"),
        max_components: int = 32,
        reg_grid: tuple[float, ...] = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1),
        uniform_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 5e-2),
        max_fit_rows: int = 10_000,
        max_em_iter: int = 100,
        search_tol: float | None = None,
        cv_max_rows: int = 4000,
        n_folds: int = 5,
        stacked: bool = True,
        random_state: int | None = 0,
    ) -> LogitGMMBase:
        r"""Fit to unit-cube data ``U`` (shape (n, d)); select on ``U_val`` when given.

        With validation rows (the estimator's held-out split) every choice is made by the
        validation log-likelihood, the quantity the user is judged on:

        1. the covariance regularisation :math:`\epsilon` (added to every diagonal, in units
           of the median variance of the logit coordinates; ``reg_grid``) for one full
           Gaussian — this is what keeps d ≫ n/K well-posed;
        2. for each covariance type, the number of components K on 1, 2, 3, 4, 6, 8, 12, …
           up to ``max_components`` (and at most n/(d+1)), stopping after two steps without
           improvement;
        3. :math:`\epsilon` again for the best (type, K), by a line search along
           ``reg_grid`` from step 1's value, each way while the score improves;
        3b. under cross-validation (small data, below) and with ``stacked``: every
           configuration scored is a candidate for a *stack* (:mod:`.stacking`): convex
           weights maximising the mean out-of-fold log-likelihood of their mixture.  A
           second cross-validation over the out-of-fold rows compares "stack" with "keep the
           best one", and the stack is kept only where it wins there; it is then one mixture
           with every member's components (members fitted on the training rows, weights
           :math:`\alpha_j \pi_{jk}`), as exact as any, recorded in ``selected["stack"]``;
        4. the uniform weight :math:`w_0` on ``uniform_grid``, scored with the kept mixture
           on the validation rows (with cross-validation: with the out-of-fold fits, or the
           stack of them), so ``selected["val_loglik"]`` is the kept base's mean validation
           log-density (for a stack, with weights fitted on those same rows: optimistic by
           about the second cross-validation's ``selected["stack"]["gain"]`` at most).

        The search's EM runs stop at ``search_tol``; by default (``None``) at
        :data:`SEARCH_TOL` on a validation split (it only ranks configurations, each scored
        on many rows) and at :data:`FINAL_TOL` under cross-validation, where a loose
        tolerance under-ranks slowly converging mixtures and the fits are cheap.

        With at most ``cv_max_rows`` rows in all, every configuration is scored instead by
        ``n_folds``-fold cross-validation over train ∪ validation (out-of-fold rows: a single
        small validation split is too noisy to choose K and ε), and the chosen one is then
        fitted on the training rows at :data:`FINAL_TOL`.  Otherwise candidates are fitted on
        at most ``max_fit_rows`` training rows; the chosen one is then refitted on all of them
        from its own parameters at :data:`FINAL_TOL`.  Without ``U_val`` the choice is by
        BIC on the training rows (full covariances, smallest ε, :math:`w_0 = 10^{-3}`).
        Every configuration tried is recorded in ``fit_info``.
        """
        from sklearn.mixture import GaussianMixture

        U = _as_numpy(U)
        if U.ndim != 2 or U.shape[0] < 2:
            raise ValueError(f"U must have shape (n >= 2, d), got {U.shape}")
        if not np.all((U >= 0) & (U <= 1)):
            raise ValueError("U must lie in the unit cube (map the data with Box.to_unit)")
        for t in covariance_types:
            if t not in COVARIANCE_TYPES:
                raise ValueError(f"unknown covariance type {t!r}: use {COVARIANCE_TYPES}")
        n, d = U.shape
        Y = logit(U)
        rng = np.random.default_rng(random_state)
        Y_fit = Y if n <= max_fit_rows else Y[rng.choice(n, max_fit_rows, replace=False)]
        scale = float(np.median(np.var(Y, axis=0))) or 1.0
        k_cap = max(1, min(int(max_components), Y_fit.shape[0] // (d + 1), Y_fit.shape[0] // 2))
        seed = None if random_state is None else int(random_state) % (2**31)
        info: list[dict] = []
        if search_tol is not None and not float(search_tol) >= 0:  # NaN too
            raise ValueError(f"search_tol must be a number >= 0 or None, got {search_tol!r}")
        tol_search = SEARCH_TOL if search_tol is None else float(search_tol)

        def fit_one(
            k: int,
            cov: str,
            reg: float,
            Y_: np.ndarray = Y_fit,
            tol: float | None = None,
            **init: Any,
        ):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning: the score decides
                return GaussianMixture(
                    n_components=k,
                    covariance_type=cov,
                    reg_covar=reg * scale,
                    max_iter=max_em_iter,
                    tol=tol_search if tol is None else tol,
                    random_state=seed,
                    init_params=init.pop("init_params", "kmeans"),
                    **init,
                ).fit(Y_)

        if U_val is None:
            best, best_bic = None, math.inf
            for k in _k_path(k_cap):
                gm = fit_one(k, "full", reg_grid[0])
                bic = gm.bic(Y_fit)
                info.append({"covariance_type": "full", "n_components": k, "bic": bic})
                if bic < best_bic:
                    best, best_bic = gm, bic
            best = _refit(fit_one, best, Y, reg_grid[0])
            base = cls.from_mixture(best, uniform_weight=1e-3)
            base.fit_info = info
            return base

        V = _as_numpy(U_val)
        Yv = logit(V)
        pool = np.concatenate([U, V])
        use_cv = pool.shape[0] <= cv_max_rows and pool.shape[0] >= 2 * n_folds
        if use_cv and search_tol is None:
            tol_search = FINAL_TOL
        if use_cv:  # small data: K-fold CV over train ∪ validation, out-of-fold rows
            Yp = logit(pool)
            folds = np.array_split(rng.permutation(pool.shape[0]), n_folds)
            k_cap = max(1, min(k_cap, (pool.shape[0] - folds[0].size) // (d + 1)))
            # log|dy/du| of the scored rows: the same for every configuration
            log_jac = _log_jacobian(pool)
        else:
            log_jac = _log_jacobian(V)

        tried: dict = {}

        def rows_of(k: int, cov: str, reg: float):
            """Held-out log g(y) per scored row (validation rows, or out-of-fold rows)."""
            if not use_cv:
                gm = fit_one(k, cov, reg)
                return gm.score_samples(Yv), gm
            out = np.empty(pool.shape[0])
            for f in folds:
                mask = np.ones(pool.shape[0], dtype=bool)
                mask[f] = False
                out[f] = fit_one(k, cov, reg, Y_=Yp[mask]).score_samples(Yp[f])
            return out, None

        def score(k: int, cov: str, reg: float):
            if (k, cov, reg) in tried:
                return tried[k, cov, reg][:2]
            try:
                r, gm = rows_of(k, cov, reg)
                s = float(np.mean(r))
            except (ValueError, np.linalg.LinAlgError):  # ill-posed at this reg: skip
                r, gm, s = None, None, -math.inf
            s = s if math.isfinite(s) else -math.inf
            info.append({"covariance_type": cov, "n_components": k, "reg": reg, "val": s})
            tried[k, cov, reg] = (s, gm, r)
            return s, gm

        # 1. regularisation for one full Gaussian
        best = max(((*score(1, "full", r), r) for r in reg_grid), key=lambda t: t[0])
        reg0 = best[2]
        best = (best[0], best[1], "full", 1, reg0)
        # 2. components for each covariance type
        for cov in covariance_types:
            misses, local = 0, -math.inf
            for k in _k_path(k_cap):
                s, gm = score(k, cov, reg0)
                if s > best[0]:
                    best = (s, gm, cov, k, reg0)
                if s > local:
                    local, misses = s, 0
                else:
                    misses += 1
                    if misses >= 2:
                        break
        # 3. regularisation again at the chosen structure (more components may want less): a
        # line search along the grid from ε₀, each way while the score improves
        _, _, cov, k, _ = best
        i0 = reg_grid.index(reg0)
        for step in (-1, 1):
            i = i0 + step
            while 0 <= i < len(reg_grid):
                s, gm = score(k, cov, reg_grid[i])
                if s <= best[0]:
                    break
                best, i = (s, gm, cov, k, reg_grid[i]), i + step
        if not math.isfinite(best[0]):
            raise ValueError("no Gaussian mixture could be fitted to these data")
        gm = best[1]
        stack: dict | None = None
        if use_cv and stacked:  # 3b. stack the configurations where that beats selecting one
            keys = [key for key, v in tried.items() if v[2] is not None and math.isfinite(v[0])]
            R = np.stack([tried[key][2] for key in keys], axis=1)
            verdict = stack_or_select(R, n_folds=n_folds, seed=seed)
            if verdict["stack"]:
                stack = {
                    "members": [
                        {"n_components": k_, "covariance_type": c_, "reg": r_, "weight": float(a)}
                        for (k_, c_, r_), a in zip(keys, verdict["weights"], strict=True)
                        if a > 0
                    ],
                    "gain": verdict["gain"],
                    "gain_se": verdict["gain_se"],
                }
                held = stack_loglik(R, verdict["weights"])
            info.append(
                {"stack": verdict["stack"], "gain": verdict["gain"], "se": verdict["gain_se"]}
            )
        if stack is not None:  # every member on the training rows, with the stacking weights
            gm = [
                (
                    m["weight"],
                    fit_one(m["n_components"], m["covariance_type"], m["reg"], tol=FINAL_TOL),
                )
                for m in stack["members"]
            ]
        elif gm is None:  # chosen by cross-validation: fit it on the training rows
            gm = fit_one(best[3], best[2], best[4], tol=FINAL_TOL)
        else:  # on all training rows at the final tolerance, from its own parameters
            gm = _refit(fit_one, gm, Y, reg=best[4])
        # 4. the uniform weight, by the held-out likelihood of the full density on the cube:
        # of the kept mixture itself on the validation rows (it never saw them), of the
        # search's out-of-fold fits under cross-validation (the kept one saw every row)
        if stack is None:
            held = tried[best[3], best[2], best[4]][2] if use_cv else gm.score_samples(Yv)
        lg = np.clip(held + log_jac, -1e300, None)  # log of the mixture part on the cube
        w_best, s_best = uniform_grid[0], -math.inf
        for w0 in uniform_grid:
            s = float(np.mean(np.logaddexp(np.log1p(-w0) + lg, math.log(w0))))
            info.append({"uniform_weight": w0, "val_cube": s})
            if s > s_best:
                w_best, s_best = w0, s
        base = cls.from_mixture(gm, uniform_weight=w_best)
        base.fit_info = info
        base.selected = {
            "covariance_type": best[2],
            "n_components": best[3],
            "reg": best[4],
            "uniform_weight": w_best,
            "val_loglik": s_best,
            "reg_scale": scale,
            "max_em_iter": max_em_iter,
            "search_tol": tol_search,
            "scored_by": f"{n_folds}-fold CV on {pool.shape[0]} rows"
            if use_cv
            else "validation rows",
        }
        if stack is not None:
            base.selected["stack"] = stack
        return base

    @single_threaded
    def refit(self, U: ArrayLike | torch.Tensor, *, random_state: int | None = 0) -> LogitGMMBase:
        """The structure chosen by :meth:`fit` (type, K, ε, :math:`w_0`; every member of a stack,
        with its stacking weight) refitted on ``U``."""
        from sklearn.mixture import GaussianMixture

        cfg = getattr(self, "selected", None)
        if not cfg:
            raise ValueError("refit needs a base fitted with validation rows (fit(U, U_val))")
        Y = logit(_as_numpy(U))
        members = cfg.get("stack", {}).get("members") or [dict(cfg, weight=1.0)]
        fitted = []
        for m in members:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm = GaussianMixture(
                    n_components=m["n_components"],
                    covariance_type=m["covariance_type"],
                    reg_covar=m["reg"] * cfg["reg_scale"],
                    max_iter=cfg["max_em_iter"],
                    random_state=None if random_state is None else int(random_state) % (2**31),
                ).fit(Y)
            fitted.append((m["weight"], gm))
        base = type(self).from_mixture(fitted, uniform_weight=cfg["uniform_weight"])
        base.fit_info, base.selected = self.fit_info, dict(cfg, refit_rows=int(Y.shape[0]))
        return base

    def _log_prob_numpy(self, U: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.log_prob(torch.as_tensor(U, dtype=torch.float64)).numpy()

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "kind": "logit_gmm",
            "dim": self.dim,
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            "uniform_weight": self.uniform_weight,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        w = self.weights / (1.0 - self.uniform_weight)
        return {
            "weights": torch.as_tensor(w),
            "means": torch.as_tensor(self.means),
            "chols": torch.as_tensor(self.chols),
        }

    @classmethod
    def from_parts(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> LogitGMMBase:
        """Rebuild from :meth:`to_dict` and :meth:`tensors` (shapes checked against the spec)."""
        k, d = int(spec["n_components"]), int(spec["dim"])
        want = {"weights": (k,), "means": (k, d), "chols": (k, d, d)}
        for name, shape in want.items():
            if name not in tensors:
                raise ValueError(f"logit_gmm base: tensor {name!r} missing")
            if tuple(tensors[name].shape) != shape:
                raise ValueError(
                    f"logit_gmm base: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                    f"expected {shape}"
                )
        return cls(
            tensors["weights"].double().numpy(),
            tensors["means"].double().numpy(),
            tensors["chols"].double().numpy(),
            uniform_weight=float(spec.get("uniform_weight", 0.0)),
            covariance_type=str(spec.get("covariance_type", "full")),
        )

    def __repr__(self) -> str:
        return (
            f"LogitGMMBase(dim={self.dim}, n_components={self.n_components}, "
            f"covariance_type={self.covariance_type!r}, uniform_weight={self.uniform_weight:g})"
        )


def _k_path(k_cap: int) -> list[int]:
    ks = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    return [k for k in ks if k <= k_cap] or [1]


def _refit(fit_one: Callable[..., GaussianMixture], gm: GaussianMixture, Y: np.ndarray, reg: float):
    """Refit a mixture chosen by the search on all rows ``Y`` at the final EM tolerance,
    started from its own parameters (a few EM steps where the search already saw them all)."""
    init = {
        "weights_init": gm.weights_,
        "means_init": gm.means_,
        "precisions_init": gm.precisions_,
    }
    try:
        return fit_one(gm.n_components, gm.covariance_type, reg, Y_=Y, tol=FINAL_TOL, **init)
    except (ValueError, np.linalg.LinAlgError):
        return gm


def _as_numpy(U: ArrayLike | torch.Tensor) -> np.ndarray:
    if isinstance(U, torch.Tensor):
        U = U.detach().cpu().numpy()
    return np.asarray(U, dtype=np.float64)
