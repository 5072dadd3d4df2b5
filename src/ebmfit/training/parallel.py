r"""A small parallel context: where this process sits and the few collectives a fit needs.

One fit loop serves one process and N processes.  The loop is written against
:class:`ParallelContext`; with ``world_size == 1`` (the default, no process group) every
collective is the identity and the loop is exactly the single-process loop.  Under
``torchrun`` (:func:`init_parallel`) the collectives go through ``torch.distributed`` (gloo on
CPUs, nccl on GPUs).

What the loops reduce:

* :func:`~ebmfit.training.fit_convex` — the data enter only through the mean feature vector
  :math:`\bar\phi = \frac1n\sum_i\phi(u_i)`: each rank sums the features of its rows and one
  :meth:`ParallelContext.all_reduce_sum` gives every rank the same :math:`\bar\phi`; the convex
  solve on the quadrature grid is then the same deterministic computation on every rank.
* :func:`~ebmfit.training.fit_sgd` — every rank draws the *same* global batch and the same
  stateless negative phase from the shared generator and evaluates its slice of both; the
  normaliser of π is global (one :meth:`ParallelContext.all_gather` of a few statistics) and
  the gradients are summed (:meth:`ParallelContext.all_reduce_grads`), so N processes take the
  single-process step to rounding.  Persistent chains are sharded: each rank advances its own
  chains from a rank-specific stream (:func:`ebmfit._rng.spawn_generators`).

``torch.distributed`` is imported lazily, so importing this module (and the samplers) does not
load it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_TIMEOUT",
    "ParallelContext",
    "init_parallel",
    "is_torchrun_worker",
    "partition_range",
    "shutdown_parallel",
    "step_seed",
]

#: Default timeout of process-group set-up and of every collective.
DEFAULT_TIMEOUT = timedelta(seconds=60)


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def partition_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share ``[start, stop)`` of ``n`` items (sizes differ by ≤ 1)."""
    q, r = divmod(int(n), int(world_size))
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


def step_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``seed`` and non-negative ``keys`` (the same on every rank)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *map(int, keys)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class ParallelContext:
    """Where this process sits: ``rank`` of ``world_size``, its compute ``device``.

    ``backend`` is None when no process group is initialised (one process; every collective
    is then the identity).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when collectives go through a process group."""
        if self.backend is None or self.world_size == 1:
            return False
        dist = _dist()
        return dist.is_available() and dist.is_initialized()

    @property
    def comm_device(self) -> torch.device:
        """Device of the tensors handed to collectives (CUDA for nccl, CPU otherwise)."""
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def share(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share ``[start, stop)`` of ``n`` items."""
        return partition_range(n, self.rank, self.world_size)

    # ---------------------------------------------------------------- collectives
    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of ``x`` (same shape on every rank); a new tensor."""
        if not self.active:
            return x.clone()
        xc = x.detach().to(self.comm_device).clone()
        _dist().all_reduce(xc)
        return xc.to(x.device)

    def all_reduce_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of ``x``."""
        return self.all_reduce_sum(x) / self.world_size

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """Stack the same-shape ``x`` of every rank: shape (W, *x.shape), in rank order."""
        if not self.active:
            return x.unsqueeze(0)
        xc = x.detach().to(self.comm_device).contiguous()
        out = [torch.empty_like(xc) for _ in range(self.world_size)]
        _dist().all_gather(out, xc)
        return torch.stack(out).to(x.device)

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows of ``x`` (n_r may differ) in rank order."""
        if not self.active:
            return x
        n = self.all_gather(torch.tensor([x.shape[0]], dtype=torch.int64)).reshape(-1).tolist()
        pad = torch.zeros((max(n) - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
        allx = self.all_gather(torch.cat([x, pad]))
        return torch.cat([allx[r, : n[r]] for r in range(self.world_size)])

    def all_reduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace every parameter's gradient by its sum over ranks (one flat all-reduce)."""
        if not self.active:
            return
        ps = [p for p in params if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(self.comm_device)
        _dist().all_reduce(flat)
        flat = flat.to(ps[0].device)
        i = 0
        for p in ps:
            k = p.numel()
            p.grad = flat[i : i + k].view_as(p).to(p.dtype).clone()
            i += k

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for small things: a base, a checkpoint)."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        _dist().broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order."""
        if not self.active:
            return [obj]
        out: list = [None] * self.world_size
        _dist().all_gather_object(out, obj)
        return out

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers."""
        if not self.active:
            return
        dist = _dist()
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                tc = t.detach().to(self.comm_device).clone()
                dist.broadcast(tc, src=0)
                t.copy_(tc.to(t.device))

    def barrier(self) -> None:
        if self.active:
            _dist().barrier()


def is_torchrun_worker() -> bool:
    """True in a process started by ``torchrun`` / ``torch.distributed.run``."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_parallel(
    backend: str | None = None,
    *,
    timeout: timedelta = DEFAULT_TIMEOUT,
    device: str | torch.device | None = None,
) -> ParallelContext:
    """Join the process group described by torchrun's environment, or a one-process context.

    ``backend`` defaults to nccl when CUDA is available and gloo otherwise.  ``timeout`` bounds
    the rendezvous and every later collective, so a rank that vanishes cannot make the others
    wait for ever.  Outside torchrun (or with ``WORLD_SIZE=1``) no group is created.
    """
    if not is_torchrun_worker() or int(os.environ["WORLD_SIZE"]) == 1:
        dev = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        return ParallelContext(device=torch.device(dev))
    dist = _dist()
    local = int(os.environ["LOCAL_RANK"])
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (
            device is None or torch.device(device).type == "cuda"
        )
        backend = backend or ("nccl" if use_cuda else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(torch.device(f"cuda:{local}"))
        dist.init_process_group(backend=backend, timeout=timeout)
    backend = dist.get_backend()
    if backend == "nccl":
        device = torch.device(f"cuda:{local}")
    elif device is None:
        device = torch.device("cpu")
    return ParallelContext(
        dist.get_rank(), dist.get_world_size(), local, torch.device(device), backend
    )


def shutdown_parallel() -> None:
    """Leave the process group (if any)."""
    if "torch.distributed" not in __import__("sys").modules:
        return
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
