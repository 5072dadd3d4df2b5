r"""Base measures :math:`P` on the unit cube (one kind a file).

A model is :math:`Q_V = e^{-V}\,dP / \mathbb{E}_P[e^{-V}]`; the seed's KL bound and
universality hold for any base, so a strong fitted base leaves V only a correction to learn.

- :class:`Uniform`: Lebesgue measure on the cube.
- :class:`LogitGMMBase`: a Gaussian mixture (full, tied or diagonal covariances) in logit
  coordinates, mixed with the uniform; the default fitted base.
- :class:`TruncatedGMMBase`: axis-aligned Gaussians truncated to the cube.
- :class:`FlowBase` (``pip install ebmfit[flows]``): a neural spline flow in logit coordinates.

Every base is exactly normalized on the cube and has an exact sampler; it is stored in a model
file as a JSON spec (``to_dict``) plus named tensors (``tensors``), rebuilt by
:func:`base_from_dict` without executing code.
"""

from __future__ import annotations

import torch

from .logit_gmm import LogitGMMBase
from .measure import BaseMeasure, Uniform
from .truncated_gmm import TruncatedGMMBase

__all__ = [
    "BaseMeasure",
    "FlowBase",
    "LogitGMMBase",
    "TruncatedGMMBase",
    "Uniform",
    "base_from_dict",
]


def __getattr__(name: str):
    if name == "FlowBase":  # zuko is an optional extra: import on first use
        from .flow import FlowBase

        return FlowBase
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def base_from_dict(d: dict, tensors: dict[str, torch.Tensor] | None = None) -> BaseMeasure:
    """Rebuild a base measure from :meth:`BaseMeasure.to_dict` (and its ``tensors()``)."""
    if not isinstance(d, dict):
        raise ValueError(f"base measure spec must be an object, got {type(d).__name__}")
    kind = d.get("kind")
    tensors = tensors or {}
    if kind == "uniform":
        return Uniform(int(d["dim"]))
    if kind == "truncated_gmm":
        base = TruncatedGMMBase(
            d["weights"], d["means"], d["stds"], uniform_weight=float(d.get("uniform_weight", 0))
        )
        if base.dim != int(d["dim"]):
            raise ValueError(f"truncated_gmm: dim {d['dim']} but means have {base.dim} columns")
        return base
    if kind == "logit_gmm":
        return LogitGMMBase.from_parts(d, tensors)
    if kind == "flow":
        from .flow import FlowBase

        return FlowBase.from_parts(d, tensors)
    raise ValueError(f"unknown base measure {kind!r}")
