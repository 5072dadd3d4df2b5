"""The target interface (:class:`Target`) and the numerical helpers the targets share."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy import integrate, special

if TYPE_CHECKING:
    from ..energies import Energy

from .._rng import as_numpy_rng
from ..grid import gauss_legendre_nodes

__all__ = ["Target"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_QUAD_EPSREL = 1e-13


# ----------------------------------------------------------------------------- helpers
def _log_ndtr_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r""":math:`\log(\Phi(b) - \Phi(a))` for :math:`a \le b`, without cancellation in either tail."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    flip = a > 0  # use symmetry Phi(b) - Phi(a) = Phi(-a) - Phi(-b) to work in the lower tail
    lo = np.where(flip, -b, a)
    hi = np.where(flip, -a, b)
    out = np.empty_like(lo)
    both_neg = hi <= 0
    with np.errstate(divide="ignore"):
        # lo <= hi <= 0: log Phi(hi) + log(1 - Phi(lo)/Phi(hi))
        lh, ll = special.log_ndtr(hi[both_neg]), special.log_ndtr(lo[both_neg])
        out[both_neg] = lh + np.log1p(-np.exp(ll - lh))
        # lo <= 0 < hi: log(1 - Phi(lo) - Phi(-hi))
        m = ~both_neg
        out[m] = np.log1p(-(special.ndtr(lo[m]) + special.ndtr(-hi[m])))
    return out


def _quad01(f: Callable[[float], float]) -> tuple[float, float]:
    """Adaptive Gauss–Kronrod on [0, 1] to relative accuracy ~1e-13; returns (value, rel. error)."""
    val, err = integrate.quad(f, 0.0, 1.0, epsabs=0.0, epsrel=_QUAD_EPSREL, limit=500)
    return val, err / abs(val)


def _tensor_integral_2d(f: Callable[[np.ndarray], np.ndarray], n_panels: int, order: int) -> float:
    """Integral of a vectorized f over [0,1]^2 by a tensor composite Gauss–Legendre rule."""
    x, w = gauss_legendre_nodes(n_panels, order)
    total = 0.0
    for i in range(0, x.size, 64):  # row blocks keep memory small
        xi = x[i : i + 64]
        pts = np.stack(np.broadcast_arrays(xi[:, None], x[None, :]), axis=-1).reshape(-1, 2)
        vals = f(pts).reshape(xi.size, x.size)
        total += float(w[i : i + 64] @ vals @ w)
    return total


def _rejection_from_uniform(
    log_unnorm: Callable[[np.ndarray], np.ndarray],
    log_bound: float,
    acceptance_guess: float,
    dim: int,
    n: int,
    rng: np.random.Generator,
) -> np.ndarray:
    r"""Exact rejection sampling of :math:`\tilde q / Z` on :math:`[0,1]^d` from the uniform.

    Accepts a uniform proposal ``x`` with probability :math:`\tilde q(x) / M`,
    :math:`\log M` = ``log_bound``; raises ``RuntimeError`` if the bound is ever violated.
    Batch sizes depend only on ``n`` and the number accepted so far, so the output is a
    deterministic function of the generator state.
    """
    out = np.empty((n, dim), dtype=np.float64)
    filled = 0
    while filled < n:
        need = n - filled
        m = min(int(1.2 * need / acceptance_guess) + 256, 2_000_000)
        x = rng.random((m, dim))
        lq = log_unnorm(x)
        excess = float(np.max(lq)) - log_bound if m else -np.inf
        if excess > 1e-12:
            raise RuntimeError(
                f"rejection bound violated: log q~(x) exceeds log M by {excess:.3g}; "
                "the sampler would be biased"
            )
        with np.errstate(divide="ignore"):
            accept = np.log(rng.random(m)) < lq - log_bound
        acc = x[accept][:need]
        out[filled : filled + acc.shape[0]] = acc
        filled += acc.shape[0]
    return out


# ----------------------------------------------------------------------------- base class
class Target:
    r"""A density :math:`q` on :math:`[0,1]^d` with exact log-density and an exact sampler.

    Attributes:
        name: registry name (see :data:`TARGETS`).
        dim: dimension ``d``.
        smooth: whether :math:`\log q` is smooth (finite and infinitely differentiable) on the
            square; False for the checkerboard, whose density has zeros and jumps.
        description: one-line description.
        log_prob_bound: a proven upper bound on :math:`\log q(x)` over the square.
        normalizer_rel_error: estimated relative error of the normalizing constant
            (0.0 for closed forms built from :math:`\Phi`; the quadrature error estimate
            otherwise), i.e. :math:`\int_K q = 1 \pm` this.

    Instances returned by :func:`load_target` are cached and shared: treat them as read-only.
    """

    name: str
    dim: int
    smooth: bool
    description: str
    log_prob_bound: float
    normalizer_rel_error: float

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        r"""Normalized :math:`\log q(x)` for ``x`` of shape (n, d); float64, shape (n,).

        ``-inf`` outside the closed square and where the density is zero; NaN rows give NaN.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{self.name}: expected x of shape (n, {self.dim}), got {x.shape}")
        out = np.full(x.shape[0], -np.inf)
        inside = np.all((x >= 0.0) & (x <= 1.0), axis=1)
        if inside.any():
            out[inside] = self._log_prob_inside(x[inside])
        out[np.isnan(x).any(axis=1)] = np.nan
        return out

    def prob(self, x: np.ndarray) -> np.ndarray:
        """``exp(log_prob(x))``."""
        return np.exp(self.log_prob(x))

    def sample(self, n: int, random_state: int | np.random.Generator | None = None) -> np.ndarray:
        """``n`` exact independent draws, shape (n, d), float64, inside the square.

        ``random_state``: an int seed, a ``numpy.random.Generator`` (advanced in place) or None.
        """
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        x = self._sample(n, as_numpy_rng(random_state))
        return np.clip(x, 0.0, 1.0)  # a no-op for exact draws; guards float round-off only

    def bounded_energy(self) -> Energy | None:
        r""":math:`-\log q(x)` as an :class:`~ebmfit.energies.Energy` in x with sound interval
        and gradient bounds (for certificates), or None when no analytic form is known."""
        return None

    # subclasses implement these two
    def _log_prob_inside(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Target(name={self.name!r}, dim={self.dim}, smooth={self.smooth})"


class _RejectionTarget(Target):
    r""":math:`q = \tilde q / Z` with :math:`\log \tilde q` = ``_log_unnorm`` and
    :math:`\log \tilde q \le` ``_log_unnorm_bound`` on the square; sampled by rejection."""

    _log_normalizer: float
    _log_unnorm_bound: float

    def _log_unnorm(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _finish(self, log_normalizer: float, rel_error: float) -> None:
        self._log_normalizer = float(log_normalizer)
        self.normalizer_rel_error = float(rel_error)
        self.log_prob_bound = self._log_unnorm_bound - self._log_normalizer

    @property
    def log_normalizer(self) -> float:
        r""":math:`\log Z = \log \int_{[0,1]^d} \tilde q`."""
        return self._log_normalizer

    def _log_prob_inside(self, x: np.ndarray) -> np.ndarray:
        return self._log_unnorm(x) - self._log_normalizer

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        acceptance = math.exp(self._log_normalizer - self._log_unnorm_bound)
        return _rejection_from_uniform(
            self._log_unnorm, self._log_unnorm_bound, acceptance, self.dim, n, rng
        )
