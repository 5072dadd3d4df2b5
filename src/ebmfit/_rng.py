r"""Randomness in one place: ``random_state`` / ``generator`` → ``torch.Generator``, and streams.

Every stochastic function in ebmfit takes an explicit ``generator=`` (a ``torch.Generator``) or
``random_state=`` (an int, a ``numpy.random.SeedSequence`` / ``Generator``, a
``torch.Generator`` or None).  This module turns either into a generator on the right device
and spawns independent streams; nothing here (or anywhere in the library) reads or writes the
global torch or numpy RNG.  ``None`` means fresh OS entropy (``SeedSequence()``), never the
global state.

Independent streams come from :meth:`numpy.random.SeedSequence.spawn`, so the stream of
worker k (a process rank, a replicate, a chain block) does not depend on how many others
there are.

    >>> g = as_generator(0)
    >>> a, b = spawn_generators(0, 2)
    >>> bool(torch.rand(1, generator=a) != torch.rand(1, generator=b))
    True
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "RandomState",
    "as_generator",
    "as_numpy_rng",
    "as_seed_sequence",
    "spawn_generators",
    "spawn_seeds",
]

RandomState = (
    int | np.integer | np.random.SeedSequence | np.random.Generator | torch.Generator | None
)

_MAX_SEED = 2**63 - 1


def as_seed_sequence(random_state: RandomState = None) -> np.random.SeedSequence:
    """A ``SeedSequence`` for ``random_state``; a generator contributes one draw (advanced)."""
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    if isinstance(random_state, torch.Generator):
        draw = torch.randint(0, _MAX_SEED, (1,), generator=random_state, device=random_state.device)
        return np.random.SeedSequence(int(draw))
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(int(random_state.integers(0, _MAX_SEED)))
    if random_state is None:
        return np.random.SeedSequence()
    return np.random.SeedSequence(int(random_state))


def _seed_of(ss: np.random.SeedSequence) -> int:
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ [1, 2**32]) & _MAX_SEED


def as_generator(
    random_state: RandomState = None, device: torch.device | str | None = None
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default CPU).

    A ``torch.Generator`` already on that device is returned unchanged (and advanced in place by
    its users); one on another device seeds a new generator there from one draw.  An int gives
    ``torch.Generator(device).manual_seed(int)`` — the same stream as torch's own idiom, so
    seeded results do not change when code moves to this helper.
    """
    dev = torch.device("cpu" if device is None else device)
    if isinstance(random_state, torch.Generator) and random_state.device.type == dev.type:
        return random_state
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        return torch.Generator(device=dev).manual_seed(int(random_state))
    return torch.Generator(device=dev).manual_seed(_seed_of(as_seed_sequence(random_state)))


def as_numpy_rng(random_state: RandomState = None) -> np.random.Generator:
    """A ``numpy.random.Generator`` (a Generator is returned unchanged; an int seeds one)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, torch.Generator):
        return np.random.default_rng(as_seed_sequence(random_state))
    return np.random.default_rng(random_state)


def spawn_seeds(random_state: RandomState, n: int) -> list[int]:
    """``n`` independent integer seeds (``SeedSequence.spawn``)."""
    return [_seed_of(s) for s in as_seed_sequence(random_state).spawn(int(n))]


def spawn_generators(
    random_state: RandomState, n: int, device: torch.device | str | None = None
) -> list[torch.Generator]:
    """``n`` independent ``torch.Generator`` streams on ``device``."""
    dev = torch.device("cpu" if device is None else device)
    return [torch.Generator(device=dev).manual_seed(s) for s in spawn_seeds(random_state, n)]
