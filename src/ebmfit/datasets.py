r"""Targets with exact normalized densities on the unit cube, and small real data sets.

Every built-in 2-D target is a probability density :math:`q(x)` with respect to Lebesgue measure
on the closed unit square :math:`K = [0,1]^2` (it integrates to 1 over :math:`K` and is 0 outside),
together with an *exact* sampler (inverse CDF or rejection; no MCMC). They are used to measure
how far a fitted model is from the truth, e.g. :math:`\mathrm{KL}(q \,\|\, p_\theta)`.

Each smooth target is written as :math:`q(x) = \tilde q(x) / Z` with an explicit unnormalized
:math:`\tilde q \le 1`-type bound and a normalizer :math:`Z = \int_K \tilde q`. Where :math:`Z`
is not a closed form it is reduced analytically to a **one-dimensional** integral of a smooth
integrand (integrating one coordinate, or the radius, in closed form with the normal CDF
:math:`\Phi`) and evaluated by adaptive Gauss–Kronrod (``scipy.integrate.quad``) to a relative
accuracy of about 1e-13; only ``two_moons`` needs a 2-D rule (composite tensor Gauss–Legendre,
checked against a second resolution). The achieved error estimate is stored on each target as
:attr:`Target.normalizer_rel_error`.

Rejection samplers propose uniformly on :math:`K` and accept with probability
:math:`\tilde q(x) / M` where :math:`M \ge \sup_K \tilde q` is an *analytic* bound (stated per
target). A proposal with :math:`\tilde q(x) > M` would make the sampler wrong, so it raises
``RuntimeError`` instead of silently clipping.

Registry (:data:`TARGETS`)::

    gaussian_mixture     8 truncated isotropic Gaussians (std 0.03) on a circle of radius 0.3
    rings                two concentric Gaussian-profile rings, radii 0.15 and 0.35, width 0.025
    banana               twisted Gaussian around the parabola x2 = 0.3 + 2 (x1 - 0.5)^2
    correlated_gaussian  N((0.5, 0.5), 0.2^2 [[1, 0.8], [0.8, 1]]) truncated to the square
    checkerboard         uniform on the 8 "black" cells of a 4x4 board, exactly 0 elsewhere
    two_moons            two interleaved half-rings with Gaussian radial profile and soft ends

Targets in 5 to 50 dimensions (:data:`TARGETS_ND`), densities on :math:`[0,1]^d` with exact,
closed-form normalizers (products of :math:`\Phi` differences), exact samplers, and a
differentiable torch log-density (``torch_log_prob``; ``energy()`` gives :math:`V = -\log q`
with :math:`\log Z = 0`)::

    mixture_5d, mixture_10d, mixture_20d, mixture_50d
                         4, 6, 8, 10 axis-aligned Gaussians, each truncated to the cube
    correlated_5d, correlated_10d, correlated_20d
                         2 truncated Gaussian AR(1) chains (within-component correlation)

Real data (:func:`load_real`): scikit-learn's bundled ``iris``, ``wine`` and ``breast_cancer``
feature matrices (no download), min–max mapped into :math:`[0.05, 0.95]^d`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy import integrate, special, stats

if TYPE_CHECKING:
    from .energies import Energy

__all__ = [
    "REAL_DATASETS",
    "TARGETS",
    "TARGETS_ND",
    "Target",
    "TruncatedARMixture",
    "TruncatedProductMixture",
    "load_real",
    "load_target",
    "real_feature_names",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_QUAD_EPSREL = 1e-13


# ----------------------------------------------------------------------------- helpers
def _as_rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """``numpy.random.default_rng``: a Generator is returned unchanged; None is fresh entropy."""
    return np.random.default_rng(random_state)


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


def _gauss_legendre_01(n_panels: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss–Legendre nodes and weights on [0, 1] (``n_panels`` equal panels)."""
    t, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(0.0, 1.0, n_panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[:-1] + edges[1:])
    nodes = (mid[:, None] + half[:, None] * t[None, :]).ravel()
    weights = (half[:, None] * w[None, :]).ravel()
    return nodes, weights


def _tensor_integral_2d(f: Callable[[np.ndarray], np.ndarray], n_panels: int, order: int) -> float:
    """Integral of a vectorized f over [0,1]^2 by a tensor composite Gauss–Legendre rule."""
    x, w = _gauss_legendre_01(n_panels, order)
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
        x = self._sample(n, _as_rng(random_state))
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


