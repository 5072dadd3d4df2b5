r"""Exact sampling from :math:`q(u) \propto e^{-V(u)}` on the unit cube (uniform base).

Rejection sampling on an adaptive partition of the cube into boxes :math:`C_c`:

1. sound bounds :math:`\underline V_c \le V \le \overline V_c` on each box come from
   ``energy.interval_bounds``; the boxes that carry most of the envelope's slack are bisected
   (all axes) until the guaranteed acceptance rate is high enough or the budget is used;
2. a box is drawn with probability :math:`\propto |C_c|\,e^{-\underline V_c}`, a point u
   uniformly inside it, and u is accepted with probability :math:`e^{\underline V_c - V(u)} \le 1`.

The accepted points are i.i.d. from q *exactly* (the envelope :math:`e^{-\underline V_c}`
dominates the target on every box), whatever the partition; refinement only raises the
acceptance rate.  With a single box this is plain rejection from the uniform base, valid in any
dimension whenever the energy's range is bounded.  A bound found violated raises an error
(a sound bound is never violated, so that would be a bug, not a tolerance).
"""

from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import torch

from ..energies.base import Energy
from ..energies.interval import bisect_boxes
from ..grid import tensor_grid

__all__ = ["ExactSampleInfo", "build_envelope", "log_partition_bracket", "sample_exact"]


class Envelope(NamedTuple):
    lo: torch.Tensor  # (m, d) box lower corners
    hi: torch.Tensor  # (m, d) box upper corners
    vlo: torch.Tensor  # (m,) sound lower bounds of V on the boxes
    log_mass: torch.Tensor  # (m,) log(|C| e^{-vlo})
    vhi: torch.Tensor | None = None  # (m,) sound upper bounds of V on the boxes


class ExactSampleInfo(NamedTuple):
    n_proposed: int
    n_accepted: int
    acceptance_rate: float
    n_boxes: int


