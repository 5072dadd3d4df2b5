r"""EnergyDensity: a scikit-learn density estimator with normalized log-densities.

Fits :math:`p(x) = e^{-V_\theta(u)}/(Z_\theta\,|K|)` on a box K (u = x mapped to the unit cube)
by maximum likelihood through the gradient identity, and reports ``score_samples`` as
*normalized* log-densities in the user's coordinates, with ``log_partition_`` carrying the
error of log Z.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._heldout import heldout_score
from ._lattice import GridDataWarning, grid_columns, grid_message
from ._validation import check_n_samples, check_params, resolve_device
from .base import BaseMeasure, Uniform
from .choice import choose_by_crossfit, choose_on_split
from .crossfit import CROSSFIT_FOLDS, CROSSFIT_MAX_DIM, CROSSFIT_MAX_ROWS
from .domain import Box, DataError, check_matrix
from .energies import (
    FAMILIES,
    CosineEnergy,
    Energy,
    LegendreEnergy,
    MLPEnergy,
    ResidualEnergy,
    SplineEnergy,
    ZeroEnergy,
)
from .fitting import (
    BASES,
    NEGATIVE_PHASES,
    fit_base,
    fit_energy,
    make_negative_phase,
    running,
)
from .model import EnergyModel
from .partition.quadrature import MAX_DIM
from .partition.result import LogZ
from .selection import (
    Selection,
    log_partition_rule,
)
from .training._progress import Progress

if TYPE_CHECKING:
    from .checkpoint import RunCheckpoint
    from .training.parallel import ParallelContext

__all__ = [
    "BASES",
    "NEGATIVE_PHASES",
    "RESIDUAL_BOUND",
    "EnergyDensity",
    "default_energy",
    "make_negative_phase",
]

MIN_SAMPLES = 10

#: Default bound s of the residual energy V = s tanh(f / s) above d = 3 (nats).
RESIDUAL_BOUND = 3.0


def default_energy(family: str, dim: int, params: dict | None = None) -> Energy:
    """Build an energy of ``family`` for dimension ``dim`` with robust default sizes.

    ``"residual"`` is a bounded correction ``ResidualEnergy(MLPEnergy(...), bound)`` whose
    output layer starts at zero (V ≡ 0: the model starts as its base); its ``params`` are the
    MLP's, plus ``bound`` (default :data:`RESIDUAL_BOUND`).
    """
    params = dict(params or {})
    if family == "auto":
        family = "spline" if dim <= MAX_DIM else "residual"
    if family == "spline":
        params.setdefault("n_basis", {1: 64, 2: 48, 3: 20}.get(dim, 8))
        return SplineEnergy(dim, **params)
    if family == "legendre":
        params.setdefault("degree", {1: 40, 2: 24, 3: 12}.get(dim, 4))
        return LegendreEnergy(dim, **params)
    if family == "cosine":
        params.setdefault("n_freq", {1: 64, 2: 40, 3: 16}.get(dim, 4))
        return CosineEnergy(dim, **params)
    if family == "residual":
        bound = float(params.pop("bound", RESIDUAL_BOUND))
        # a correction to a fitted base is smooth: low Fourier frequencies
        params.setdefault("fourier_scale", 0.5)
        params.setdefault("hidden", (64, 64))
        return ResidualEnergy(MLPEnergy(dim, **params), bound=bound, zero_init=True)
    if family == "mlp":
        if dim > MAX_DIM:
            # frequencies ~ N(0, s²) per axis have norm ≈ s√d: keep the norm at the 2-D value
            params.setdefault("fourier_scale", 3.0 * math.sqrt(2.0 / dim))
        return MLPEnergy(dim, **params)
    raise ValueError(
        f"unknown energy {family!r}: use 'auto', 'residual', "
        f"one of {sorted(set(FAMILIES) - {'quadratic', 'residual', 'zero'})}, "
        "or pass an Energy instance"
    )


#: The ``LogZ.method`` each rule of ``log_partition`` produces.
_RULE_METHOD = {"quadrature": "gauss-legendre", "importance": "importance", "ais": "ais-forward"}


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
    base : {"auto", "logit_gmm", "gmm", "truncated_gmm", "flow", "uniform"}, default="auto"
        The base measure P of p ∝ e^(−V) dP, fitted on the training split (structure chosen
        on the validation split; see ``docs/selection.md``).  ``"logit_gmm"``: a full, tied or
        diagonal Gaussian mixture in logit coordinates mixed with the uniform
        (:class:`~ebmfit.base.LogitGMMBase`); ``"gmm"``/``"truncated_gmm"``: a diagonal
        Gaussian mixture truncated to the box, components by BIC
        (:class:`~ebmfit.base.TruncatedGMMBase`); ``"auto"``: the logit mixture unless a
        rival beats it on the validation rows by more than 2 SE of the paired difference —
        the truncated mixture, and above d = 3 with zuko installed and at least 500
        training rows a neural spline flow (:class:`~ebmfit.base.FlowBase`, 64 000/d Adam
        steps, at most 4 000); ``"flow"``: a zuko spline flow where it beats the logit mixture
        (``pip install ebmfit[flows]``); ``"uniform"``: no base.  Every base is exactly
        normalized and sampled, so the base alone is always a candidate of the selection.

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
    grid_columns_ : list of GridColumn
        Columns whose values lie on a regular grid with few levels (``ebmfit._lattice``);
        when any, ``fit`` also emits a :class:`GridDataWarning` (held-out log-densities at
        grid values reward spikes: compare models on dequantized data).
    """

    def __init__(
        self,
        energy: str | Energy = "auto",
        *,
        energy_params: dict | None = None,
        low: ArrayLike | float | None = None,
        high: ArrayLike | float | None = None,
        margin: float = 0.05,
        clip: bool = False,
        validation_fraction: float = 0.2,
        max_iter: int | None = None,
        lr: float = 2e-3,
        log_partition: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        device: str | torch.device | None = None,
        verbose: bool = False,
        negative_phase: str | Callable[..., Any] = "auto",
        base: str = "auto",
        selection: str = "auto",
    ) -> None:
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
        self.selection = selection

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

    def _check_X(self, X: ArrayLike, *, reset: bool) -> np.ndarray:
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
    def fit(
        self,
        X: ArrayLike,
        y: object = None,
        *,
        parallel: ParallelContext | None = None,
        checkpoint: RunCheckpoint | None = None,
    ) -> EnergyDensity:
        """Fit the density to X of shape (n_samples, n_features). Returns self.

        Fits the base on the training split (its structure chosen on the validation split),
        fits each candidate energy on it, scores every candidate — the base alone included —
        on the validation split with an honest log Z (:mod:`ebmfit.selection`), keeps the
        best (``selection_``) and refits it where that is well defined (the base alone on all
        rows; the convex spline at its penalty on the training and tuning rows).

        ``parallel`` (a :class:`~ebmfit.training.parallel.ParallelContext`, every rank passing
        the same X) and ``checkpoint`` (a :class:`~ebmfit.checkpoint.RunCheckpoint`) change
        only where and how safely the fit runs, never what is fitted (:mod:`ebmfit.fitting`).
        """
        if parallel is not None or checkpoint is not None:
            with running(parallel, checkpoint):
                return self.fit(X, y)
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
        grid = grid_columns(X)
        if grid:
            names = getattr(self, "feature_names_in_", None)
            msg = grid_message(grid, None if names is None else [str(c) for c in names])
            warnings.warn(GridDataWarning(msg), stacklevel=2)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(0, 2**31 - 1))
        device = resolve_device(self.device)
        gen = torch.Generator(device=device).manual_seed(seed)
        if not isinstance(self.base, str) or self.base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {self.base!r}")
        if self.selection not in ("auto", "none"):
            raise ValueError(f"selection must be 'auto' or 'none', got {self.selection!r}")
        phase = self.negative_phase
        if isinstance(phase, str) and phase not in NEGATIVE_PHASES:
            raise ValueError(f"unknown negative_phase {phase!r}: use one of {NEGATIVE_PHASES}")
        if not isinstance(phase, str) and not callable(phase):
            raise ValueError("negative_phase must be a name or a callable strategy")
        if not isinstance(phase, str):
            phase = self._copy_energy(phase)
        U = torch.as_tensor(box.to_unit(X), device=device)
        perm = torch.as_tensor(rng.permutation(X.shape[0]), device=device)
        n_val = max(1, int(round(self.validation_fraction * X.shape[0])))
        U_val, U_tr = U[perm[:n_val]], U[perm[n_val:]]
        # the validation rows in two halves: one tunes each candidate (penalty path, early
        # stopping, defensive weight), the other scores the tuned candidates, so that the
        # selection is not fooled by the tuning's own optimism
        half = n_val // 2 if n_val >= 4 else 0
        U_tune, U_sel = (U_val[:half], U_val[half:]) if half else (U_val, U_val)

        base = fit_base(self.base, U_tr, U_val, seed)
        fitted = {"base": (ZeroEnergy(d).to(device), base, None, None)}
        for name, energy, cbase in self._candidates(d, base, seed, device):
            res, refit = fit_energy(
                energy,
                cbase,
                U_tr,
                U_tune,
                phase=phase,
                max_iter=self.max_iter,
                lr=self.lr,
                generator=gen,
                progress=Progress(box.log_volume) if self.verbose else False,
            )
            energy.eval()
            fitted[name] = (energy, cbase, res, refit)

        g_val = torch.Generator(device=device).manual_seed(seed + 2)
        convex = all(f[3] is not None for k, f in fitted.items() if k != "base")
        if (
            self.selection == "auto"
            and len(fitted) > 1
            and convex
            and d <= CROSSFIT_MAX_DIM
            and 2 * CROSSFIT_FOLDS <= X.shape[0] <= CROSSFIT_MAX_ROWS
        ):
            choice = choose_by_crossfit(
                fitted, base, U, seed=seed, generator=g_val, log_volume=box.log_volume
            )
        else:
            force = None if self.selection == "auto" else next(k for k in fitted if k != "base")
            choice = choose_on_split(
                fitted,
                base,
                U,
                U_tune,
                U_sel,
                seed=seed,
                generator=g_val,
                log_volume=box.log_volume,
                force=force,
            )
        self.selection_ = choice.selection
        energy, base, res, lz_known = choice.energy, choice.base, choice.result, choice.log_z
        self.energy_ = energy
        self.domain_ = box
        self.base_ = base
        self.model_ = EnergyModel(energy, box, base)
        self.log_partition_ = self._log_partition(self.log_partition, seed, device, lz_known)
        self.n_iter_ = 0 if res is None else res.n_iter
        self.history_ = [] if res is None else res.history
        self.stop_reason_ = "selected the base" if res is None else res.stop_reason
        self.fit_warnings_ = [] if res is None else list(res.warnings)
        self.grid_columns_ = grid
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _candidates(
        self, d: int, base: BaseMeasure, seed: int, device: torch.device
    ) -> list[tuple[str, Energy, BaseMeasure]]:
        """The policy: ``(name, energy, base)`` of every candidate beside the base alone."""
        if isinstance(self.energy, Energy):
            energy = self._copy_energy(self.energy)
            if energy.dim != d:
                raise ValueError(f"energy has dim {energy.dim} but X has {d} columns")
            return [(f"{energy.family}|base", energy.to(device), base)]
        family = self.energy
        if not isinstance(family, str):
            raise ValueError(f"energy must be a family name or an Energy, got {family!r}")
        params = dict(self.energy_params or {})
        if family == "auto" and isinstance(base, Uniform) and d > MAX_DIM:
            family = "mlp"  # no base to correct: a free energy, sampled by persistent chains
        if family == "auto" and d > MAX_DIM:
            family = "residual"
        if family in ("mlp", "residual"):
            params.setdefault("seed", seed)
        out = [(f"{family}|base", default_energy(family, d, params).to(device), base)]
        if family == "auto" and d <= MAX_DIM:
            out = [("spline|base", default_energy("spline", d, params).to(device), base)]
            if not isinstance(base, Uniform):  # the exact nonparametric fit needs no base
                out.append(
                    ("spline|uniform", default_energy("spline", d, params).to(device), Uniform(d))
                )
        return out

    def _log_partition(
        self, method: str, seed: int, device: torch.device, known: LogZ | None = None
    ) -> LogZ:
        """log Z of the fitted model by ``method`` (``"auto"``:
        :func:`~ebmfit.partition.auto.log_partition_rule`, the one rule of the estimator and
        of :meth:`EnergyModel.log_partition`); ``known``: the selection's own estimate, kept
        when it came from that very rule."""
        if method == "auto":
            method = log_partition_rule(self.energy_, self.base_)
        if known is not None and known.method == _RULE_METHOD.get(method):
            self.model_.log_partition_ = known
            return known
        gen = torch.Generator(device=device).manual_seed(seed + 1)
        return self.model_.log_partition(method, generator=gen, random_state=seed)

    @staticmethod
    def _copy_energy(energy: Energy) -> Energy:
        import copy

        return copy.deepcopy(energy)

    # ------------------------------------------------------------------ inference
    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Normalized log-density of each row of X (shape (n,)), in X's coordinates.

        Rows outside the box get −inf (the density is zero there).
        """
        check_is_fitted(self, "model_")
        X = self._check_X(X, reset=False)
        return self.model_.log_prob(X)

    def score(self, X: ArrayLike, y: object = None) -> float:
        """Mean log-likelihood of the rows of X (with a box from the data, rows outside it are
        scored at the box, censored: see :mod:`ebmfit._heldout`)."""
        return heldout_score(self, X)

    def sample(
        self, n_samples: int = 1, random_state: int | np.random.RandomState | None = None
    ) -> np.ndarray:
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
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to ``path`` (safetensors + JSON header; see :mod:`ebmfit.io`)."""
        from .io import save_model

        check_is_fitted(self, "model_")
        extra = {
            "n_features_in": int(self.n_features_in_),
            "n_iter": int(self.n_iter_),
            "fit_time": float(self.fit_time_),
            "stop_reason": str(self.stop_reason_),
        }
        sel = getattr(self, "selection_", None)
        if isinstance(sel, Selection):
            extra["selection"] = sel.to_dict()
        if hasattr(self, "feature_names_in_"):
            extra["feature_names"] = [str(c) for c in self.feature_names_in_]
        save_model(self.model_, path, extra=extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EnergyDensity:
        """Load a model written by :meth:`save` (or the CLI) as a fitted estimator."""
        from .io import load_model_with_extra

        model, extra = load_model_with_extra(path)
        kinds = {"uniform": "uniform", "truncated_gmm": "gmm", "logit_gmm": "logit_gmm"}
        est = cls(
            energy=model.energy_fn.family,
            base=kinds.get(model.base.to_dict().get("kind"), "auto"),
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
        sel = extra.get("selection")
        try:
            est.selection_ = Selection.from_dict(sel) if isinstance(sel, dict) else None
        except (KeyError, TypeError, ValueError):
            est.selection_ = None  # an older or foreign record: the model itself is intact
        if "feature_names" in extra:
            est.feature_names_in_ = np.asarray(extra["feature_names"], dtype=object)
        return est
