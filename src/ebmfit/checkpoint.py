r"""Training checkpoints: written atomically, read without executing code.

A checkpoint is one file holding a dict: the model's and the optimiser's state, the step, the
configuration the run was started with, the negative phase's state (one entry per rank) and
the random-number-generator states of every rank.  It is written by one process (rank 0 in a
distributed run) to a temporary file in the same folder, flushed to disk and moved over the old
file with :func:`os.replace`, which is atomic on POSIX and Windows: a reader (or a run killed
in the middle of a write) sees either the previous checkpoint or the new one, never a torn
file.  It is read with ``torch.load(weights_only=True)``, which unpickles tensors and plain
containers only.

>>> import tempfile, pathlib, torch
>>> path = pathlib.Path(tempfile.mkdtemp()) / "run.ckpt"
>>> save_checkpoint({"step": 3, "w": torch.ones(2)}, path)
>>> load_checkpoint(path)["step"]
3
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "remove_stale_temporaries",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT = "ebmfit-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, of an unknown format or does not fit the run."""


def _tmp_prefix(path: Path) -> str:
    return path.name + "."


def save_checkpoint(payload: dict[str, Any], path) -> None:
    """Write ``payload`` (tensors and plain containers) to ``path`` atomically.

    The format tag and version are added.  Tensors are moved to the CPU so the file loads on a
    machine without the device it was written on.  On any error the temporary file is removed
    and the previous checkpoint at ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "version": VERSION, **_to_cpu(payload)}
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def load_checkpoint(path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        doc = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupted?): {e}"
        ) from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ebmfit checkpoint")
    if int(doc.get("version", -1)) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {doc.get('version')} is newer than this ebmfit "
            f"understands ({VERSION})"
        )
    return doc


def remove_stale_temporaries(path) -> list[Path]:
    """Delete temporary files a killed writer left next to ``path``; returns what was removed.

    Call it only from the single process that writes ``path``.
    """
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for p in path.parent.glob(_tmp_prefix(path) + "*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def capture_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's global RNG states: torch (CPU and, if used, the CUDA device), numpy, random.

    ebmfit itself draws from explicit generators; these are kept so that user code relying on
    global state (or a future per-rank sampler) resumes where it stopped.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the global state is what is saved
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.as_tensor(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _python_state_to_plain(random.getstate()),
    }
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), torch.device(device))


def _python_state_to_plain(s):
    version, internal, gauss = s
    return [int(version), list(internal), gauss]


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return type(obj)((k, _to_cpu(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    return obj


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
