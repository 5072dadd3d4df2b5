r"""MCMC on the unit cube :math:`[0,1]^d`: reflected ULA (biased), MALA and HMC (exact).

Each kernel module (:mod:`~ebmfit.samplers.ula`, :mod:`~ebmfit.samplers.mala`,
:mod:`~ebmfit.samplers.hmc`) exposes pure functions ``init(position, energy_fn) -> State`` and
``step(generator, state, energy_fn, step_size, ...) -> (State, Info)``; :func:`run_chains`
adds warm-up adaptation; :mod:`~ebmfit.samplers.diagnostics` has ESS, MCSE and R-hat.

Example:
    >>> import torch
    >>> from ebmfit.samplers import run_chains
    >>> g = torch.Generator().manual_seed(0)
    >>> energy = lambda u: 3.0 * u.sum(-1)          # density ∝ exp(-3 u) on [0,1]^2
    >>> u0 = torch.rand(64, 2, generator=g, dtype=torch.float64)
    >>> samples, info = run_chains("mala", energy, u0, 200, g, warmup=100)
    >>> samples.shape
    torch.Size([64, 200, 2])
    >>> bool(((samples >= 0) & (samples <= 1)).all())
    True
"""

from . import adapt, diagnostics, hmc, integrators, mala, metropolis, ula
from .chains import KERNELS, run_chains
from .diagnostics import effective_sample_size, mcse_mean, split_rhat
from .types import Info, State

__all__ = [
    "KERNELS",
    "Info",
    "State",
    "adapt",
    "diagnostics",
    "effective_sample_size",
    "hmc",
    "integrators",
    "mala",
    "mcse_mean",
    "metropolis",
    "run_chains",
    "split_rhat",
    "ula",
]