# ----------------------------------------------------------------------------- targets
class GaussianMixture(Target):
    r"""Equal-weight mixture of 8 isotropic Gaussians, *each component truncated* to the square.

    .. math::
        q(x) = \frac18 \sum_{k=0}^{7} \frac{\mathcal N(x;\, m_k, s^2 I)\,\mathbf 1_K(x)}{Z_k},
        \qquad m_k = (0.5, 0.5) + 0.3\,(\cos\tfrac{2\pi k}{8}, \sin\tfrac{2\pi k}{8}),
        \quad s = 0.03,

    with the exact per-component mass (each component is axis-separable)
    :math:`Z_k = \prod_{i=1}^2 [\Phi((1-m_{k,i})/s) - \Phi(-m_{k,i}/s)]`. (The modes are
    at least 6.7 s from every face, so :math:`1 - Z_k < 3\cdot 10^{-11}`; the truncation is
    nonetheless exact.) Sampling: pick k uniformly, then each coordinate from the
    truncated normal by inverse CDF (``scipy.stats.truncnorm``) — exact and rejection-free.
    Bound: :math:`q \le \frac18 \sum_k 1/(2\pi s^2 Z_k)`.
    """

    n_modes = 8
    radius = 0.3
    std = 0.03

    def __init__(self) -> None:
        self.name = "gaussian_mixture"
        self.dim = 2
        self.smooth = True
        self.description = "8 truncated isotropic Gaussians (std 0.03) on a circle of radius 0.3"
        ang = 2.0 * np.pi * np.arange(self.n_modes) / self.n_modes
        self.means = 0.5 + self.radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        s = self.std
        self._log_zk = _log_ndtr_diff(-self.means / s, (1.0 - self.means) / s).sum(axis=1)
        self._log_const = (
            -math.log(self.n_modes) - 2 * _LOG_SQRT_2PI - 2 * math.log(s) - self._log_zk
        )  # per-component log of (1/8) / (2 pi s^2 Z_k)
        self.log_prob_bound = float(special.logsumexp(self._log_const))
        self.normalizer_rel_error = 0.0

    def _log_prob_inside(self, x: np.ndarray) -> np.ndarray:
        d2 = ((x[:, None, :] - self.means[None, :, :]) ** 2).sum(axis=-1)
        return special.logsumexp(self._log_const[None, :] - 0.5 * d2 / self.std**2, axis=1)

    def bounded_energy(self) -> Energy:
        """A mixture of quadratic energies (exact interval and gradient rules)."""
        from .energies import QuadraticEnergy
        from .energies.mixture import MixtureEnergy

        d, s = self.dim, float(self.std)
        means = np.asarray(self.means, dtype=np.float64)
        logmass = np.log(special.ndtr((1 - means) / s) - special.ndtr(-means / s)).sum(1)
        lw = -math.log(len(means)) - d * math.log(math.sqrt(2 * math.pi) * s) - logmass
        return MixtureEnergy([QuadraticEnergy(d, m, np.eye(d) / s**2) for m in means], lw)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.integers(self.n_modes, size=n)
        m = self.means[k]
        s = self.std
        return stats.truncnorm.rvs(-m / s, (1.0 - m) / s, loc=m, scale=s, random_state=rng)


class Rings(_RejectionTarget):
    r"""Two concentric rings with a Gaussian radial profile, centred at :math:`c = (0.5, 0.5)`.

    .. math::
        \tilde q(x) = \sum_{j=1}^{2} \exp\!\Big(-\frac{(r - R_j)^2}{2\sigma^2}\Big),\quad
        r = \|x - c\|,\ R = (0.15, 0.35),\ \sigma = 0.025;\qquad q = \tilde q / Z.

    **Normalizer.** In polar coordinates about c the square splits into 8 congruent triangles,
    :math:`0 \le \theta \le \pi/4`, :math:`0 \le r \le \rho(\theta) = 0.5/\cos\theta`, so
    :math:`Z = 8 \int_0^{\pi/4} \sum_j F_j(\rho(\theta))\, d\theta` with the closed form

    .. math::
        F_j(\rho) = \int_0^\rho e^{-(r-R_j)^2/2\sigma^2} r\,dr
        = \sigma^2\big[e^{-R_j^2/2\sigma^2} - e^{-(\rho-R_j)^2/2\sigma^2}\big]
          + R_j \sigma\sqrt{2\pi}\,
            \big[\Phi(\tfrac{\rho-R_j}{\sigma}) - \Phi(-\tfrac{R_j}{\sigma})\big].

    The remaining 1-D integrand is analytic; adaptive quadrature's error estimate is ~2e-14
    relative (an independent 2-D Gauss–Legendre check in the tests agrees to ~1e-16).
    (The outer ring reaches the faces at 6σ, so its truncation, ~1e-9 relative, is accounted.)

    **Bound.** For any r, the ring nearer to r contributes at most 1 and the other one is at
    least :math:`\Delta/2 = 0.1` away, contributing at most :math:`e^{-\Delta^2/8\sigma^2}`;
    hence :math:`\tilde q \le M = 1 + e^{-\Delta^2/8\sigma^2}` (:math:`\Delta = R_2 - R_1`).
    """

    center = (0.5, 0.5)
    radii = (0.15, 0.35)
    sigma = 0.025

    def __init__(self) -> None:
        self.name = "rings"
        self.dim = 2
        self.smooth = True
        self.description = "two concentric rings, radii 0.15 and 0.35, radial std 0.025"
        s = self.sigma
        gap = self.radii[1] - self.radii[0]
        self._log_unnorm_bound = math.log1p(math.exp(-(gap**2) / (8 * s**2)))

        def F(rho: float) -> float:
            tot = 0.0
            for R in self.radii:
                tot += s**2 * (
                    math.exp(-(R**2) / (2 * s**2)) - math.exp(-((rho - R) ** 2) / (2 * s**2))
                )
                tot += R * s * _SQRT_2PI * (special.ndtr((rho - R) / s) - special.ndtr(-R / s))
            return tot

        val, err = integrate.quad(
            lambda t: F(0.5 / math.cos(t)), 0.0, math.pi / 4, epsabs=0.0, epsrel=_QUAD_EPSREL
        )
        self._finish(math.log(8.0 * val), err / val)

    def _log_unnorm(self, x: np.ndarray) -> np.ndarray:
        r = np.hypot(x[:, 0] - self.center[0], x[:, 1] - self.center[1])
        e = np.stack([-((r - R) ** 2) / (2 * self.sigma**2) for R in self.radii], axis=1)
        return special.logsumexp(e, axis=1)


