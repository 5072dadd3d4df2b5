r"""EnergyModel: an energy, a box and a base measure make a normalized density.

.. math:: \log p(x) = -V(u) + \log \frac{dP}{du}(u) - \log Z - \sum_i \log(b_i - a_i),
   \qquad u = (x - a)/(b - a),\quad Z = \mathbb{E}_P[e^{-V}].

Densities are reported in the user's coordinates x (the last term is the log-Jacobian of the
map to the unit cube).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.typing import ArrayLike

from ._rng import RandomState, as_generator
from .base import BaseMeasure, Uniform
from .domain import Box
from .energies.base import Energy
from .partition.auto import log_partition as _log_partition
from .partition.result import LogZ
from .samplers.exact import sample_exact

__all__ = ["EnergyModel", "SampleInfo", "potential"]


class SampleInfo(NamedTuple):
    """What :meth:`EnergyModel.sample` did (``model.last_sample_info``); None where a field
    does not apply to the method.

    Attributes:
        method: ``"exact"`` (i.i.d. rejection on sound bounds) or ``"mcmc"`` (approximate).
        acceptance_rate: exact: accepted / proposed; MCMC: mean Metropolis acceptance.
        n_proposed: exact: proposals drawn.
        n_accepted: exact: proposals accepted.
        n_boxes: exact from the uniform base: boxes of the adaptive envelope.
        kernel: MCMC: the kernel (``"mala"``).
        n_chains: MCMC: number of chains.
        burn_in: MCMC: discarded warm-up transitions per chain.
        thin: MCMC: transitions between kept draws.
        step_size: MCMC: the adapted step size.
        divergences: MCMC: divergent transitions.
        rhat_max: MCMC: largest split R-hat over coordinates (None: too few draws).
        ess_min: MCMC: smallest effective sample size over coordinates (None: too few draws).
    """

    method: str
    acceptance_rate: float | None = None
    n_proposed: int | None = None
    n_accepted: int | None = None
    n_boxes: int | None = None
    kernel: str | None = None
    n_chains: int | None = None
    burn_in: int | None = None
    thin: int | None = None
    step_size: float | None = None
    divergences: int | None = None
    rhat_max: float | None = None
    ess_min: float | None = None


def potential(energy: Energy, base: BaseMeasure) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""The model's potential on the cube, :math:`U(u) = V(u) - \log p(u)` (float64 out).

    :math:`e^{-U}` is the unnormalized density of :math:`e^{-V}\,dP/Z` with respect to
    Lebesgue measure (:math:`p = dP/du`; the base term vanishes for the uniform base); MCMC
    kernels target it.  Shape (n, d) → (n,), differentiable in u.
    """
    dt = energy.param_dtype()
    uniform = isinstance(base, Uniform)

    def fn(u: torch.Tensor) -> torch.Tensor:
        v = energy(u.to(dt)).to(torch.float64)
        return v if uniform else v - base.log_prob(u)

    return fn


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
        self.last_sample_info: SampleInfo | None = None

    @property
    def dim(self) -> int:
        return self.domain.dim

    # ------------------------------------------------------------------ evaluation
    def _to_unit_tensor(self, x: ArrayLike) -> torch.Tensor:
        t = torch.as_tensor(
            np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor) else x
        )
        t = t.to(device=self.energy_fn.param_device(), dtype=torch.float64)
        return self.domain.to_unit(t)

    @torch.no_grad()
    def energy(self, x: ArrayLike, chunk: int = 65536) -> np.ndarray:
        """V at points x of the box (shape (n, d)) → numpy (n,)."""
        u = self._to_unit_tensor(x)
        dt = self.energy_fn.param_dtype()
        return (
            torch.cat([self.energy_fn(c.to(dt)).double() for c in u.split(chunk)]).cpu().numpy()
            if u.shape[0]
            else np.zeros(0)
        )

    def log_partition(
        self,
        method: str = "auto",
        *,
        cache: bool = True,
        generator: torch.Generator | None = None,
        random_state: RandomState = None,
        **kwargs: Any,
    ) -> LogZ:
        """Estimate log Z = log E_P[exp(−V)] (on the unit cube).

        ``method``: ``"auto"`` — the rule of the estimator,
        :func:`~ebmfit.partition.auto.log_partition_rule` (exact for V ≡ 0, checked quadrature
        for d ≤ 3, importance sampling from a fitted base when V's oscillation is provably
        small, else AIS) — or ``"exact"``, ``"quadrature"``, ``"qmc"``, ``"importance"``,
        ``"ais"``.  ``generator`` / ``random_state`` drive the stochastic rules (None: fresh
        entropy); extra keyword arguments go to the estimator
        (:func:`~ebmfit.partition.auto.log_partition`).  The result is cached in
        ``log_partition_`` unless ``cache=False``.
        """
        lz = _log_partition(
            self.energy_fn,
            self.base,
            method,
            generator=generator,
            random_state=random_state,
            **kwargs,
        )
        if cache:
            self.log_partition_ = lz
        return lz

    def log_prob(self, x: ArrayLike) -> np.ndarray:
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
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        method: str = "auto",
        burn_in: int = 500,
        thin: int = 5,
        n_chains: int = 256,
        min_acceptance: float = 1e-3,
    ) -> np.ndarray:
        r"""``n`` samples (numpy, shape (n, d)) in user coordinates.

        ``method``:

        - ``"exact"``: i.i.d. draws by rejection with *sound* energy bounds (no approximation).
          Uniform base: the adaptive box envelope of :func:`ebmfit.samplers.exact.sample_exact`.
          Any other base P: propose :math:`u \sim P` and accept with probability
          :math:`e^{\underline V - V(u)}`, :math:`\underline V` a sound lower bound of V over
          the cube (interval arithmetic on a box partition); the acceptance rate is
          :math:`Z e^{\underline V}`.
        - ``"mcmc"``: ``min(n_chains, n)`` reflected MALA chains (an exact kernel on the cube)
          started from the base P; ``burn_in`` warm-up transitions with dual-averaging step
          size and diagonal mass adaptation are discarded, then every chain contributes one
          draw every ``thin`` transitions.  Approximate: draws are exact only once the chains
          have forgotten P; ``last_sample_info`` (a :class:`SampleInfo`) holds the
          acceptance rate and split R-hat.
        - ``"auto"``: exact rejection when its acceptance rate (predicted from
          ``log_partition_`` and the sound bounds) is at least ``min_acceptance`` — always the
          case for the linear energies, whose bounds are tight — else MCMC (e.g. MLP energies,
          whose interval bounds can be too loose).  ``last_sample_info.method`` says which.

        Raises ``ValueError`` for an unknown method and ``NotImplementedError`` when
        ``"exact"`` is asked for an energy without sound interval bounds.
        """
        n = int(n)
        if method not in ("auto", "exact", "mcmc"):
            raise ValueError(f"unknown sampling method {method!r}: use 'auto', 'exact' or 'mcmc'")
        if generator is None:  # fresh entropy, never the global RNG
            generator = as_generator(None, self.energy_fn.param_device())
        uniform = isinstance(self.base, Uniform)
        if method == "auto":
            method = "exact" if self._rejection_rate() >= min_acceptance else "mcmc"
        if method == "exact":
            if uniform:
                u, info = sample_exact(self.energy_fn, n, generator=generator)
                self.last_sample_info = SampleInfo(
                    "exact",
                    acceptance_rate=info.acceptance_rate,
                    n_proposed=info.n_proposed,
                    n_accepted=info.n_accepted,
                    n_boxes=info.n_boxes,
                )
            else:
                u = self._sample_rejection_from_base(n, generator)
        else:
            u = self._sample_mcmc(n, generator, burn_in, thin, n_chains)
        return self.domain.from_unit(u).cpu().numpy()

    def _lower_bound(self) -> float:
        """A sound lower bound of V over the unit cube (interval arithmetic, box partition)."""
        from .samplers.exact import build_envelope

        return float(build_envelope(self.energy_fn).vlo.min())

    def _rejection_rate(self) -> float:
        """Predicted acceptance rate of exact rejection (0 when V has no sound bounds)."""
        from .samplers.exact import build_envelope, log_partition_from_envelope

        try:
            if isinstance(self.base, Uniform):
                log_env = log_partition_from_envelope(build_envelope(self.energy_fn))
            else:
                log_env = -self._lower_bound()
        except NotImplementedError:
            return 0.0
        if self.log_partition_ is None:
            self.log_partition()
        return float(np.exp(min(0.0, self.log_partition_.value - log_env)))

    @torch.no_grad()
    def _sample_rejection_from_base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        vmin = self._lower_bound()
        dev, dt = self.energy_fn.param_device(), self.energy_fn.param_dtype()
        out, n_acc, n_prop = [], 0, 0
        while n_acc < n:
            if n_prop >= 200_000_000:
                raise RuntimeError(
                    f"rejection from the base: only {n_acc} of {n} samples after {n_prop} "
                    "proposals; use method='mcmc'"
                )
            m = max(1024, min(65536, 2 * (n - n_acc)))
            u = self.base.sample(m, generator=generator, device=dev)
            V = self.energy_fn(u.to(dt)).to(torch.float64)
            log_acc = vmin - V
            if (log_acc > 1e-9 * (1 + V.abs())).any():
                raise AssertionError("energy lower bound violated: unsound interval bounds")
            r = torch.rand(m, generator=generator, dtype=torch.float64, device=dev)
            keep = r.log() < log_acc
            out.append(u[keep])
            n_acc += int(keep.sum())
            n_prop += m
        self.last_sample_info = SampleInfo(
            "exact", acceptance_rate=n_acc / n_prop, n_proposed=n_prop, n_accepted=n_acc
        )
        return torch.cat(out)[:n]

    def _sample_mcmc(
        self, n: int, generator: torch.Generator | None, burn_in: int, thin: int, n_chains: int
    ) -> torch.Tensor:
        from .samplers import effective_sample_size, run_chains, split_rhat

        dev = self.energy_fn.param_device()
        if generator is None:  # fresh entropy, never the global RNG
            generator = as_generator(None, dev)
        chains = max(1, min(int(n_chains), n))
        per_chain = -(-n // chains)
        u0 = self.base.sample(chains, generator=generator, device=dev)
        fn = potential(self.energy_fn, self.base)
        draws, info = run_chains(
            "mala", fn, u0, per_chain * int(thin), generator, warmup=int(burn_in), thin=int(thin)
        )
        rhat = ess = None
        if per_chain >= 4 and chains >= 2:
            rhat = float(np.nanmax(split_rhat(draws)))
        if per_chain >= 10:
            ess = float(np.nanmin(effective_sample_size(draws)))
        self.last_sample_info = SampleInfo(
            "mcmc",
            acceptance_rate=info["acceptance_rate"],
            kernel="mala",
            n_chains=chains,
            burn_in=int(burn_in),
            thin=int(thin),
            step_size=info["step_size"],
            divergences=info["divergences"],
            rhat_max=rhat,
            ess_min=ess,
        )
        return draws.transpose(0, 1).reshape(-1, self.dim)[:n]

    def __repr__(self) -> str:
        return (
            f"EnergyModel(energy={type(self.energy_fn).__name__}, domain={self.domain}, "
            f"base={self.base}, log_partition={self.log_partition_})"
        )
