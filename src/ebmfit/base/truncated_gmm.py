r""":class:`TruncatedGMMBase`: axis-aligned Gaussians, each truncated to the cube.

A mixture of diagonal Gaussians restricted to :math:`[0,1]^d`, optionally mixed with the
uniform; exactly normalized (products of :math:`\Phi` differences) with an exact sampler.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import special

from .._threads import single_threaded
from .measure import BaseMeasure

__all__ = ["TruncatedGMMBase"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- truncated normal
def _log_ndtr_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r""":math:`\log(\Phi(b) - \Phi(a))` for :math:`a < b`, accurate in both tails."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    flip = a > 0  # Φ(b) − Φ(a) = Φ(−a) − Φ(−b): work where both are in the lower tail
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    with np.errstate(divide="ignore"):
        lhi, llo = special.log_ndtr(hi), special.log_ndtr(lo)
        # log Φ(hi) + log(1 − Φ(lo)/Φ(hi)); with lo ≤ 0 the ratio is < 1 away from lo = hi
        return lhi + np.log1p(-np.exp(llo - lhi))


def _truncnorm_ppf(q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r"""Inverse CDF of the standard normal truncated to :math:`[a, b]` at levels q ∈ [0, 1].

    Works in log space on the lower tail (the upper tail by the symmetry
    :math:`x \mapsto -x`), so it stays accurate when :math:`[a, b]` lies far in a tail.
    """
    q, a, b = np.broadcast_arrays(q, a, b)
    flip = (a + b) > 0  # put the bulk of the interval's mass in the lower tail
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    qq = np.where(flip, 1.0 - q, q)
    with np.errstate(divide="ignore"):
        log_plo = special.log_ndtr(lo)
        log_mass = _log_ndtr_diff(lo, hi)
        log_p = np.logaddexp(log_plo, np.log(qq) + log_mass)
    x = special.ndtri_exp(np.minimum(log_p, 0.0))
    x = np.clip(x, lo, hi)  # round-off only
    return np.where(flip, -x, x)


class TruncatedGMMBase(BaseMeasure):
    r"""Mixture of diagonal Gaussians, each truncated to :math:`[0,1]^d`, plus a uniform part.

    .. math::
        p(u) = w_0 \mathbf 1_{[0,1]^d}(u) + \sum_{k=1}^K w_k \prod_{j=1}^d
            \frac{\varphi\big((u_j - m_{kj})/s_{kj}\big) / s_{kj}}
                 {\Phi\big((1 - m_{kj})/s_{kj}\big) - \Phi\big(-m_{kj}/s_{kj}\big)},
        \qquad w_0 + \sum_k w_k = 1,

    normalized *exactly* on the cube (each factor is a truncated normal density; its
    normalizer is a product of :math:`\Phi` differences, computed in log space without
    cancellation).  The sampler is exact too: a component by its weight, then every coordinate
    by the inverse CDF of its truncated normal (uniform variates drawn from the torch
    ``generator``, so draws are a deterministic function of the generator state).

    The uniform part ``uniform_weight`` :math:`w_0` keeps :math:`-\log p` bounded above by
    :math:`-\log w_0`, which keeps importance weights and chain energies tame far from the
    components.

    Args:
        weights: :math:`w_1..w_K`, shape (K,), non-negative.
        means: :math:`m`, shape (K, d).
        stds: :math:`s`, shape (K, d), positive.
        uniform_weight: :math:`w_0 \in [0, 1)`; ``weights`` are rescaled to sum to
            :math:`1 - w_0`.
    """

    def __init__(
        self, weights: ArrayLike, means: ArrayLike, stds: ArrayLike, uniform_weight: float = 0.0
    ) -> None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        m = np.atleast_2d(np.asarray(means, dtype=np.float64))
        s = np.atleast_2d(np.asarray(stds, dtype=np.float64))
        if m.shape != s.shape or m.shape[0] != w.size:
            raise ValueError(
                f"weights (K,), means and stds (K, d) disagree: {w.shape}, {m.shape}, {s.shape}"
            )
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and np.all(s > 0)):
            raise ValueError("means must be finite and stds finite and positive")
        if np.any(w < 0) or not w.sum() > 0:
            raise ValueError("weights must be non-negative with a positive sum")
        w0 = float(uniform_weight)
        if not 0.0 <= w0 < 1.0:
            raise ValueError(f"uniform_weight must be in [0, 1), got {uniform_weight}")
        self.dim = int(m.shape[1])
        self.uniform_weight = w0
        self.weights = w / w.sum() * (1.0 - w0)
        self.means = m
        self.stds = s
        # log normalizer of each component on the cube: Σ_j log(Φ(b) − Φ(a)), shape (K,)
        self._log_mass_1d = _log_ndtr_diff(-m / s, (1.0 - m) / s)  # (K, d)
        self.log_norm = self._log_mass_1d.sum(1)
        self._cache: dict = {}

    @property
    def n_components(self) -> int:
        return int(self.weights.size)

    # ------------------------------------------------------------------ fitting
    @classmethod
    @single_threaded
    def fit(
        cls,
        U: ArrayLike,
        *,
        n_components: int | str = "bic",
        max_components: int = 8,
        uniform_weight: float = 0.02,
        reg_covar: float = 1e-4,
        n_init: int = 1,
        random_state: int | None = 0,
    ) -> TruncatedGMMBase:
        r"""Fit to unit-cube data ``U`` (shape (n, d)) with ``GaussianMixture(covariance_type="diag")``.

        The number of components is ``n_components``, or chosen by BIC over
        ``1..max_components`` when it is ``"bic"``.  The fitted (untruncated) mixture
        :math:`g` is then restricted to the cube *as a whole*,
        :math:`g\,\mathbf 1_{[0,1]^d} / \int_{[0,1]^d} g`, which is the truncated-component form
        above with weights :math:`w_k \propto \pi_k\,\mathrm{mass}_k` — the density the mixture
        fitted to the data had inside the cube, renormalized.
        """
        from sklearn.mixture import GaussianMixture

        U = np.asarray(U.detach().cpu() if isinstance(U, torch.Tensor) else U, dtype=np.float64)
        if U.ndim != 2 or U.shape[0] < 2:
            raise ValueError(f"U must have shape (n >= 2, d), got {U.shape}")
        if not np.all((U >= 0) & (U <= 1)):
            raise ValueError("U must lie in the unit cube (map the data with Box.to_unit)")
        if n_components == "bic":
            ks = range(1, max(1, min(int(max_components), U.shape[0] // 2)) + 1)
        else:
            ks = [int(n_components)]
        best, best_bic = None, math.inf
        for k in ks:
            g = GaussianMixture(
                n_components=k,
                covariance_type="diag",
                reg_covar=reg_covar,
                n_init=n_init,
                random_state=random_state,
            ).fit(U)
            bic = g.bic(U) if len(ks) > 1 else 0.0
            if bic < best_bic:
                best, best_bic = g, bic
        means, stds = best.means_, np.sqrt(best.covariances_)
        log_mass = _log_ndtr_diff(-means / stds, (1.0 - means) / stds).sum(1)
        logw = np.log(best.weights_) + log_mass
        w = np.exp(logw - logw.max())
        return cls(w, means, stds, uniform_weight=uniform_weight)

    # ------------------------------------------------------------------ density
    def _tensors(self, dtype: torch.dtype, device: torch.device | str | None):
        key = (dtype, str(device))
        if key not in self._cache:
            t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
            with np.errstate(divide="ignore"):
                logw = np.log(self.weights) - self.log_norm - np.log(self.stds).sum(1)
            self._cache[key] = (t(self.means), t(1.0 / self.stds), t(logw))
        return self._cache[key]

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        r"""Exact :math:`\log p(u)`, shape (n,) for u of shape (n, d); −inf outside the cube."""
        dt = u.dtype if u.dtype.is_floating_point else torch.float64
        m, inv_s, logw = self._tensors(dt, u.device)
        z = (u[..., None, :] - m) * inv_s  # (n, K, d)
        lc = logw - 0.5 * (z * z).sum(-1) - self.dim * _LOG_SQRT_2PI  # (n, K)
        if self.uniform_weight > 0:
            lu = torch.full_like(lc[..., :1], math.log(self.uniform_weight))
            lc = torch.cat([lc, lu], -1)
        out = torch.logsumexp(lc, -1)
        inside = ((u >= 0) & (u <= 1)).all(dim=-1)
        return torch.where(inside, out, torch.full_like(out, -torch.inf))

    # ------------------------------------------------------------------ sampling
    def _draw(self, n: int, generator: torch.Generator | None, gdev: torch.device) -> torch.Tensor:
        """A component per row (the last one uniform), then the truncated normal's inverse CDF
        at a uniform draw; inside the cube."""
        probs = torch.as_tensor(
            np.append(self.weights, self.uniform_weight), dtype=torch.float64, device=gdev
        )
        comp = torch.multinomial(probs, n, replacement=True, generator=generator)
        q = torch.rand(n, self.dim, generator=generator, dtype=torch.float64, device=gdev)
        comp = comp.cpu().numpy()
        q = q.cpu().numpy()
        out = q.copy()  # rows of the uniform component keep their uniform draw
        g = comp < self.n_components
        if g.any():
            k = comp[g]
            m, s = self.means[k], self.stds[k]
            x = _truncnorm_ppf(q[g], -m / s, (1.0 - m) / s)
            out[g] = np.clip(m + s * x, 0.0, 1.0)  # round-off only
        return torch.from_numpy(out)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "kind": "truncated_gmm",
            "dim": self.dim,
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "stds": self.stds.tolist(),
            "uniform_weight": self.uniform_weight,
        }

    def __repr__(self) -> str:
        return (
            f"TruncatedGMMBase(dim={self.dim}, n_components={self.n_components}, "
            f"uniform_weight={self.uniform_weight:g})"
        )
