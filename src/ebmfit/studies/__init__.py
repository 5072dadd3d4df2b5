"""The seed's theorems as runnable studies: each returns a result with ``to_markdown()`` and
``plot(path)``; :func:`run_study` runs one by name and writes ``NAME.md`` and ``NAME.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._common import write_report
from .approximation import ApproximationResult, approximation_study
from .errata import ErrataResult, errata_study
from .identity import IdentityResult, identity_study
from .zeros import ZerosResult, zeros_study

__all__ = [
    "STUDIES",
    "ApproximationResult",
    "ErrataResult",
    "IdentityResult",
    "ZerosResult",
    "approximation_study",
    "errata_study",
    "identity_study",
    "run_study",
    "zeros_study",
]

STUDIES = {
    "identity": identity_study,
    "approximation": approximation_study,
    "errata": errata_study,
    "zeros": zeros_study,
}


def run_study(
    name: str,
    *,
    quick: bool = False,
    out_dir: str | Path | None = None,
    random_state: int = 0,
) -> Any:
    """Run the study ``name`` (one of :data:`STUDIES`) with ``random_state``; write its report
    into ``out_dir``."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
    result = STUDIES[name](quick=quick, random_state=random_state)
    if out_dir is not None:
        write_report(result, out_dir, name)
    return result
