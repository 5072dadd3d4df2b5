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

from ._validation import check_n_samples, check_params
from .base import TruncatedGMMBase, Uniform
from .domain import Box, DataError, check_matrix
from .energies import FAMILIES, CosineEnergy, Energy, LegendreEnergy, MLPEnergy, SplineEnergy
from .model import EnergyModel
from .partition.quadrature import MAX_DIM
from .training import (
    ImportanceNegatives,
    PersistentChains,
    ShiftedGridNegatives,
    ShortRunChains,
    fit_convex,
    fit_sgd,
)

__all__ = ["NEGATIVE_PHASES", "EnergyDensity", "default_energy", "make_negative_phase"]

MIN_SAMPLES = 10

#: Names accepted by ``EnergyDensity(negative_phase=...)``.
NEGATIVE_PHASES = ("auto", "exact", "pcd", "cd", "importance")

#: Default persistent-chain and short-run settings above d = 3 (see :func:`make_negative_phase`).
PCD_CHAINS, PCD_STEPS, PCD_REINIT = 512, 5, 0.25
CD_CHAINS, CD_STEPS = 512, 10


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
        if dim > MAX_DIM:
            # frequencies ~ N(0, s²) per axis have norm ≈ s√d: keep the norm at the 2-D value
            params.setdefault("fourier_scale", 3.0 * math.sqrt(2.0 / dim))
        return MLPEnergy(dim, **params)
    raise ValueError(
        f"unknown energy {family!r}: use 'auto', one of {sorted(set(FAMILIES) - {'quadratic'})}, "
        "or pass an Energy instance"
    )