class Banana(_RejectionTarget):
    r"""A banana (twisted Gaussian) along the parabola :math:`x_2 = 0.3 + 2(x_1 - 0.5)^2`.

    .. math::
        \tilde q(x) = \exp\!\Big(-\frac{(x_1 - 0.5)^2}{2 s_1^2}
                      - \frac{(x_2 - \mu(x_1))^2}{2 s_2^2}\Big),\quad
        \mu(x_1) = 0.3 + 2 (x_1 - 0.5)^2,\ s_1 = 0.18,\ s_2 = 0.05.

    **Normalizer.** Integrating :math:`x_2` over [0, 1] in closed form,

    .. math::
        Z = \int_0^1 e^{-(x_1-0.5)^2/2s_1^2}\, s_2\sqrt{2\pi}\,
            \big[\Phi(\tfrac{1-\mu(x_1)}{s_2}) - \Phi(\tfrac{-\mu(x_1)}{s_2})\big]\, dx_1,

    an analytic 1-D integrand, by adaptive quadrature (error estimate ~3e-14 relative).
    **Bound.** :math:`\tilde q \le M = 1` (the exponent is :math:`\le 0`).
    """

    s1 = 0.18
    s2 = 0.05

    def __init__(self) -> None:
        self.name = "banana"
        self.dim = 2
        self.smooth = True
        self.description = "twisted Gaussian along x2 = 0.3 + 2 (x1 - 0.5)^2"
        self._log_unnorm_bound = 0.0
        s1, s2 = self.s1, self.s2

        def f(x1: float) -> float:
            mu = self._mu(x1)
            mass = special.ndtr((1.0 - mu) / s2) - special.ndtr(-mu / s2)
            return math.exp(-((x1 - 0.5) ** 2) / (2 * s1**2)) * s2 * _SQRT_2PI * mass

        val, rel = _quad01(f)
        self._finish(math.log(val), rel)

    @staticmethod
    def _mu(x1):
        return 0.3 + 2.0 * (x1 - 0.5) ** 2

    def _log_unnorm(self, x: np.ndarray) -> np.ndarray:
        x1, x2 = x[:, 0], x[:, 1]
        return -((x1 - 0.5) ** 2) / (2 * self.s1**2) - (x2 - self._mu(x1)) ** 2 / (2 * self.s2**2)


