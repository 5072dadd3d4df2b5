r"""MCMC diagnostics: autocovariance, effective sample size, Monte Carlo standard error, R-hat.

All functions take draws of shape (n_chains, n_draws, d) (a torch tensor or anything
``numpy.asarray`` accepts; shape (n_chains, n_draws) is read as d = 1), compute in float64
numpy, and return a ``numpy.ndarray`` of shape (d,): one value per coordinate.

**ESS** (Geyer 1992; Vehtari, Gelman, Simpson, Carpenter & Bürkner, Bayesian Analysis 16 (2021),
eqs. 10–11, as in Stan and ArviZ).  Each chain is split in half.  With per-chain
autocovariances :math:`\hat\gamma_{j,t}` (FFT, biased), within-chain variance :math:`W`,
:math:`\widehat{\mathrm{var}}^+ = \frac{n-1}{n} W + \frac{B}{n}`, the multi-chain autocorrelation
is :math:`\hat\rho_t = 1 - (W - \overline{\hat\gamma_{\cdot,t}}) / \widehat{\mathrm{var}}^+`.
Pair sums :math:`P_k = \hat\rho_{2k} + \hat\rho_{2k+1}` are kept up to the first non-positive one
(initial positive sequence), made non-increasing (initial monotone sequence), and

.. math:: \hat\tau = -1 + 2 \sum_k P_k + \max(\hat\rho_{2K}, 0), \qquad
          \widehat{\mathrm{ESS}} = \frac{m n}{\hat\tau},

with :math:`\hat\tau \ge 1/\log_{10}(mn)` (ESS at most :math:`mn\log_{10}(mn)`, for antithetic
chains).

**R-hat** (split): :math:`\hat R = \sqrt{\widehat{\mathrm{var}}^+ / W}` on the split chains;
rank-normalized (Vehtari et al. 2021): the maximum of :math:`\hat R` of the rank-normalized draws
(bulk) and of the rank-normalized folded draws :math:`|x - \mathrm{median}|` (tails).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import special, stats

__all__ = [
    "autocovariance",
    "effective_sample_size",
    "mcse_mean",
    "rank_normalize",
    "split_chains",
    "split_rhat",
]


def _as_draws(samples: ArrayLike | torch.Tensor) -> np.ndarray:
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"draws must have shape (n_chains, n_draws, d), got {x.shape}")
    return x


def split_chains(samples: ArrayLike | torch.Tensor) -> np.ndarray:
    """Split every chain into its first and second half (dropping the middle draw if odd).

    Shape (m, n, d) -> (2m, n // 2, d).
    """
    x = _as_draws(samples)
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


def autocovariance(samples: ArrayLike | torch.Tensor) -> np.ndarray:
    r"""Biased autocovariance of each chain along the draws, by FFT.

    :math:`\hat\gamma_t = \frac1n \sum_{s=0}^{n-1-t} (x_s - \bar x)(x_{s+t} - \bar x)`, shape
    (m, n, d) for input (m, n, d).
    """
    x = _as_draws(samples)
    n = x.shape[1]
    xc = x - x.mean(axis=1, keepdims=True)
    nfft = 1 << (2 * n - 1).bit_length()  # zero-pad: no circular wrap-around
    f = np.fft.rfft(xc, n=nfft, axis=1)
    return np.fft.irfft(f * np.conj(f), n=nfft, axis=1)[:, :n] / n


def _ess_unsplit(x: np.ndarray) -> np.ndarray:
    m, n, d = x.shape
    acov = autocovariance(x)  # (m, n, d)
    w = acov[:, 0].mean(0) * n / (n - 1.0)  # mean within-chain variance (ddof=1)
    var_plus = w * (n - 1.0) / n
    if m > 1:
        var_plus = var_plus + x.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = 1.0 - (w - acov.mean(0)) / var_plus  # (n, d)
    rho[0] = 1.0
    # Stan computes pairs P_k = (rho_2k, rho_2k+1) for k <= k_last, k_last = (t + 1) / 2 with t
    # the largest odd number below n - 3; the first non-positive pair, or pair k_last if none
    # is, ends the sequence and contributes only its even term (if positive).
    t_last = n - 4 if (n - 4) % 2 == 1 else n - 5
    k_last = (t_last + 1) // 2
    pairs = rho[0 : 2 * k_last + 1 : 2] + rho[1 : 2 * k_last + 2 : 2]  # (k_last + 1, d)
    stop = pairs <= 0.0
    stop[k_last] = True
    first = stop.argmax(0)  # index of the pair that ends the sequence
    keep = np.arange(k_last + 1)[:, None] < first[None, :]
    mono = np.minimum.accumulate(np.where(keep, pairs, np.inf), axis=0)  # initial monotone
    tau = -1.0 + 2.0 * np.where(keep, mono, 0.0).sum(0)
    tau = tau + np.maximum(rho[2 * first, np.arange(d)], 0.0)
    tau = np.maximum(tau, 1.0 / np.log10(m * n))
    ess = m * n / tau
    ess[~np.isfinite(var_plus) | (var_plus <= 0) | np.isnan(rho).any(0)] = np.nan
    return ess


def rank_normalize(samples: ArrayLike | torch.Tensor) -> np.ndarray:
    r"""Replace draws by normal scores of their pooled ranks, per coordinate.

    :math:`z = \Phi^{-1}\bigl((r - 3/8) / (S + 1/4)\bigr)` with average ranks :math:`r` over all
    :math:`S = mn` draws (Blom's offset; Vehtari et al. 2021, eq. 14).  Shape preserved.
    """
    return _normal_scores(_as_draws(samples))


def _normal_scores(x: np.ndarray) -> np.ndarray:
    m, n, d = x.shape
    r = stats.rankdata(x.reshape(m * n, d), axis=0)
    return special.ndtri((r - 0.375) / (m * n + 0.25)).reshape(m, n, d)


def effective_sample_size(
    samples: ArrayLike | torch.Tensor, *, rank_normalize: bool = False
) -> np.ndarray:
    """Multi-chain effective sample size per coordinate, on split chains; shape (d,).

    Args:
        samples: draws of shape (n_chains, n_draws, d) with ``n_draws >= 10``.
        rank_normalize: compute the *bulk* ESS of Vehtari et al. (2021) from rank-normalized
            draws (robust to heavy tails); the default is the ESS for the mean.
    """
    x = split_chains(samples)
    if x.shape[1] < 5:
        raise ValueError(f"need at least 10 draws per chain, got {_as_draws(samples).shape[1]}")
    if rank_normalize:
        x = _normal_scores(x)
    return _ess_unsplit(x)


def mcse_mean(samples: ArrayLike | torch.Tensor) -> np.ndarray:
    r"""Monte Carlo standard error of the pooled mean, shape (d,).

    :math:`\hat\sigma / \sqrt{\widehat{\mathrm{ESS}}}` with :math:`\hat\sigma` the pooled standard
    deviation and the ESS of :func:`effective_sample_size`.
    """
    x = _as_draws(samples)
    sd = x.reshape(-1, x.shape[2]).std(axis=0, ddof=1)
    return sd / np.sqrt(effective_sample_size(x))


def _rhat(x: np.ndarray) -> np.ndarray:
    n = x.shape[1]
    w = x.var(axis=1, ddof=1).mean(0)
    b_over_n = x.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(((n - 1.0) / n * w + b_over_n) / w)


def split_rhat(samples: ArrayLike | torch.Tensor, *, rank_normalize: bool = False) -> np.ndarray:
    r"""Split :math:`\hat R` per coordinate; shape (d,).  Near 1 for mixed chains (use < 1.01).

    Args:
        samples: draws of shape (n_chains, n_draws, d) with ``n_draws >= 4``.
        rank_normalize: return :math:`\max(\hat R_\text{bulk}, \hat R_\text{tail})` of Vehtari et
            al. (2021) instead of the classic split :math:`\hat R` of the raw draws.
    """
    x = split_chains(samples)
    if x.shape[1] < 2:
        raise ValueError("need at least 4 draws per chain")
    if not rank_normalize:
        return _rhat(x)
    bulk = _rhat(_normal_scores(x))
    folded = np.abs(x - np.median(x.reshape(-1, x.shape[2]), axis=0))
    tail = _rhat(_normal_scores(folded))
    return np.maximum(bulk, tail)
