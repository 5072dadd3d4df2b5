r"""What :func:`~ebmfit.training.fit_sgd` reduces over ranks, and its checkpointed state.

**Global statistics of a step.**  Rank r holds the rows :math:`\mathcal B_r` of the global
batch (size B) and the negatives :math:`K_r` with logits :math:`\ell_k`.  It sends

.. math:: L_r = \operatorname{logsumexp}_{k\in K_r}\ell_k,\quad
   m_r = \sum_{k\in K_r} e^{\ell_k - L_r} V_k,\quad s_r = \sum_{k\in K_r} e^{2(\ell_k - L_r)},

the data-energy sum and a finiteness flag (one all-gather of a few numbers).  With
:math:`L = \operatorname{logsumexp}_r L_r` every rank has the global
:math:`\pi_k = e^{\ell_k - L}`, :math:`\sum_k\pi_k V_k = \sum_r e^{L_r - L} m_r` and
:math:`\sum_k\pi_k^2 = \sum_r e^{2(L_r - L)} s_r` (the ESS), so the energy gap, the NLL
estimate and every decision of the loop are the same on every rank.

**Checkpointed state.**  The loop's state after a validation: the energy, Adam, the schedule,
the best and last good states, the history, the counters, the shared generator
(``Generator.get_state()``: no global RNG state is read or written), the negative phase's
state of every rank and the stability monitor's state.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from .parallel import ParallelContext
from .sharding import ShardedNegatives, load_negatives_state, negatives_state

if TYPE_CHECKING:
    from ..checkpoint import CheckpointSection

__all__ = [
    "LoopObjects",
    "StepStats",
    "global_step_stats",
    "load_state",
    "save_state",
    "sgd_config",
]


class StepStats(NamedTuple):
    log_norm: float  # global logsumexp of the logits (the normaliser of π)
    mean_v_data: float  # mean energy over the global batch
    gap: float  # mean V(data) − Σ π V(negatives); NaN when some rank saw a non-finite value
    lse_z: float  # global logsumexp(log w − V(negatives))
    pi_sq: float  # Σ π² over all negatives
    n_points: int  # number of negatives over all ranks
    info: dict  # chain diagnostics averaged over ranks


def global_step_stats(
    par: ParallelContext,
    V_data: torch.Tensor | None,
    V_neg: torch.Tensor | None,
    neg: Any,
    batch_size: int,
    info: dict | None = None,
) -> StepStats:
    """Combine the ranks' statistics of one step (see the module docstring).

    A rank whose negative phase failed passes ``None``s: it still joins the collective, and
    every rank then sees a non-finite step.
    """
    nan = math.nan
    info = info or {}
    acc, eps = info.get("acceptance_rate", nan), info.get("step_size", nan)
    if V_neg is None or V_data is None:
        loc = [nan, nan, nan, nan, nan, 0.0, 0.0, float(acc), float(eps)]
    else:
        vn = V_neg.detach().to(torch.float64)
        logits = neg.log_weights.to(vn) - vn if neg.self_normalize else neg.log_weights.to(vn)
        ok = bool(torch.isfinite(vn).all()) and bool(torch.isfinite(V_data.detach()).all())
        if vn.numel():
            lse = torch.logsumexp(logits, 0)
            p = torch.exp(logits - lse)
            m, s2 = float((p * vn).sum()), float((p * p).sum())
            lse_z = float(torch.logsumexp(neg.log_weights.to(vn) - vn, 0))
            lse = float(lse)
        else:
            lse, m, s2, lse_z = -math.inf, 0.0, 0.0, -math.inf
        sv = float(V_data.detach().to(torch.float64).sum())
        loc = [lse, m, s2, lse_z, sv, float(vn.numel()), float(ok), float(acc), float(eps)]
    g = par.all_gather(torch.tensor(loc, dtype=torch.float64))
    L = torch.logsumexp(g[:, 0], 0)
    a = torch.nan_to_num(torch.exp(g[:, 0] - L), nan=0.0)
    mean_v = float(g[:, 4].sum()) / batch_size
    gap = mean_v - float((a * g[:, 1]).sum())
    if not bool((g[:, 6] == 1).all()):
        gap = nan
    out_info = {}
    for j, k in ((7, "acceptance_rate"), (8, "step_size")):
        if k in info:
            out_info[k] = float(g[:, j].mean())
    return StepStats(
        float(L),
        mean_v,
        gap,
        float(torch.logsumexp(g[:, 3], 0)),
        float((a * a * g[:, 2]).sum()),
        int(g[:, 5].sum()),
        out_info,
    )


def sgd_config(energy: Any, negatives: Any, **settings: Any) -> dict:
    """A plain description of the run, checked against a checkpoint on resume."""
    try:
        spec = energy.spec()
    except Exception:  # energies wrapping code have no spec; the weights still must fit
        spec = {"family": getattr(energy, "family", type(energy).__name__)}
    strat = getattr(negatives, "global_strategy", negatives)
    neg = {"kind": type(strat).__name__}
    for k in ("n_chains", "n_samples", "points_per_axis", "n_steps", "k"):
        if hasattr(strat, k):
            neg[k] = int(getattr(strat, k))
    return {"energy": spec, "negatives": neg, **settings}


def _tracker_state(tracker: Any) -> dict:
    return {
        "interval": list(tracker.interval),
        "run": dict(tracker.run),
        "active": dict(tracker.active),
        "warned": sorted(tracker.warned),
        "gaps": list(tracker.gaps),
        "events": list(tracker.events),
    }


def _load_tracker(tracker: Any, st: dict) -> None:
    tracker.interval = list(st["interval"])
    tracker.run = dict(st["run"])
    tracker.active = dict(st["active"])
    tracker.warned = set(st["warned"])
    tracker.gaps = deque(st["gaps"], maxlen=tracker.gaps.maxlen)
    tracker.events = list(st["events"])


def _neg_state(negatives: Any) -> dict:
    if isinstance(negatives, ShardedNegatives):
        return negatives.state_dict()
    return {"strategy": negatives_state(negatives)}


class LoopObjects(NamedTuple):
    """The stateful objects of one :func:`~ebmfit.training.fit_sgd` run that a checkpoint
    saves and restores besides the loop's counters (``loop``)."""

    energy: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any  # the learning-rate schedule
    generator: torch.Generator | None  # the generator shared by all ranks
    negatives: Any  # the negative phase (a ShardedNegatives on several ranks)
    tracker: Any  # the stability monitor's state


