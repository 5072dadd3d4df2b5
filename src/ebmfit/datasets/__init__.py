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
from collections.abc import Callable

from ._base import Target
from ._base import _rejection_from_uniform as _rejection_from_uniform  # for its tests
from .nd import _AR_DIMS, _MIXTURE_COMPONENTS, TruncatedARMixture, TruncatedProductMixture
from .planar import Banana, Checkerboard, CorrelatedGaussian, GaussianMixture, Rings, TwoMoons
from .real import REAL_DATASETS, load_real, real_feature_names

__all__ = [
    "REAL_DATASETS",
    "TARGETS",
    "TARGETS_ND",
    "Banana",
    "Checkerboard",
    "CorrelatedGaussian",
    "GaussianMixture",
    "Rings",
    "Target",
    "TruncatedARMixture",
    "TruncatedProductMixture",
    "TwoMoons",
    "load_real",
    "load_target",
    "real_feature_names",
]

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
