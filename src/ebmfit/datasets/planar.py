"""The built-in 2-D targets on the unit square (see :data:`ebmfit.datasets.TARGETS`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import integrate, special, stats

if TYPE_CHECKING:
    from ..energies import Energy

from ._base import (
    _LOG_SQRT_2PI,
    _QUAD_EPSREL,
    _SQRT_2PI,
    Target,
    _log_ndtr_diff,
    _quad01,
    _RejectionTarget,
    _tensor_integral_2d,
)

__all__ = ["Banana", "Checkerboard", "CorrelatedGaussian", "GaussianMixture", "Rings", "TwoMoons"]


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
        from ..energies import QuadraticEnergy
        from ..energies.mixture import MixtureEnergy

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
    def _mu(x1: np.ndarray) -> np.ndarray:
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
        from ..energies import QuadraticEnergy
        from ..energies.mixture import MixtureEnergy

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