def _initial_boxes(
    dim: int, cells: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    lo = tensor_grid([torch.arange(cells, dtype=dtype, device=device) / cells] * dim)
    return lo, lo + 1.0 / cells


def default_cells(dim: int) -> int:
    return {1: 64, 2: 32, 3: 12}.get(dim, 1)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state_key(energy: Energy) -> tuple:
    """Changes whenever a parameter or buffer of ``energy`` is modified (in place or replaced)."""
    return tuple((id(t), t._version) for t in (*energy.parameters(), *energy.buffers()))


@torch.no_grad()
def build_envelope(
    energy: Energy,
    *,
    cells: int | None = None,
    target_acceptance: float = 0.3,
    max_boxes: int = 20_000,
    max_rounds: int = 400,
    cache: bool = True,
) -> Envelope:
    r"""Adaptive box partition with sound energy lower bounds (see module docstring).

    Starting from ``cells`` boxes per axis, each round bisects (along all axes) the boxes that
    carry the largest share of the *slack* :math:`\sum_c |C_c|(e^{-\underline V_c} -
    e^{-\overline V_c})` — together half of it — until the guaranteed acceptance rate
    :math:`\sum_c |C_c| e^{-\overline V_c} / \sum_c |C_c| e^{-\underline V_c}` reaches
    ``target_acceptance`` or the budget is spent.  Exactness never depends on where this
    stops.  The envelope is cached per energy until its parameters change.
    """
    key = (cells, target_acceptance, max_boxes, max_rounds, _state_key(energy))
    if cache and energy in _CACHE and _CACHE[energy][0] == key:
        return _CACHE[energy][1]
    d = energy.dim
    dev = energy.param_device()
    cells = default_cells(d) if cells is None else int(cells)
    if cells < 1 or cells**d > max_boxes:  # Python ints: no overflow, nothing allocated yet
        raise ValueError(
            f"build_envelope: {cells} cells per axis in d={d} make {cells}^{d} boxes, more than "
            f"max_boxes={max_boxes}"
        )
    lo, hi = _initial_boxes(d, cells, torch.float64, dev)
    vlo, vhi = (t.to(torch.float64) for t in energy.interval_bounds(lo, hi))
    # bisecting a box along all axes makes 2^d children: in high dimension not even one split
    # fits the budget, and the 2^d corner table is never built (memory stays O(max_boxes · d))
    children = 2**d - 1
    for _ in range(max_rounds):
        if children > max_boxes - lo.shape[0]:
            break
        logvol = torch.log(torch.prod(hi - lo, -1))
        upper, lower = logvol - vlo, logvol - vhi
        if float(torch.logsumexp(lower, 0) - torch.logsumexp(upper, 0)) >= math.log(
            target_acceptance
        ):
            break
        top = torch.logsumexp(upper, 0)
        slack = torch.exp(upper - top) - torch.exp(lower - top)
        order = torch.argsort(slack, descending=True)
        cum = torch.cumsum(slack[order], 0) / slack.sum()
        k = int(torch.searchsorted(cum, torch.tensor(0.5, dtype=cum.dtype, device=dev))) + 1
        k = max(k, min(64, lo.shape[0]))  # a few boxes hold all the slack: keep splitting deep
        k = min(k, (max_boxes - lo.shape[0]) // children)
        if k <= 0:
            break
        split = torch.zeros(lo.shape[0], dtype=torch.bool, device=dev)
        split[order[:k]] = True
        clo, chi = bisect_boxes(lo[split], hi[split])
        cvlo, cvhi = (t.to(torch.float64) for t in energy.interval_bounds(clo, chi))
        keep = ~split
        lo = torch.cat([lo[keep], clo])
        hi = torch.cat([hi[keep], chi])
        vlo = torch.cat([vlo[keep], cvlo])
        vhi = torch.cat([vhi[keep], cvhi])
    if not torch.isfinite(vlo).all():
        raise FloatingPointError(
            "energy lower bound is not finite on some box; cannot sample exactly"
        )
    log_mass = torch.log(torch.prod(hi - lo, -1)) - vlo
    env = Envelope(lo, hi, vlo, log_mass, vhi)
    if cache:
        _CACHE[energy] = (key, env)
    return env


@torch.no_grad()
def sample_exact(
    energy: Energy,
    n: int,
    *,
    generator: torch.Generator | None = None,
    envelope: Envelope | None = None,
    batch: int = 65536,
    max_proposals: int = 200_000_000,
) -> tuple[torch.Tensor, ExactSampleInfo]:
    """Draw ``n`` exact samples (shape (n, d), float64, unit cube) from :math:`q \\propto e^{-V}`."""
    env = envelope if envelope is not None else build_envelope(energy)
    dev = env.lo.device
    probs = torch.softmax(env.log_mass, 0)
    out, n_prop, n_acc = [], 0, 0
    dt = energy.param_dtype()
    while n_acc < n:
        if n_prop >= max_proposals:
            raise RuntimeError(
                f"exact sampler: only {n_acc} of {n} samples after {n_prop} proposals "
                "(acceptance too low; the energy bounds are too loose)"
            )
        m = max(1024, min(batch, int(1.2 * (n - n_acc) / max(n_acc / max(n_prop, 1), 1e-3))))
        idx = torch.multinomial(probs, m, replacement=True, generator=generator)
        r = torch.rand(m, energy.dim, generator=generator, dtype=torch.float64, device=dev)
        u = env.lo[idx] + r * (env.hi[idx] - env.lo[idx])
        V = energy(u.to(dt)).to(torch.float64)
        log_acc = env.vlo[idx] - V
        if (log_acc > 1e-9 * (1 + V.abs())).any():
            bad = int((log_acc > 0).sum())
            raise AssertionError(
                f"exact sampler: energy bound violated at {bad} point(s) — unsound bound"
            )
        accept = torch.rand(m, generator=generator, dtype=torch.float64, device=dev).log() < log_acc
        out.append(u[accept])
        n_prop += m
        n_acc += int(accept.sum())
    samples = torch.cat(out)[:n]
    info = ExactSampleInfo(n_prop, n_acc, n_acc / n_prop, int(env.lo.shape[0]))
    return samples, info


def log_partition_bracket(env: Envelope) -> tuple[float, float]:
    r"""Sound bounds ``(lower, upper)`` on log Z (uniform base) from the envelope's boxes:
    :math:`\sum_c |C_c| e^{-\overline V_c} \le Z \le \sum_c |C_c| e^{-\underline V_c}`."""
    logvol = torch.log(torch.prod(env.hi - env.lo, -1))
    lower = float(torch.logsumexp(logvol - env.vhi, 0)) if env.vhi is not None else -math.inf
    return lower, log_partition_from_envelope(env)


def log_partition_from_envelope(env: Envelope) -> float:
    """log of the envelope's total mass, a sound *upper* bound on log Z (uniform base)."""
    return float(torch.logsumexp(env.log_mass, 0)) if env.log_mass.numel() else -math.inf
