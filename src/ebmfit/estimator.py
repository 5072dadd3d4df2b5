r"""EnergyDensity: a scikit-learn density estimator with normalized log-densities.

Fits :math:`p(x) = e^{-V_\theta(u)}/(Z_\theta\,|K|)` on a box K (u = x mapped to the unit cube)
by maximum likelihood through the gradient identity, and reports ``score_samples`` as
*normalized* log-densities in the user's coordinates, with ``log_partition_`` carrying the
error of log Z.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .domain import Box, DataError, check_matrix
from .energies import FAMILIES, CosineEnergy, Energy, LegendreEnergy, MLPEnergy, SplineEnergy
from .model import EnergyModel
from .partition.quadrature import MAX_DIM
from .training import ImportanceNegatives, ShiftedGridNegatives, fit_convex, fit_sgd

__all__ = ["EnergyDensity", "default_energy"]

MIN_SAMPLES = 10


def default_energy(family: str, dim: int, params: dict | None = None) -> Energy:
    """Build an energy of ``family`` for dimension ``dim`` with robust default sizes."""
    params = dict(params or {})
    if family == "auto":
        family = "spline" if dim <= MAX_DIM else "mlp"
    if family == "spline":
        params.setdefault("n_basis", {1: 64, 2: 48, 3: 20}.get(dim, 8))
        return SplineEnergy(dim, **params)
    if family == "legendre":
        params.setdefault("degree", {1: 40, 2: 24, 3: 12}.get(dim, 4))
        return LegendreEnergy(dim, **params)
    if family == "cosine":
        params.setdefault("n_freq", {1: 64, 2: 40, 3: 16}.get(dim, 4))
        return CosineEnergy(dim, **params)
    if family == "mlp":
        return MLPEnergy(dim, **params)
    raise ValueError(
        f"unknown energy {family!r}: use 'auto', one of {sorted(set(FAMILIES) - {'quadratic'})}, "
        "or pass an Energy instance"
    )


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class EnergyDensity(DensityMixin, BaseEstimator):
    """Energy-based density estimator on a box (scikit-learn API).

    Parameters
    ----------
    energy : {"auto", "spline", "legendre", "cosine", "mlp"} or Energy, default="auto"
        The family of V. ``"auto"`` is a cubic B-spline (log-spline) energy fitted to the
        global optimum of a convex penalised likelihood when d ≤ 3, and a Fourier-feature MLP
        above.  An :class:`~ebmfit.energies.Energy` instance is used as given (copied).
    energy_params : dict, optional
        Keyword arguments of the family (e.g. ``{"n_basis": 64}``, ``{"hidden": (64, 64)}``).
    low, high : float or array-like of shape (d,), optional
        The box. Default: the data's bounding box widened by ``margin`` × range on each side.
    margin : float, default=0.05
    clip : bool, default=False
        Clip rows outside the box onto its faces instead of raising.
    validation_fraction : float, default=0.2
        Held out for choosing the penalty (linear energies) or early stopping (MLP).
    max_iter : int, optional
        L-BFGS iterations per penalty value (linear) or Adam steps (MLP; default 2000).
    lr : float, default=2e-3
        Adam learning rate (MLP).
    log_partition : {"auto", "quadrature", "qmc"}, default="auto"
        The rule that computes ``log_partition_`` after fitting (independent of training).
    random_state : int, RandomState or None
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    verbose : bool, default=False
        Show a progress bar with the validation NLL.

    Attributes
    ----------
    model_ : EnergyModel
    domain_ : Box
    energy_ : Energy
    log_partition_ : LogZ
        log Z (on the unit cube) with its error estimate, method and cost.
    n_iter_ : int
    history_ : list of dict
    n_features_in_ : int
    fit_time_ : float
    """

    def __init__(
        self,
        energy="auto",
        *,
        energy_params=None,
        low=None,
        high=None,
        margin=0.05,
        clip=False,
        validation_fraction=0.2,
        max_iter=None,
        lr=2e-3,
        log_partition="auto",
        random_state=None,
        device=None,
        verbose=False,
    ):
        self.energy = energy
        self.energy_params = energy_params
        self.low = low
        self.high = high
        self.margin = margin
        self.clip = clip
        self.validation_fraction = validation_fraction
        self.max_iter = max_iter
        self.lr = lr
        self.log_partition = log_partition
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers
    def _make_box(self, X: np.ndarray) -> Box:
        d = X.shape[1]
        if self.low is None and self.high is None:
            const = np.flatnonzero(np.ptp(X, axis=0) == 0)
            if const.size:
                raise DataError(
                    f"X: column(s) {const.tolist()} are constant; a density on them is degenerate "
                    "(drop them, or give low=/high= explicitly)"
                )
            return Box.from_data(X, self.margin)
        if self.low is None or self.high is None:
            raise ValueError("give both low and high, or neither (bounds from the data)")
        low = np.broadcast_to(np.asarray(self.low, dtype=np.float64), (d,))
        high = np.broadcast_to(np.asarray(self.high, dtype=np.float64), (d,))
        return Box(low, high)

    def _check_X(self, X, *, reset: bool) -> np.ndarray:
        # scikit-learn's validation first (sparse, complex, object, empty input; feature names),
        # then ours, which names the rows and columns holding NaN / inf
        X = validate_data(
            self, X, reset=reset, dtype=np.float64, ensure_all_finite=False, accept_sparse=False
        )
        if reset:
            X = check_matrix(X, name="X", min_rows=1)
            if X.shape[0] < MIN_SAMPLES:
                raise DataError(
                    f"X: need at least {MIN_SAMPLES} samples to fit a density, got "
                    f"n_samples = {X.shape[0]}"
                )
            self.n_features_in_ = X.shape[1]
        else:
            X = check_matrix(X, name="X", n_features=self.n_features_in_)
        return X

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None):
        """Fit the density to X of shape (n_samples, n_features). Returns self."""
        t0 = time.perf_counter()
        X = self._check_X(X, reset=True)
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction}"
            )
        box = self._make_box(X)
        X = box.validate(X, clip=self.clip)
        d = X.shape[1]
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(0, 2**31 - 1))
        device = _resolve_device(self.device)
        gen = torch.Generator(device=device).manual_seed(seed)
        if isinstance(self.energy, Energy):
            energy = self._copy_energy(self.energy)
        else:
            params = dict(self.energy_params or {})
            if self.energy in ("mlp",) or (self.energy == "auto" and d > MAX_DIM):
                params.setdefault("seed", seed)
            energy = default_energy(self.energy, d, params)
        if energy.dim != d:
            raise ValueError(f"energy has dim {energy.dim} but X has {d} columns")
        energy = energy.to(device)
        U = torch.as_tensor(box.to_unit(X), device=device)
        perm = torch.as_tensor(rng.permutation(X.shape[0]), device=device)
        n_val = max(1, int(round(self.validation_fraction * X.shape[0])))
        U_val, U_tr = U[perm[:n_val]], U[perm[n_val:]]
        if energy.is_linear:
            res = fit_convex(
                energy, U_tr, U_val, max_iter=self.max_iter or 300, progress=self.verbose
            )
        else:
            neg = ShiftedGridNegatives(d) if d <= MAX_DIM else ImportanceNegatives(d)
            res = fit_sgd(
                energy,
                U_tr,
                U_val,
                neg,
                max_iter=self.max_iter or 2000,
                lr=self.lr,
                generator=gen,
                progress=self.verbose,
            )
        energy.eval()
        self.energy_ = energy
        self.domain_ = box
        self.model_ = EnergyModel(energy, box)
        method = self.log_partition
        kwargs = (
            {"random_state": seed} if method == "qmc" or (method == "auto" and d > MAX_DIM) else {}
        )
        self.log_partition_ = self.model_.log_partition(method=method, **kwargs)
        self.n_iter_ = res.n_iter
        self.history_ = res.history
        self.stop_reason_ = res.stop_reason
        self.fit_time_ = time.perf_counter() - t0
        return self

    @staticmethod
    def _copy_energy(energy: Energy) -> Energy:
        import copy

        return copy.deepcopy(energy)

    # ------------------------------------------------------------------ inference
    def score_samples(self, X) -> np.ndarray:
        """Normalized log-density of each row of X (shape (n,)), in X's coordinates.

        Rows outside the box get −inf (the density is zero there).
        """
        check_is_fitted(self, "model_")
        X = self._check_X(X, reset=False)
        return self.model_.log_prob(X)

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of the rows of X."""
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples: int = 1, random_state=None) -> np.ndarray:
        """Exact samples from the fitted density, shape (n_samples, n_features)."""
        check_is_fitted(self, "model_")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        rng = check_random_state(random_state)
        gen = torch.Generator(device=self.energy_.param_device()).manual_seed(
            int(rng.randint(0, 2**31 - 1))
        )
        return self.model_.sample(int(n_samples), generator=gen)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the fitted model to ``path`` (safetensors + JSON header; see :mod:`ebmfit.io`)."""
        from .io import save_model

        check_is_fitted(self, "model_")
        extra = {
            "n_features_in": int(self.n_features_in_),
            "n_iter": int(self.n_iter_),
            "fit_time": float(self.fit_time_),
            "stop_reason": str(self.stop_reason_),
        }
        if hasattr(self, "feature_names_in_"):
            extra["feature_names"] = [str(c) for c in self.feature_names_in_]
        save_model(self.model_, path, extra=extra)

    @classmethod
    def load(cls, path) -> EnergyDensity:
        """Load a model written by :meth:`save` (or the CLI) as a fitted estimator."""
        from .io import load_model_with_extra

        model, extra = load_model_with_extra(path)
        est = cls(energy=model.energy_fn.family)
        est.model_ = model
        est.energy_ = model.energy_fn
        est.domain_ = model.domain
        est.log_partition_ = model.log_partition_
        est.n_features_in_ = model.dim
        est.n_iter_ = int(extra.get("n_iter", 0))
        est.history_ = []
        est.stop_reason_ = extra.get("stop_reason", "loaded")
        est.fit_time_ = float(extra.get("fit_time", math.nan))
        if "feature_names" in extra:
            est.feature_names_in_ = np.asarray(extra["feature_names"], dtype=object)
        return est