class CorrelatedGaussian(_RejectionTarget):
    r"""A bivariate Gaussian with correlation 0.8, truncated to the square.

    .. math::
        q(x) = \frac{\mathcal N(x;\, m, \Sigma)\,\mathbf 1_K(x)}{P_K},\quad m = (0.5, 0.5),\
        \Sigma = 0.2^2 \begin{pmatrix} 1 & 0.8 \\ 0.8 & 1\end{pmatrix},\quad
        P_K = \int_K \mathcal N(x; m, \Sigma)\,dx.

    Written as :math:`\tilde q = \exp(-\tfrac12 (x-m)^\top \Sigma^{-1} (x-m)) \le M = 1` and
    :math:`Z = 2\pi\sqrt{\det\Sigma}\,P_K`. **Normalizer.** With the conditional
    :math:`x_2 \mid x_1 \sim \mathcal N(m_2 + \rho\frac{\sigma_2}{\sigma_1}(x_1 - m_1),
    \sigma_2^2(1-\rho^2))`,
    :math:`P_K = \int_0^1 \mathcal N(x_1; m_1, \sigma_1^2)\,[\Phi(b(x_1)) - \Phi(a(x_1))]\,dx_1`,
    an analytic 1-D integrand, by adaptive quadrature (error estimate ~1e-14 relative;
    ``scipy.stats.multivariate_normal.cdf`` agrees to its own ~1e-6 accuracy).
    """

    mean = (0.5, 0.5)
    std = (0.2, 0.2)
    rho = 0.8

    def __init__(self) -> None:
        self.name = "correlated_gaussian"
        self.dim = 2
        self.smooth = True
        self.description = "Gaussian, mean (0.5, 0.5), std 0.2, correlation 0.8, truncated"
        (m1, m2), (s1, s2), rho = self.mean, self.std, self.rho
        self.cov = np.array([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]])
        self._prec = np.linalg.inv(self.cov)
        self._log_unnorm_bound = 0.0
        sc = s2 * math.sqrt(1 - rho**2)

        def f(x1: float) -> float:
            mc = m2 + rho * s2 / s1 * (x1 - m1)
            dens = math.exp(-0.5 * ((x1 - m1) / s1) ** 2) / (s1 * _SQRT_2PI)
            return dens * (special.ndtr((1.0 - mc) / sc) - special.ndtr(-mc / sc))

        p_box, rel = _quad01(f)
        self.box_probability = p_box
        log_gauss_const = math.log(2 * math.pi) + 0.5 * math.log(np.linalg.det(self.cov))
        self._finish(log_gauss_const + math.log(p_box), rel)

    def _log_unnorm(self, x: np.ndarray) -> np.ndarray:
        d = x - np.asarray(self.mean)
        return -0.5 * np.einsum("ni,ij,nj->n", d, self._prec, d)

    def bounded_energy(self) -> Energy:
        """One quadratic energy (exact interval and gradient rules)."""
        from .energies import QuadraticEnergy
        from .energies.mixture import MixtureEnergy

        prec = np.linalg.inv(np.asarray(self.cov, dtype=np.float64))
        quad = QuadraticEnergy(self.dim, np.asarray(self.mean), prec)
        return MixtureEnergy([quad], [-float(self.log_normalizer)])


class Checkerboard(Target):
    r"""Uniform on the 8 "black" cells of a 4×4 board; exactly zero on the 8 others.

    With cell indices :math:`i = \min(\lfloor 4x_1\rfloor, 3)`,
    :math:`j = \min(\lfloor 4x_2\rfloor, 3)`:
    :math:`q(x) = 2\cdot\mathbf 1[(i + j) \bmod 2 = 0]` (8 cells of area 1/16, so the
    constant is 2 and :math:`\log q \in \{\log 2, -\infty\}`). The cell containing the origin is
    black. Not smooth. Sampling: a black cell uniformly, then a uniform point inside it.
    """

    n_cells = 4

    def __init__(self) -> None:
        self.name = "checkerboard"
        self.dim = 2
        self.smooth = False
        self.description = "4x4 checkerboard: density 2 on 8 alternating cells, 0 on the others"
        self.log_prob_bound = math.log(2.0)
        self.normalizer_rel_error = 0.0
        ij = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
        self.black_cells = ij  # shape (8, 2): (column index along x1, index along x2)

    def _log_prob_inside(self, x: np.ndarray) -> np.ndarray:
        idx = np.minimum(np.floor(x * self.n_cells), self.n_cells - 1).astype(np.int64)
        black = (idx.sum(axis=1) % 2) == 0
        return np.where(black, math.log(2.0), -np.inf)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        cell = self.black_cells[rng.integers(len(self.black_cells), size=n)]
        return (cell + rng.random((n, 2))) / self.n_cells


class TwoMoons(_RejectionTarget):
    r"""Two interleaved half-rings ("moons") with a Gaussian radial profile and soft ends.

    The scikit-learn ``make_moons`` layout scaled by 0.28 into the square:

    .. math::
        \tilde q(x) = e^{-(\|x - a\| - R)^2/2\sigma^2}\,\Phi\!\big(\tfrac{x_2 - a_2}{\tau}\big)
                    + e^{-(\|x - b\| - R)^2/2\sigma^2}\,\Phi\!\big(\tfrac{b_2 - x_2}{\tau}\big),

    :math:`a = (0.36, 0.43)` (upper moon), :math:`b = (0.64, 0.57)` (lower moon),
    :math:`R = 0.28`, :math:`\sigma = 0.03`, :math:`\tau = 0.03`. The factor :math:`\Phi` keeps
    the upper (lower) half of each ring and tapers its ends smoothly, so :math:`\log q` is smooth
    and finite on the square.

    **Normalizer.** No 1-D reduction is used: :math:`Z` is a composite tensor Gauss–Legendre
    rule with 64×64 panels of 16×16 nodes (panel width 0.016 ≈ σ/2), compared with a second rule
    of 48×48 panels of 12×12 nodes; their relative difference (~2e-16, floored at 1e-15) is
    stored as the error.
    **Bound.** Each term is :math:`\le 1`, so :math:`\tilde q \le M = 2`.
    """

    centers = ((0.36, 0.43), (0.64, 0.57))
    radius = 0.28
    sigma = 0.03
    tau = 0.03

    def __init__(self) -> None:
        self.name = "two_moons"
        self.dim = 2
        self.smooth = True
        self.description = "two interleaved half-rings (radius 0.28, radial std 0.03), soft ends"
        self._log_unnorm_bound = math.log(2.0)
        fine = _tensor_integral_2d(lambda x: np.exp(self._log_unnorm(x)), 64, 16)
        coarse = _tensor_integral_2d(lambda x: np.exp(self._log_unnorm(x)), 48, 12)
        self._finish(math.log(fine), max(abs(fine - coarse) / fine, 1e-15))

    def _log_unnorm(self, x: np.ndarray) -> np.ndarray:
        (a1, a2), (b1, b2) = self.centers
        R, s, t = self.radius, self.sigma, self.tau
        ra = np.hypot(x[:, 0] - a1, x[:, 1] - a2)
        rb = np.hypot(x[:, 0] - b1, x[:, 1] - b2)
        la = -((ra - R) ** 2) / (2 * s**2) + special.log_ndtr((x[:, 1] - a2) / t)
        lb = -((rb - R) ** 2) / (2 * s**2) + special.log_ndtr((b2 - x[:, 1]) / t)
        return np.logaddexp(la, lb)


