"""Launching ``ebmfit`` as N local processes (torchrun on the loopback interface).

``ebmfit fit ... --nproc N`` re-runs its own command line through :func:`launch_local`; each
rank then runs the very fit of one process with a
:class:`~ebmfit.training.parallel.ParallelContext` (see ``docs/distributed.md``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from .training.parallel import is_torchrun_worker

__all__ = ["argv_from_click", "is_torchrun_worker", "launch_local"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_env(env: dict) -> dict:
    env = dict(env)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if sys.platform.startswith("linux") and "lo" in {n for _, n in socket.if_nameindex()}:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def launch_local(
    nproc: int,
    args: Sequence[str],
    *,
    module: str = "ebmfit",
    timeout: float | None = None,
    env: dict | None = None,
) -> int:
    """Run ``python -m <module> <args>`` as ``nproc`` ranks on this machine (torchrun, loopback).

    Returns torchrun's exit status: non-zero as soon as one rank fails (torchrun then stops the
    others, and a line saying so goes to stderr).  Each rank gets ``OMP_NUM_THREADS = cores // nproc`` unless it is set.
    """
    if nproc < 1:
        raise ValueError("nproc must be >= 1")
    env = _loopback_env(os.environ if env is None else env)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "--max-restarts",
        "0",
        "-m",
        module,
        *args,
    ]
    rc = subprocess.run(cmd, env=env, timeout=timeout, check=False).returncode
    if rc:
        print(
            f"error: the {nproc}-process run failed (torchrun exit status {rc}); the failing "
            "rank's message is above. Checkpoints written so far are intact (use --resume).",
            file=sys.stderr,
            flush=True,
        )
    return rc


def argv_from_click(ctx: Any, exclude: Sequence[str] = ("nproc",)) -> list[str]:
    """Rebuild the command line of the running click/typer command (for re-launching it).

    Parameters named in ``exclude`` are left out: ``--nproc`` must not reach torchrun's own
    argument parser, which would reject it as an ambiguous abbreviation of
    ``--nproc-per-node``; ranks know they are ranks from torchrun's environment.
    """
    argv = [ctx.info_name]
    for p in ctx.command.params:
        v = ctx.params.get(p.name)
        if p.name in exclude or p.name not in ctx.params:
            continue
        if p.param_type_name == "argument":
            argv += [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        elif getattr(p, "is_flag", False):
            if v and p.opts:
                argv.append(p.opts[0])
            elif not v and p.secondary_opts:
                argv.append(p.secondary_opts[0])
        elif v is not None:
            for x in v if isinstance(v, (list, tuple)) else [v]:
                argv += [p.opts[0], str(x)]
    return argv
