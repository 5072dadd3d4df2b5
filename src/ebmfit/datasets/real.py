"""Small real data sets (scikit-learn's bundled ones, no download) mapped into the unit cube."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["REAL_DATASETS", "load_real", "real_feature_names"]

REAL_DATASETS: tuple[str, ...] = ("iris", "wine", "breast_cancer")
"""Names accepted by :func:`load_real` (scikit-learn's bundled data; no download)."""

_REAL_MARGIN = 0.05


def _load_sklearn(name: str) -> Any:
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