# ----------------------------------------------------------------------------- targets in d > 2
def _first_primes(n: int) -> list[int]:
    out: list[int] = []
    k = 2
    while len(out) < n:
        if all(k % p for p in out if p * p <= k):
            out.append(k)
        k += 1
    return out


def _richtmyer(n_points: int, dim: int, start: int = 1) -> np.ndarray:
    r"""Points :math:`\{ n\sqrt{p_i} \}` (fractional part), :math:`n = start, \dots`, shape
    (n_points, dim): a deterministic, platform-independent, well-spread design in the cube
    (Richtmyer's Kronecker sequence, :math:`p_i` the i-th prime)."""
    alpha = np.sqrt(np.asarray(_first_primes(dim), dtype=np.float64))
    n = np.arange(start, start + n_points, dtype=np.float64)[:, None]
    return np.mod(n * alpha[None, :], 1.0)


def _log_ndtr_diff_torch(a, b):
    r"""Torch :math:`\log(\Phi(b) - \Phi(a))` for :math:`a < b`, stable in both tails, with finite
    gradients (each branch only ever sees inputs valid for it); same formulas as
    :func:`_log_ndtr_diff`."""
    import torch

    flip = a > 0  # Phi(b) - Phi(a) = Phi(-a) - Phi(-b): work with lo <= 0
    lo = torch.where(flip, -b, a)
    hi = torch.where(flip, -a, b)
    neg = hi <= 0
    # lo <= 0 < hi: log1p(-(Phi(lo) + Phi(-hi)))  (dummy inputs where neg; overwritten below)
    h2 = torch.where(neg, torch.ones_like(hi), hi)
    l2 = torch.where(neg, -torch.ones_like(lo), lo)
    out = torch.log1p(-(torch.special.ndtr(l2) + torch.special.ndtr(-h2)))
    if bool(neg.any()):  # lo < hi <= 0: log Phi(hi) + log1p(-exp(log Phi(lo) - log Phi(hi)))
        lh = torch.special.log_ndtr(hi[neg])
        r1 = lh + torch.log1p(-torch.exp(torch.special.log_ndtr(lo[neg]) - lh))
        out = out.clone()
        out[neg] = r1
    return out


class _NDTarget(Target):
    """Shared pieces of the d > 2 targets: a differentiable torch log-density and an energy."""

    def torch_log_prob(self, x):  # pragma: no cover - interface
        r"""Normalized :math:`\log q(x)` in torch, x of shape (n, d) inside the cube; shape (n,),
        float64, differentiable, on the device of ``x``."""
        raise NotImplementedError

    def energy(self):
        r"""The target as an :class:`~ebmfit.energies.Energy`: :math:`V = -\log q`.

        Since :math:`q` is normalized, the model :math:`e^{-V}\,du / Z` with the uniform base is
        :math:`q` itself and :math:`\log Z = 0` exactly; ``self.sample`` draws exact model
        samples (e.g. for :func:`ebmfit.partition.ais_sandwich`).
        """
        from .energies import CallableEnergy

        return CallableEnergy(lambda u: -self.torch_log_prob(u), self.dim, name=self.name)