def save_state(
    section: CheckpointSection, par: ParallelContext, cfg: dict, loop: dict, objs: LoopObjects
) -> None:
    """Write the loop's state (rank 0 writes; every rank contributes its negative phase)."""
    energy, opt, sched, generator, negatives, tracker = objs
    neg_states = par.all_gather_object(_neg_state(negatives))
    if par.is_main:
        state = {
            "config": cfg,
            "world_size": par.world_size,
            **loop,
            "energy": energy.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "generator": None if generator is None else generator.get_state(),
            "negatives": neg_states,
            "tracker": _tracker_state(tracker),
        }
        section.save(state)
    par.barrier()  # everyone leaves only once the file is in place


def load_state(
    section: CheckpointSection | None, par: ParallelContext, cfg: dict, objs: LoopObjects
) -> dict | None:
    """Restore the loop from ``section`` (rank 0 reads, everyone receives); None if empty."""
    if section is None:
        return None
    energy, opt, sched, generator, negatives, tracker = objs
    st = par.broadcast_object(section.load() if par.is_main else None)
    if st is None:
        return None
    section.check(st.get("config", {}), cfg)
    energy.load_state_dict(st["energy"])
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    if generator is not None and st.get("generator") is not None:
        generator.set_state(st["generator"])
    states = list(st["negatives"])
    if isinstance(negatives, ShardedNegatives):
        negatives.load_state_dicts(states)
    else:
        mine = dict(states[0].get("strategy", {}))
        bufs = [
            s["strategy"]["buffer"]
            for s in states
            if s.get("strategy", {}).get("buffer") is not None
        ]
        if len(states) > 1 and bufs:  # chains of several ranks: one process takes them all
            mine["buffer"] = torch.cat(bufs)
            negatives.buffer_size = mine["buffer"].shape[0]
        load_negatives_state(negatives, mine)
    _load_tracker(tracker, st["tracker"])
    good = (copy.deepcopy(energy.state_dict()), copy.deepcopy(opt.state_dict()))
    return {**st, "good": good, "n_val": st["n_val"]}
