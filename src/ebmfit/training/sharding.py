r"""A negative phase split over the ranks of a :class:`~ebmfit.training.parallel.ParallelContext`.

Two kinds of strategy (a strategy says which by its ``sharding`` attribute):

* ``"points"`` (default; shifted grid, importance sampling): stateless given the generator.
  Every rank calls the strategy with the *shared* generator, so all ranks hold the same global
  point set, and keeps its contiguous slice (:func:`~ebmfit.training.parallel.partition_range`);
  only the energy — the expensive part — is evaluated on the slice.  The union over ranks is
  the single-process negative phase, whatever the number of ranks.
* ``"chains"`` (persistent and short-run MCMC): each rank owns ``n_chains / W`` chains (and
  its share of the replay buffer) and advances them with its own stream, spawned from the
  shared generator (:func:`ebmfit._rng.spawn_generators`), so the shared generator stays in
  step on every rank.  The weights are those of the global chain set, :math:`1/n_{\text{chains}}`.

:meth:`ShardedNegatives.state_dict` is this rank's state; :meth:`load_state_dicts` takes the
states of every rank of the run that wrote a checkpoint (possibly another world size) and keeps
its share (chains are concatenated and split again).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch

from .._rng import spawn_generators
from .negatives import Negatives, NegativesInfo
from .parallel import ParallelContext, partition_range

__all__ = ["ShardedNegatives", "load_negatives_state", "negatives_state"]


def negatives_state(strategy: Any) -> dict:
    """The strategy's own state (``state_dict()`` if it has one, else ``{}``)."""
    fn = getattr(strategy, "state_dict", None)
    return fn() if callable(fn) else {}


def load_negatives_state(strategy: Any, state: dict) -> None:
    fn = getattr(strategy, "load_state_dict", None)
    if callable(fn) and state:
        fn(state)


class ShardedNegatives:
    """This rank's share of ``strategy`` (see the module docstring); a strategy itself."""

    def __init__(self, strategy: Any, ctx: ParallelContext, generator: torch.Generator | None):
        self.ctx = ctx
        self.mode = getattr(strategy, "sharding", "points")
        self.global_strategy = strategy
        if self.mode == "chains":
            n = int(strategy.n_chains)
            if n < ctx.world_size:
                raise ValueError(f"{n} chains cannot be split over {ctx.world_size} ranks")
            local = copy.copy(strategy)
            s, e = ctx.share(n)
            local.n_chains = e - s
            if hasattr(strategy, "buffer_size"):
                bs, be = ctx.share(int(strategy.buffer_size))
                local.buffer_size = max(be - bs, local.n_chains)
            local.step = copy.deepcopy(strategy.step)
            self.n_global = n
            self.strategy = local
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            dev = generator.device if generator is not None else None
            self.generator = spawn_generators(seed, ctx.world_size, dev)[ctx.rank]
        else:
            self.strategy = strategy
            self.generator = None

    @property
    def last_info(self) -> NegativesInfo | None:
        """The local strategy's diagnostics of its last call (None if it keeps none)."""
        return getattr(self.strategy, "last_info", None)

    def reset(self) -> None:
        if hasattr(self.strategy, "reset"):
            self.strategy.reset()

    def __call__(self, energy: Any, generator: torch.Generator | None = None) -> Negatives:
        if self.mode == "chains":
            neg = self.strategy(energy, self.generator)
            logw = torch.full_like(neg.log_weights, -math.log(self.n_global))
            return Negatives(neg.points, logw, neg.self_normalize)
        neg = self.strategy(energy, generator)
        s, e = self.ctx.share(neg.points.shape[0])
        return Negatives(neg.points[s:e], neg.log_weights[s:e], neg.self_normalize)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        out = {"strategy": negatives_state(self.strategy)}
        if self.generator is not None:
            out["generator"] = self.generator.get_state()
        return out

    def load_state_dicts(self, states: list[dict]) -> None:
        """Restore from the states of every rank of the writing run (in rank order)."""
        W = self.ctx.world_size
        if len(states) == W:
            mine = states[self.ctx.rank]
            load_negatives_state(self.strategy, mine.get("strategy", {}))
            if self.generator is not None and "generator" in mine:
                self.generator.set_state(mine["generator"])
            return
        if self.mode != "chains":  # the same global state on every rank (a pool, or none)
            load_negatives_state(self.strategy, states[0].get("strategy", {}))
            return
        parts = [s.get("strategy", {}) for s in states]
        bufs = [p["buffer"] for p in parts if p.get("buffer") is not None]
        st = dict(parts[0])
        if bufs:
            allb = torch.cat(bufs)
            s, e = partition_range(allb.shape[0], self.ctx.rank, W)
            st["buffer"] = allb[s:e].clone()
            self.strategy.buffer_size = e - s
        load_negatives_state(self.strategy, st)
        if self.ctx.is_main:
            warnings.warn(
                f"checkpoint written by {len(states)} rank(s), resuming on {W}: the chains were "
                "split again and each rank's chain stream starts afresh",
                stacklevel=3,
            )
