r"""EnergyModel: an energy, a box and a base measure make a normalized density.

.. math:: \log p(x) = -V(u) + \log \frac{dP}{du}(u) - \log Z - \sum_i \log(b_i - a_i),
   \qquad u = (x - a)/(b - a),\quad Z = \mathbb{E}_P[e^{-V}].

Densities are reported in the user's coordinates x (the last term is the log-Jacobian of the
map to the unit cube).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import BaseMeasure, Uniform
from .domain import Box
from .energies.base import Energy
from .partition.qmc import log_partition_qmc
from .partition.quadrature import MAX_DIM, log_partition_quadrature
from .partition.result import LogZ
from .samplers.exact import sample_exact

__all__ = ["EnergyModel"]


class EnergyModel:
    """A normalized energy-based density on a box.

    Args:
        energy: V on the unit cube, an :class:`~ebmfit.energies.Energy` (n, d) → (n,).
        domain: the box K in user coordinates.
        base: base measure P on the unit cube (default uniform).
        log_partition: a known :class:`LogZ` (e.g. loaded from a file); computed on demand otherwise.
    """

    def __init__(
        self,
        energy: Energy,
        domain: Box,
        base: BaseMeasure | None = None,
        log_partition: LogZ | None = None,
    ):
        if energy.dim != domain.dim:
            raise ValueError(f"energy dimension {energy.dim} != domain dimension {domain.dim}")
        self.energy_fn = energy
        self.domain = domain
        self.base = base if base is not None else Uniform(domain.dim)
        self.log_partition_ = log_partition

    @property
    def dim(self) -> int:
        return self.domain.dim

    # ------------------------------------------------------------------ evaluation
    def _to_unit_tensor(self, x) -> torch.Tensor:
        t = torch.as_tensor(
            np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor) else x
        )
        t = t.to(device=self.energy_fn.param_device(), dtype=torch.float64)
        return self.domain.to_unit(t)

    @torch.no_grad()
    def energy(self, x, chunk: int = 65536) -> np.ndarray:
        """V at points x of the box (shape (n, d)) → numpy (n,)."""
        u = self._to_unit_tensor(x)
        dt = self.energy_fn.param_dtype()
        return (
            torch.cat([self.energy_fn(c.to(dt)).double() for c in u.split(chunk)]).cpu().numpy()
            if u.shape[0]
            else np.zeros(0)
        )

    def log_partition(self, method: str = "auto", *, cache: bool = True, **kwargs) -> LogZ:
        """Estimate log Z = log E_P[exp(−V)] (on the unit cube).

        ``method``: ``"quadrature"`` (d ≤ 3), ``"qmc"`` (any d) or ``"auto"`` (quadrature when
        d ≤ 3, else QMC).  Extra keyword arguments go to the estimator.  The result is cached in
        ``log_partition_`` unless ``cache=False``.
        """
        if method == "auto":
            method = "quadrature" if self.dim <= MAX_DIM else "qmc"
        if method == "quadrature":
            lz = log_partition_quadrature(self.energy_fn, self.base, **kwargs)
        elif method == "qmc":
            lz = log_partition_qmc(self.energy_fn, self.base, **kwargs)
        else:
            raise ValueError(
                f"unknown log-partition method {method!r}: use 'auto', 'quadrature' or 'qmc'"
            )
        if cache:
            self.log_partition_ = lz
        return lz

    def log_prob(self, x) -> np.ndarray:
        """Normalized log-density at x (shape (n, d)) in user coordinates → numpy (n,).

        Points outside the box get −inf.
        """
        if self.log_partition_ is None:
            self.log_partition()
        u = self._to_unit_tensor(x)
        inside = ((u >= 0) & (u <= 1)).all(-1).cpu().numpy()
        with torch.no_grad():
            lb = self.base.log_prob(u.clamp(0, 1)).cpu().numpy()
        V = self.energy(self.domain.from_unit(u.clamp(0, 1)))
        lp = -V + lb - self.log_partition_.value - self.domain.log_volume
        return np.where(inside, lp, -np.inf)

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> np.ndarray:
        """``n`` exact samples (numpy, shape (n, d)) in user coordinates (uniform base)."""
        if not isinstance(self.base, Uniform):
            raise NotImplementedError("exact sampling is implemented for the uniform base")
        u, _ = sample_exact(self.energy_fn, int(n), generator=generator)
        return self.domain.from_unit(u).cpu().numpy()

    def __repr__(self) -> str:
        return (
            f"EnergyModel(energy={type(self.energy_fn).__name__}, domain={self.domain}, "
            f"base={self.base}, log_partition={self.log_partition_})"
        )