class TruncatedProductMixture(_NDTarget):
    r"""A mixture of axis-aligned Gaussians, *each component truncated* to :math:`[0,1]^d`.

    .. math::
        q(x) = \sum_{k=1}^K w_k \prod_{i=1}^d
               \frac{\phi\big((x_i - m_{ki})/s_{ki}\big)}{s_{ki}\, Z_{ki}},
        \qquad Z_{ki} = \Phi\Big(\frac{1 - m_{ki}}{s_{ki}}\Big) - \Phi\Big(\frac{-m_{ki}}{s_{ki}}\Big),

    exactly normalized (each factor is a normalized 1-D truncated normal; :math:`\log Z_{ki}` is
    computed without cancellation in either tail).  Sampling: a component k with probability
    :math:`w_k`, then every coordinate by inverse CDF (``scipy.stats.truncnorm``): exact.

    Parameters are a deterministic design (no random generator, so they never change with a
    library version): with :math:`r_n` the Richtmyer sequence :math:`\{n\sqrt{p_i}\}`,
    means :math:`m_k = 0.05 + 0.9\,r_{k}` (some near a face, where truncation matters), standard
    deviations :math:`s_k = 0.04 + 0.11\,r_{K+k}`, weights :math:`w_k \propto 1 + \{k\varphi\}`
    (:math:`\varphi` the golden ratio).
    Bound: :math:`q \le \sum_k w_k \prod_i 1/(\sqrt{2\pi} s_{ki} Z_{ki})`.
    """

    def __init__(self, dim: int, n_components: int, name: str | None = None) -> None:
        self.dim = int(dim)
        self.name = name or f"mixture_{self.dim}d"
        self.smooth = True
        K = int(n_components)
        self.description = (
            f"{K} axis-aligned Gaussians (std 0.04-0.15) each truncated to [0,1]^{self.dim}"
        )
        self.means = 0.05 + 0.9 * _richtmyer(K, self.dim, start=1)
        self.stds = 0.04 + 0.11 * _richtmyer(K, self.dim, start=K + 1)
        golden = (math.sqrt(5.0) - 1.0) / 2.0
        w = 1.0 + np.mod(np.arange(1, K + 1) * golden, 1.0)
        self.weights = w / w.sum()
        m, s = self.means, self.stds
        self._log_zki = _log_ndtr_diff(-m / s, (1.0 - m) / s)  # (K, d)
        self._log_const = np.log(self.weights) - (_LOG_SQRT_2PI + np.log(s) + self._log_zki).sum(1)
        self.log_prob_bound = float(special.logsumexp(self._log_const))
        self.normalizer_rel_error = 0.0

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def component_log_prob(self, x: np.ndarray) -> np.ndarray:
        r""":math:`\log w_k + \log q_k(x)` for every component, shape (n, K) (x inside the cube)."""
        x = np.asarray(x, dtype=np.float64)
        z = (x[:, None, :] - self.means[None]) / self.stds[None]
        return self._log_const[None, :] - 0.5 * (z**2).sum(-1)

    def _log_prob_inside(self, x: np.ndarray) -> np.ndarray:
        return special.logsumexp(self.component_log_prob(x), axis=1)

    def marginal_cdf(self, i: int, t: np.ndarray) -> np.ndarray:
        """Exact CDF of coordinate ``i`` at points ``t`` (a mixture of truncated-normal CDFs)."""
        m, s = self.means[:, i], self.stds[:, i]
        t = np.asarray(t, dtype=np.float64)[..., None]
        c = stats.truncnorm.cdf(t, -m / s, (1.0 - m) / s, loc=m, scale=s)
        return c @ self.weights

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.choice(self.n_components, size=n, p=self.weights)
        m, s = self.means[k], self.stds[k]
        return stats.truncnorm.rvs(-m / s, (1.0 - m) / s, loc=m, scale=s, random_state=rng)

    def torch_log_prob(self, x):
        import torch

        m = torch.as_tensor(self.means, dtype=torch.float64, device=x.device)
        s = torch.as_tensor(self.stds, dtype=torch.float64, device=x.device)
        c = torch.as_tensor(self._log_const, dtype=torch.float64, device=x.device)
        z = (x.to(torch.float64)[:, None, :] - m) / s
        return torch.logsumexp(c - 0.5 * (z * z).sum(-1), dim=1)


