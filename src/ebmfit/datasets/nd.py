"""Targets in 5 to 50 dimensions with closed-form normalizers (:data:`~ebmfit.datasets.TARGETS_ND`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import special, stats

if TYPE_CHECKING:
    import torch

from ._base import _LOG_SQRT_2PI, Target, _log_ndtr_diff

__all__ = ["TruncatedARMixture", "TruncatedProductMixture"]


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


def _log_ndtr_diff_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
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

    def torch_log_prob(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        r"""Normalized :math:`\log q(x)` in torch, x of shape (n, d) inside the cube; shape (n,),
        float64, differentiable, on the device of ``x``."""
        raise NotImplementedError

    def energy(self):
        r"""The target as an :class:`~ebmfit.energies.Energy`: :math:`V = -\log q`.

        Since :math:`q` is normalized, the model :math:`e^{-V}\,du / Z` with the uniform base is
        :math:`q` itself and :math:`\log Z = 0` exactly; ``self.sample`` draws exact model
        samples (e.g. for :func:`ebmfit.partition.ais_sandwich`).
        """
        from ..energies import CallableEnergy

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

    def torch_log_prob(self, x: torch.Tensor) -> torch.Tensor:
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

    def torch_log_prob(self, x: torch.Tensor) -> torch.Tensor:
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