def make_negative_phase(name: str, dim: int, base, U_train: torch.Tensor | None = None):
    """The negative-phase strategy called ``name`` (see ``EnergyDensity(negative_phase=...)``).

    ``"auto"`` is ``"exact"`` for d ≤ 3 and ``"pcd"`` above.  ``"exact"``: randomly shifted
    tensor quadrature (d ≤ 3 only).  ``"pcd"``: 512 persistent reflected-MALA chains, 5
    transitions per step, a quarter of them offered a Metropolis restart from the base per
    step.  ``"cd"``: CD-10, 512 short-run MALA chains started at data rows.  ``"importance"``:
    self-normalised importance sampling from the base (8192 draws per step).
    """
    if name == "auto":
        name = "exact" if dim <= MAX_DIM else "pcd"
    if name == "exact":
        if dim > MAX_DIM:
            raise ValueError(
                f"negative_phase='exact' (tensor quadrature) is limited to d <= {MAX_DIM}, got "
                f"d={dim}; use 'pcd', 'cd' or 'importance'"
            )
        return ShiftedGridNegatives(dim, base=base)
    if name == "pcd":
        return PersistentChains(dim, PCD_CHAINS, "mala", PCD_STEPS, PCD_REINIT, base)
    if name == "cd":
        return ShortRunChains(dim, CD_CHAINS, CD_STEPS, "data", U_train, "mala", base)
    if name == "importance":
        return ImportanceNegatives(dim, base=base)
    raise ValueError(f"unknown negative_phase {name!r}: use one of {NEGATIVE_PHASES}")


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
        L-BFGS iterations per penalty value on the path (linear; default 100, and 10× that for
        the final refit) or Adam steps (MLP; default 2000).
    lr : float, default=2e-3
        Adam learning rate (MLP).
    log_partition : {"auto", "quadrature", "qmc", "ais", "importance"}, default="auto"
        The rule that computes ``log_partition_`` after fitting (independent of training).
        ``"auto"``: tensor quadrature for d ≤ 3, annealed importance sampling from the base
        above (a stochastic lower bound, E[log Ẑ] ≤ log Z, with its
        standard error; see :func:`ebmfit.partition.log_partition_ais`).
    random_state : int, RandomState or None
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    verbose : bool, default=False
        Show a progress bar with the validation NLL.
    negative_phase : {"auto", "exact", "pcd", "cd", "importance"} or strategy, default="auto"
        How the fit estimates E_model[∇V] (MLP and other
        SGD-fitted energies; see :mod:`ebmfit.training.negatives`): ``"auto"`` is exact
        shifted-grid quadrature for d ≤ 3 and persistent MALA chains (``"pcd"``) above;
        ``"cd"`` is CD-10 from the data (biased, cheap); ``"importance"`` is self-normalised
        importance sampling from the base.  Linear energies with ``"auto"``/``"exact"`` are
        fitted by the convex solver; with another choice by SGD.  A strategy object
        (``strategy(energy, generator) -> Negatives``) is used as given (copied).
    base : {"auto", "uniform", "gmm"}, default="auto"
        The base measure P of p ∝ e^(−V) dP.  ``"auto"`` is ``"uniform"`` for d ≤ 3 (where
        the exact convex fit needs no help) and ``"gmm"`` above (measured in
        ``benchmarks/density_nd.py``).  ``"gmm"`` first fits a
        :class:`~ebmfit.base.TruncatedGMMBase` (diagonal Gaussian mixture truncated to the box,
        components by BIC, exact normalizer and sampler) to the training split, so V only
        learns a correction; chains, importance sampling and AIS then start from it.  With a
        linear energy (d ≤ 3) the convex fit penalises V towards the base (a parametric start
        with a nonparametric correction); above d = 3 ``"auto"`` becomes the MLP, with
        Fourier-feature scale 0.5 (a correction to a fitted base is smooth).

    Attributes
    ----------
    model_ : EnergyModel
    domain_ : Box
    energy_ : Energy
    log_partition_ : LogZ
        log Z (on the unit cube) with its error estimate, method and cost.
    base_ : BaseMeasure
        The base measure used (on the unit cube).
    fit_warnings_ : list of dict
        What the training stability monitor reported (:class:`~ebmfit.training.FitWarning`).
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
        negative_phase="auto",
        base="auto",
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
        self.negative_phase = negative_phase
        self.base = base

    # ------------------------------------------------------------------ helpers
    def _make_box(self, X: np.ndarray) -> Box:
        d = X.shape[1]
        # a constant column has no density (its MLE is a point mass), whatever the box
        const = np.flatnonzero(np.ptp(X, axis=0) == 0)
        if const.size:
            raise DataError(
                f"X: column(s) {const.tolist()} are constant; a density on them is degenerate "
                "(drop them)"
            )
        if self.low is None and self.high is None:
            return Box.from_data(X, self.margin)
        if self.low is None or self.high is None:
            raise ValueError("give both low and high, or neither (bounds from the data)")
        bounds = []
        for name, v in (("low", self.low), ("high", self.high)):
            v = np.asarray(v, dtype=np.float64)
            if v.ndim > 1 or v.size not in (1, d):
                raise ValueError(f"{name} has {v.size} values but X has {d} column(s)")
            bounds.append(np.broadcast_to(v.reshape(-1), (d,)))
        return Box(*bounds)

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
        check_params(self, X.shape[0])
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
        if self.base not in ("auto", "uniform", "gmm"):
            raise ValueError(f"base must be 'auto', 'uniform' or 'gmm', got {self.base!r}")
        base_name = self.base
        if base_name == "auto":
            base_name = "uniform" if X.shape[1] <= MAX_DIM else "gmm"
        phase = self.negative_phase
        if isinstance(phase, str) and phase not in NEGATIVE_PHASES:
            raise ValueError(f"unknown negative_phase {phase!r}: use one of {NEGATIVE_PHASES}")
        if not isinstance(phase, str) and not callable(phase):
            raise ValueError("negative_phase must be a name or a callable strategy")
        if isinstance(self.energy, Energy):
            energy = self._copy_energy(self.energy)
        else:
            params = dict(self.energy_params or {})
            family = self.energy
            if family == "auto" and base_name == "gmm" and d > MAX_DIM:
                family = "mlp"
            if family in ("mlp",) or (family == "auto" and d > MAX_DIM):
                params.setdefault("seed", seed)
                if base_name == "gmm":
                    params.setdefault("fourier_scale", 0.5)
            energy = default_energy(family, d, params)
        if energy.dim != d:
            raise ValueError(f"energy has dim {energy.dim} but X has {d} columns")
        energy = energy.to(device)
        U = torch.as_tensor(box.to_unit(X), device=device)
        perm = torch.as_tensor(rng.permutation(X.shape[0]), device=device)
        n_val = max(1, int(round(self.validation_fraction * X.shape[0])))
        U_val, U_tr = U[perm[:n_val]], U[perm[n_val:]]
        convex = energy.is_linear and phase in ("auto", "exact")
        if base_name == "gmm":
            base = TruncatedGMMBase.fit(U_tr.cpu().numpy(), random_state=seed % (2**31))
        else:
            base = Uniform(d)
        if convex:
            it = self.max_iter or 100
            res = fit_convex(
                energy,
                U_tr,
                U_val,
                max_iter=it,
                refit_max_iter=10 * it,
                base=base,
                progress=self.verbose,
            )
        else:
            if isinstance(phase, str):
                neg = make_negative_phase(phase, d, base, U_tr)
            else:
                neg = self._copy_energy(phase)
            mc = not isinstance(neg, ShiftedGridNegatives)
            res = fit_sgd(
                energy,
                U_tr,
                U_val,
                neg,
                base=base,
                max_iter=self.max_iter or 2000,
                lr=self.lr,
                batch_size=1024 if mc else None,
                generator=gen,
                progress=self.verbose,
            )
        energy.eval()
        self.energy_ = energy
        self.domain_ = box
        self.base_ = base
        self.model_ = EnergyModel(energy, box, base)
        self.log_partition_ = self._log_partition(self.log_partition, seed, device)
        self.n_iter_ = res.n_iter
        self.history_ = res.history
        self.stop_reason_ = res.stop_reason
        self.fit_warnings_ = list(getattr(res, "warnings", []))
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _log_partition(self, method: str, seed: int, device):
        d = self.model_.dim
        if method == "auto":
            method = "quadrature" if d <= MAX_DIM else "ais"
        if method in ("ais", "importance"):
            from .partition import log_partition_ais, log_partition_importance

            gen = torch.Generator(device=device).manual_seed(seed + 1)
            fn = log_partition_ais if method == "ais" else log_partition_importance
            lz = fn(self.energy_, self.base_, generator=gen).logz
            self.model_.log_partition_ = lz
            return lz
        kwargs = {"random_state": seed} if method == "qmc" else {}
        return self.model_.log_partition(method=method, **kwargs)

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
        """Samples from the fitted density, shape (n_samples, n_features).

        Exact (i.i.d.) for the uniform base when d ≤ 3 (rejection from an adaptive box
        envelope with sound energy bounds).  Otherwise exact rejection (from the base, or from
        the box envelope) is used when its acceptance rate, predicted from the sound bounds and
        ``log_partition_``, is at least 1e-3; else MCMC: 256 reflected MALA chains started
        from the base, 500 burn-in transitions with dual-averaging step size and diagonal mass
        adaptation (discarded), then one draw every 5 transitions per chain.
        ``model_.last_sample_info`` says which was used (and R-hat for MCMC).
        """
        check_is_fitted(self, "model_")
        n_samples = check_n_samples(n_samples)
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
        est = cls(
            energy=model.energy_fn.family,
            base="uniform" if isinstance(model.base, Uniform) else "gmm",
        )
        est.model_ = model
        est.base_ = model.base
        est.energy_ = model.energy_fn
        est.domain_ = model.domain
        est.log_partition_ = model.log_partition_
        est.n_features_in_ = model.dim
        est.n_iter_ = int(extra.get("n_iter", 0))
        est.history_ = []
        est.fit_warnings_ = []
        est.stop_reason_ = extra.get("stop_reason", "loaded")
        est.fit_time_ = float(extra.get("fit_time", math.nan))
        if "feature_names" in extra:
            est.feature_names_in_ = np.asarray(extra["feature_names"], dtype=object)
        return est