class TruncatedARMixture(_NDTarget):
    r"""A mixture of truncated Gaussian AR(1) chains on :math:`[0,1]^d`: correlated components.

    Component c is defined by its conditionals, each a normal truncated to [0, 1]:

    .. math::
        x_1 \sim \mathcal{TN}_{[0,1]}(\mu_c, \sigma_c^2), \qquad
        x_i \mid x_{i-1} \sim \mathcal{TN}_{[0,1]}\big(\mu_c + \rho_c (x_{i-1} - \mu_c),\,
            s_c^2\big), \quad \sigma_c = s_c / \sqrt{1 - \rho_c^2},

    so :math:`q_c(x) = \prod_i \phi(z_i) / (s_i\,[\Phi(b_i) - \Phi(a_i)])` with
    :math:`z_i = (x_i - \mu_i(x_{i-1}))/s_i`, :math:`a_i = -\mu_i/s_i`,
    :math:`b_i = (1 - \mu_i)/s_i`: every conditional is a normalized 1-D density, so
    :math:`\int q_c = 1` *exactly* (chain rule), with no d-dimensional integral anywhere, and
    sequential inverse-CDF draws are exact.  Neighbouring coordinates are strongly correlated
    within a component (about :math:`\rho_c` before truncation), and the mixture is
    :math:`q = \sum_c w_c q_c`.

    This is honestly *not* a multivariate Gaussian restricted to the cube (whose normalizer is a
    d-dimensional Gaussian probability with no closed form): the conditional normalizers
    :math:`\Phi(b_i) - \Phi(a_i)` depend on :math:`x_{i-1}`, which tilts the joint.  It is a
    smooth, strictly positive, exactly normalized correlated density with mass near the faces.

    Components: :math:`(w, \mu, \rho, s)` = (0.6, 0.35, 0.9, 0.06) and (0.4, 0.65, −0.7, 0.08).
    Bound: each conditional density is at most :math:`1/(\sqrt{2\pi} s \min_\mu [\Phi(b) -
    \Phi(a)])` over the reachable conditional means (an interval; the minimum is at an end).
    """

    components = ((0.6, 0.35, 0.9, 0.06), (0.4, 0.65, -0.7, 0.08))

    def __init__(self, dim: int, name: str | None = None) -> None:
        self.dim = int(dim)
        self.name = name or f"correlated_{self.dim}d"
        self.smooth = True
        self.description = (
            f"2 truncated Gaussian AR(1) chains (rho 0.9 and -0.7) on [0,1]^{self.dim}"
        )
        comp = np.asarray(self.components, dtype=np.float64)
        self.weights, self.mu, self.rho, self.s = comp.T
        self.s0 = self.s / np.sqrt(1.0 - self.rho**2)
        bound = []
        for w, mu, rho, s, s0 in zip(self.weights, self.mu, self.rho, self.s, self.s0, strict=True):
            first = -_LOG_SQRT_2PI - math.log(s0) - float(_log_ndtr_diff(-mu / s0, (1 - mu) / s0))
            ends = np.array([mu + rho * (0.0 - mu), mu + rho * (1.0 - mu)])
            worst = float(np.min(_log_ndtr_diff(-ends / s, (1.0 - ends) / s)))
            rest = -_LOG_SQRT_2PI - math.log(s) - worst
            bound.append(math.log(w) + first + (self.dim - 1) * rest)
        self.log_prob_bound = float(special.logsumexp(bound))
        self.normalizer_rel_error = 0.0

    def _cond_params(self, x: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Conditional means and stds of every coordinate under component c, shape (n, d)."""
        mu, rho = self.mu[c], self.rho[c]
        loc = np.empty_like(x)
        loc[:, 0] = mu
        loc[:, 1:] = mu + rho * (x[:, :-1] - mu)
        scale = np.full(self.dim, self.s[c])
        scale[0] = self.s0[c]
        return loc, np.broadcast_to(scale, x.shape)

    def component_log_prob(self, x: np.ndarray) -> np.ndarray:
        r""":math:`\log w_c + \log q_c(x)`, shape (n, 2) (x inside the cube)."""
        x = np.asarray(x, dtype=np.float64)
        out = []
        for c in range(len(self.weights)):
            loc, scale = self._cond_params(x, c)
            z = (x - loc) / scale
            lz = _log_ndtr_diff(-loc / scale, (1.0 - loc) / scale)
            lp = (-0.5 * z**2 - _LOG_SQRT_2PI - np.log(scale) - lz).sum(1)
            out.append(math.log(self.weights[c]) + lp)
        return np.stack(out, axis=1)

    def conditional_cdf(self, x: np.ndarray, c: int) -> np.ndarray:
        r"""Rosenblatt transform under component c: :math:`F_c(x_i \mid x_{i-1})`, shape (n, d)."""
        loc, scale = self._cond_params(np.asarray(x, dtype=np.float64), c)
        return stats.truncnorm.cdf(x, -loc / scale, (1.0 - loc) / scale, loc=loc, scale=scale)

    def _log_prob_inside(self, x: np.ndarray) -> np.ndarray:
        return special.logsumexp(self.component_log_prob(x), axis=1)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        x = np.empty((n, self.dim))
        mu, rho = self.mu[comp], self.rho[comp]
        for i in range(self.dim):
            if i == 0:
                loc, scale = mu, self.s0[comp]
            else:
                loc, scale = mu + rho * (x[:, i - 1] - mu), self.s[comp]
            x[:, i] = stats.truncnorm.rvs(
                -loc / scale, (1.0 - loc) / scale, loc=loc, scale=scale, random_state=rng
            )
        return x

    def torch_log_prob(self, x):
        import torch

        x = x.to(torch.float64)[:, None, :]  # (n, 1, d); components on axis 1
        opts = {"dtype": torch.float64, "device": x.device}
        mu = torch.as_tensor(self.mu, **opts)[:, None]  # (C, 1)
        rho = torch.as_tensor(self.rho, **opts)[:, None]
        scale = torch.as_tensor(self.s, **opts)[:, None].expand(-1, self.dim).clone()
        scale[:, 0] = torch.as_tensor(self.s0, **opts)
        loc = torch.cat([mu.expand(x.shape[0], -1, 1), mu + rho * (x[..., :-1] - mu)], dim=-1)
        z = (x - loc) / scale
        lz = _log_ndtr_diff_torch(-loc / scale, (1.0 - loc) / scale)
        lp = (-0.5 * z * z - _LOG_SQRT_2PI - lz).sum(-1) - torch.log(scale).sum(-1)
        return torch.logsumexp(torch.as_tensor(np.log(self.weights), **opts) + lp, dim=1)


_MIXTURE_COMPONENTS = {5: 4, 10: 6, 20: 8, 50: 10}
_AR_DIMS = (5, 10, 20)


_REGISTRY: dict[str, type[Target]] = {
    "gaussian_mixture": GaussianMixture,
    "rings": Rings,
    "banana": Banana,
    "correlated_gaussian": CorrelatedGaussian,
    "checkerboard": Checkerboard,
    "two_moons": TwoMoons,
}

TARGETS: tuple[str, ...] = tuple(_REGISTRY)
"""Names of the 2-D targets accepted by :func:`load_target`."""

_REGISTRY_ND: dict[str, Callable[[], Target]] = {
    **{
        f"mixture_{d}d": functools.partial(TruncatedProductMixture, d, k)
        for d, k in _MIXTURE_COMPONENTS.items()
    },
    **{f"correlated_{d}d": functools.partial(TruncatedARMixture, d) for d in _AR_DIMS},
}

TARGETS_ND: tuple[str, ...] = tuple(_REGISTRY_ND)
"""Names of the targets in 5 to 50 dimensions accepted by :func:`load_target`."""


@functools.cache
def load_target(name: str) -> Target:
    """The built-in target ``name`` (in :data:`TARGETS` or :data:`TARGETS_ND`); cached."""
    if name in _REGISTRY:
        return _REGISTRY[name]()
    if name in _REGISTRY_ND:
        return _REGISTRY_ND[name]()
    raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS + TARGETS_ND)}")


# ----------------------------------------------------------------------------- real data
REAL_DATASETS: tuple[str, ...] = ("iris", "wine", "breast_cancer")
"""Names accepted by :func:`load_real` (scikit-learn's bundled data; no download)."""

_REAL_MARGIN = 0.05


def _load_sklearn(name: str):
    from sklearn import datasets as skd

    loaders = {
        "iris": skd.load_iris,
        "wine": skd.load_wine,
        "breast_cancer": skd.load_breast_cancer,
    }
    if name not in loaders:
        raise ValueError(f"unknown real data set {name!r}; choose from {', '.join(REAL_DATASETS)}")
    return loaders[name]()


def _n_cols(name: str, n_total: int, n_features: int | None) -> int:
    if n_features is None:
        return n_total
    n_features = int(n_features)
    if not 1 <= n_features <= n_total:
        raise ValueError(f"{name}: n_features must be in [1, {n_total}], got {n_features}")
    return n_features


def load_real(name: str, *, n_features: int | None = None) -> np.ndarray:
    r"""A small real data set mapped into the unit cube, float64 of shape (n, d).

    Column j is mapped by :math:`u_j = 0.05 + 0.9\,(x_j - \min_j)/(\max_j - \min_j)`, so every
    value lies in :math:`[0.05, 0.95]`, strictly inside the cube (a constant column, which
    none of these has, would map to 0.5). Columns are scikit-learn's, in its order; with
    ``n_features=k`` only the first k are kept (see :func:`real_feature_names`):

    - ``"iris"``: 150 × 4 — sepal length, sepal width, petal length, petal width (cm).
      Values are recorded to 0.1 cm, so there are many ties.
    - ``"wine"``: 178 × 13 — alcohol, malic acid, ash, alcalinity of ash, magnesium,
      total phenols, flavanoids, nonflavanoid phenols, proanthocyanins, color intensity, hue,
      OD280/OD315 of diluted wines, proline.
    - ``"breast_cancer"``: 569 × 30 — mean, standard error and "worst" of ten cell-nucleus
      measurements (radius, texture, perimeter, area, smoothness, compactness, concavity,
      concave points, symmetry, fractal dimension).

    The density of the original features is the cube density times
    :math:`\prod_j 0.9/(\max_j - \min_j)`.
    """
    bunch = _load_sklearn(name)
    X = np.asarray(bunch.data, dtype=np.float64)
    X = X[:, : _n_cols(name, X.shape[1], n_features)]
    lo, hi = X.min(axis=0), X.max(axis=0)
    width = hi - lo
    scaled = np.divide(X - lo, width, out=np.full_like(X, 0.5), where=width > 0)
    U = _REAL_MARGIN + (1.0 - 2.0 * _REAL_MARGIN) * scaled
    return np.ascontiguousarray(U)


def real_feature_names(name: str, *, n_features: int | None = None) -> tuple[str, ...]:
    """Column names of :func:`load_real` ``(name, n_features=...)``, in order."""
    bunch = _load_sklearn(name)
    names = tuple(str(s) for s in bunch.feature_names)
    return names[: _n_cols(name, len(names), n_features)]
