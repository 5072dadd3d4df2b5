r"""Training checkpoints: written atomically, read without executing code.

A checkpoint is one file holding a dict: for each SGD loop of a fit (:class:`RunCheckpoint`)
the model's and the optimiser's state, the step, the configuration the loop was started with,
the negative phase's state (one entry per rank) and the state of the loop's explicit
``torch.Generator`` (no global random state is saved or restored).  It is written by one process (rank 0 in a
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
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "CheckpointSection",
    "RunCheckpoint",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

FORMAT = "ebmfit-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, of an unknown format or does not fit the run."""


def _tmp_prefix(path: Path) -> str:
    return path.name + "."


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> None:
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


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
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


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
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


class CheckpointSection:
    """One fit loop's slot in a :class:`RunCheckpoint` (what ``fit_sgd(checkpoint=...)`` takes).

    ``every``: write after every ``every``-th validation of the loop (and at its end).
    """

    def __init__(self, run: RunCheckpoint, key: str, every: int):
        self.run, self.key, self.every = run, key, max(1, int(every))

    def load(self) -> dict[str, Any] | None:
        """The saved state of this loop, or None (a new run, or no such section yet)."""
        return self.run.sections.get(self.key)

    def save(self, state: dict[str, Any]) -> None:
        self.run.sections[self.key] = state
        self.run.write()

    def check(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Refuse to resume a loop whose settings differ from the checkpoint's."""
        keys = sorted(set(old) | set(new))
        diff = [f"{k}: checkpoint {old.get(k)!r} vs now {new.get(k)!r}" for k in keys
                if old.get(k) != new.get(k)]  # fmt: skip
        if diff:
            raise CheckpointError(
                f"{self.run.path}: the checkpoint belongs to a run with other settings "
                f"({'; '.join(diff)}); resume with the same data and options, or start a new "
                "run with another checkpoint path"
            )


class RunCheckpoint:
    """The checkpoint file of one fit: a section per SGD loop, in the order the loops run.

    ``EnergyDensity.fit(X, checkpoint=RunCheckpoint(path, resume=True))`` fits exactly what
    ``fit(X)`` fits; each SGD-trained candidate writes its loop's state to its own section
    (:func:`~ebmfit.training.fit_sgd`), atomically.  With ``resume`` an existing file is read
    first: finished loops are reloaded, an interrupted one continues where it stopped, and
    the fit carries on.  Without ``resume`` an existing file is replaced.  Only rank 0 of a
    parallel run writes (the fit loop sees to that).
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = False, every: int = 1):
        self.path = Path(path)
        self.resume = bool(resume)
        self.every = int(every)
        self.sections: dict[str, dict[str, Any]] = {}
        self._next = 0
        if self.resume and self.path.is_file():
            remove_stale_temporaries(self.path)
            self.sections = dict(load_checkpoint(self.path).get("sections", {}))

    def section(self) -> CheckpointSection:
        """The next loop's section (``"sgd-0"``, ``"sgd-1"``, ...)."""
        key = f"sgd-{self._next}"
        self._next += 1
        return CheckpointSection(self, key, self.every)

    def write(self) -> None:
        save_checkpoint({"sections": self.sections}, self.path)


def _to_cpu(obj: Any) -> Any:
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
