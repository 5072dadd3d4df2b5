"""Progress display shared by the fit loops.

On a terminal it is a tqdm bar.  When stderr is not a terminal (CI logs, pipes, files) a bar
writes ``\\r`` frames that never end a line, so instead one plain line is printed every
``every`` seconds and one at the end.  The validation NLL is shown in the user's units when
the caller passes the box's log-volume (``Progress(nll_offset=box.log_volume)``): the loops
work on the unit cube, where the NLL is smaller by exactly that constant.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["Progress", "nll_offset", "progress_bar"]


@dataclass(frozen=True)
class Progress:
    """Options of the progress display; pass as ``progress=`` where ``True`` is accepted."""

    nll_offset: float = 0.0  # added to unit-cube NLLs: the box's log-volume
    every: float = 5.0  # seconds between lines when stderr is not a terminal


def _is_tty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Lines:
    """A tqdm-like object printing one line every ``every`` seconds (and at close)."""

    def __init__(
        self, iterable: Iterable | None, total: int | None, desc: str, every: float, stream: IO[str]
    ) -> None:
        self.iterable, self.total, self.desc = iterable, total, desc
        self.every, self.stream = every, stream
        self.n, self.postfix = 0, ""
        self.t0 = self.last = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for x in self.iterable:
                yield x
                self.update(1)
        finally:  # also when the loop breaks early
            self.close()

    def _line(self) -> None:
        tot = f"/{self.total}" if self.total is not None else ""
        post = f" {self.postfix}" if self.postfix else ""
        el = time.monotonic() - self.t0
        self.stream.write(f"{self.desc}: {self.n}{tot} [{el:.0f}s]{post}\n")
        self.stream.flush()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line()

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line()


class _Off:
    def __init__(self, iterable: Iterable | None = None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(
    progress: bool | Progress,
    *,
    desc: str,
    total: int | None = None,
    iterable: Iterable | None = None,
    stream: IO[str] | None = None,
) -> Any:
    """A bar (terminal), a line printer (not a terminal) or nothing (``progress`` false).

    ``progress``: bool or :class:`Progress`.  The result has tqdm's ``update``,
    ``set_postfix``, ``close`` and iteration over ``iterable``.
    """
    if not progress:
        return _Off(iterable)
    opts = progress if isinstance(progress, Progress) else Progress()
    stream = sys.stderr if stream is None else stream
    if iterable is not None and total is None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    if _is_tty(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=False, file=stream)
    return _Lines(iterable, total, desc, opts.every, stream)


def nll_offset(progress: bool | Progress) -> float:
    """The constant that puts a unit-cube NLL in the user's units (0 unless given)."""
    return progress.nll_offset if isinstance(progress, Progress) else 0.0
