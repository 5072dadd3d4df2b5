"""The ``ebmfit`` command line: demo, fit, score, sample, plot, info, certify, study.

Every command calls the public API (EnergyDensity, io, plotting); nothing lives only here.

Failures are uniform (see ``docs/robustness.md``): a bad flag, file or data set exits with
code 2 and exactly one line ``error: ...`` on stderr naming the problem, nothing on stdout.
Outputs are checked *before* any work (:func:`check_output_path`): ``-`` means standard output
for text outputs (CSV, JSON) and is refused for binary ones (model files, images); an output
that is one of the command's inputs is refused; a missing or unwritable folder is named.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer
from typer.core import TyperGroup

from .domain import DataError

if TYPE_CHECKING:
    from .estimator import EnergyDensity
    from .model import SampleInfo

try:  # typer >= 0.25 vendors click as typer._click (and from 0.29 no longer installs click)
    from typer._click import exceptions as _tc
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import exceptions as _tc


def _exceptions(name: str) -> tuple[type[BaseException], ...]:
    """The exception class ``name`` of typer's click and, where installed, of click itself
    (older typer releases, or a user's own click code, raise the latter)."""
    found = [getattr(_tc, name, None)]
    try:
        from click import exceptions as _ce
    except ImportError:
        pass
    else:
        found.append(getattr(_ce, name, None))
    return tuple({c for c in found if c is not None})


_CLICK_ERRORS = _exceptions("ClickException")
_NO_ARGS = _exceptions("NoArgsIsHelpError")
_ABORT = (*_exceptions("Abort"), typer.Abort)

STDOUT = "-"
SEED_MAX = 2**32 - 1
MAX_SAMPLES = 10**8


def _one_line(msg: str) -> str:
    return "; ".join(part.strip() for part in str(msg).splitlines() if part.strip())


def _describe(e: BaseException) -> str:
    """The message a user sees for an exception that escaped a command."""
    from .io import ModelFileError
    from .training.fit import FitError

    if isinstance(e, OSError) and e.strerror:
        where = e.filename if e.filename is not None else ""
        return f"{where}: {e.strerror}" if where else e.strerror
    known = (ValueError, TypeError, FitError, FloatingPointError, RuntimeError, MemoryError)
    if isinstance(e, (DataError, ModelFileError, *known, NotImplementedError, OSError)):
        return str(e) or type(e).__name__
    return (
        f"internal error ({type(e).__name__}: {e}); please report it "
        "(EBMFIT_DEBUG=1 shows the traceback)"
    )


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """Warnings in the CLI: one ``warning: ...`` line on stderr, no source location."""
    typer.echo(f"warning: {_one_line(str(message))}", err=True)


class _OneLineErrors(TyperGroup):
    """Click group whose every failure is one ``error:`` line on stderr and exit code 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS:
            return super().main(args, prog_name, complete_var, standalone_mode=True, **extra)
        except _CLICK_ERRORS as e:
            typer.echo(f"error: {_one_line(e.format_message())}", err=True)
            sys.exit(2)
        except _ABORT:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except Exception as e:
            if os.environ.get("EBMFIT_DEBUG"):
                raise
            typer.echo(f"error: {_one_line(_describe(e))}", err=True)
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Normalized energy-based density models on a box.",
)


def _fail(msg: str) -> None:
    typer.secho(f"error: {_one_line(msg)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _write(path: Path, write: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Run ``write(*args, **kwargs)``, turning an OS error (no folder, no permission) into an error
    message and exit code 2."""
    try:
        write(*args, **kwargs)
    except OSError as e:
        _fail(f"cannot write {path}: {e.strerror or e}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output_path(
    out: Path | None,
    inputs: Sequence[Path] = (),
    *,
    what: str,
    text: bool,
    suffixes: tuple[str, ...] | None = None,
    create_parent: bool = False,
) -> Path | str | None:
    """Check an output path before any work; returns it, :data:`STDOUT` for ``-``, or None.

    ``-`` is standard output for ``text`` outputs and refused for binary ones.  Refused too: a
    folder, an output that is (after symlinks and hard links) one of ``inputs``, a missing
    folder (unless ``create_parent``), an unwritable folder or file, and a suffix not in
    ``suffixes``.  Every refusal is one ``error:`` line and exit code 2.
    """
    if out is None:
        return None
    if str(out) == STDOUT:
        if text:
            return STDOUT
        _fail(f"the {what} is binary and cannot go to standard output ('-'); give a file name")
    out = Path(out)
    if out.is_dir():
        _fail(f"cannot write the {what} to {out}: it is a folder")
    for inp in inputs:
        if inp is not None and str(inp) != STDOUT and _same_file(out, Path(inp)):
            _fail(f"refusing to overwrite the input file {inp} with the {what} (-o {out})")
    if suffixes is not None and out.suffix.lower().lstrip(".") not in suffixes:
        _fail(
            f"cannot write the {what} to {out}: unknown format {out.suffix or '(no suffix)'!r}; "
            f"use one of {', '.join('.' + s for s in suffixes)}"
        )
    parent = out.parent
    while create_parent and not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.exists():
        _fail(f"cannot write {out}: the folder {out.parent} does not exist")
    if not parent.is_dir():
        _fail(f"cannot write {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        _fail(f"cannot write {out}: permission denied")
    return out


def _check_folder(out: Path, what: str) -> Path:
    """An output folder: may exist (as a folder) or not (it is created)."""
    if out.exists() and not out.is_dir():
        _fail(f"the {what} {out} exists and is not a folder")
    return out


def _parse_bounds(s: str | None, d: int, name: str) -> list[float] | None:
    if s is None:
        return None
    try:
        v = [float(t) for t in s.split(",")]
    except ValueError:
        _fail(f"--{name} must be a number or a comma-separated list of numbers, got {s!r}")
    if not all(np.isfinite(v)):
        _fail(f"--{name} must be finite numbers, got {s!r}")
    if len(v) == 1:
        return v * d
    if len(v) != d:
        _fail(f"--{name} has {len(v)} values but the data has {d} columns")
    return v


def _model_names(est: EnergyDensity) -> list[str] | None:
    names = getattr(est, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _read_points(data: Path, est: EnergyDensity, header: bool | None) -> np.ndarray:
    """Read a CSV of points for ``est``: columns matched by name when both sides have names."""
    from .csvio import align_columns, read_csv

    names = _model_names(est)
    X, cols = read_csv(data, header=header, expected_names=names)
    X = align_columns(X, cols, names, source=str(data))
    if X.shape[1] != est.n_features_in_:
        _fail(f"{data} has {X.shape[1]} column(s) but the model has {est.n_features_in_}")
    return X


_HEADER_HELP = "the first CSV row is a header (--header) or data (--no-header); default: decide"


def _image_formats() -> tuple[str, ...]:
    import matplotlib.pyplot as plt

    fig = plt.figure()
    try:
        return tuple(sorted(fig.canvas.get_supported_filetypes()))
    finally:
        plt.close(fig)


@app.command()
def demo(
    target: str = typer.Option("banana", help="built-in 2-D target (see ebmfit.datasets.TARGETS)"),
    n: int = typer.Option(5000, min=10, help="number of training samples"),
    out: Path = typer.Option(Path("ebmfit-demo"), "--out", "-o", help="output folder"),
    energy: str = typer.Option("auto", help="energy family"),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="random seed"),
) -> None:
    """Fit a built-in 2-D target; print test NLL, log Z ± error and KL to the truth; write a PNG."""
    from .datasets import TARGETS, load_target
    from .estimator import EnergyDensity
    from .plotting import plot_density_comparison

    if target not in TARGETS:
        _fail(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    _check_folder(out, "output folder")
    t = load_target(target)
    X = t.sample(n, random_state=seed)
    X_test = t.sample(50_000, random_state=seed + 1)
    typer.echo(f"fitting EnergyDensity(energy={energy!r}) to {n} samples of {target!r} ...")
    est = EnergyDensity(energy, low=0.0, high=1.0, random_state=seed, verbose=True).fit(X)
    lp = est.score_samples(X_test)
    diff = t.log_prob(X_test) - lp
    kl, se = diff.mean(), diff.std(ddof=1) / np.sqrt(diff.size)
    out.mkdir(parents=True, exist_ok=True)
    est.save(out / "model.ebm")
    fig = plot_density_comparison(
        est.model_,
        t.log_prob,
        X[:2000],
        title=f"{target}: KL(target‖model) = {kl:.4f} ± {se:.4f} nats",
    )
    fig.savefig(out / "density.png", dpi=110)
    typer.echo(f"fit time            {est.fit_time_:.1f} s ({est.stop_reason_})")
    typer.echo(
        f"test NLL            {-lp.mean():.4f} nats (target entropy {-t.log_prob(X_test).mean():.4f})"
    )
    typer.echo(f"log Z               {est.log_partition_}")
    typer.echo(f"KL(target‖model)    {kl:.4f} ± {se:.4f} nats (50 000 fresh target samples)")
    typer.echo(f"wrote               {out / 'model.ebm'}, {out / 'density.png'}")


@app.command()
def fit(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="CSV file, one sample per row (header optional)"),
    output: Path = typer.Option(..., "--output", "-o", help="model file to write (.ebm)"),
    energy: str = typer.Option("auto", help="auto | spline | legendre | cosine | mlp"),
    low: str = typer.Option(None, help="lower bounds: one number or one per column"),
    high: str = typer.Option(None, help="upper bounds: one number or one per column"),
    margin: float = typer.Option(
        0.05, help="margin (fraction of range) when bounds come from the data"
    ),
    clip: bool = typer.Option(False, help="clip rows outside the box instead of failing"),
    max_iter: int = typer.Option(
        None, min=1, help="iterations (per penalty value for linear energies)"
    ),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="random seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    nproc: int = typer.Option(1, min=1, help="processes on this machine (torchrun; the same fit)"),
    checkpoint: Path = typer.Option(
        None, help="checkpoint file of the SGD loops, rewritten atomically"
    ),
    resume: bool = typer.Option(False, help="continue from --checkpoint if it exists"),
    header: bool = typer.Option(None, "--header/--no-header", help=_HEADER_HELP),
) -> None:
    """Fit a density to a CSV file and save it (see docs/distributed.md for --nproc/torchrun)."""
    from .checkpoint import RunCheckpoint
    from .csvio import read_csv
    from .estimator import EnergyDensity
    from .launch import argv_from_click, is_torchrun_worker, launch_local
    from .training.parallel import init_parallel, shutdown_parallel

    check_output_path(output, [data, checkpoint], what="model file", text=False, create_parent=True)
    if nproc > 1 and not is_torchrun_worker():  # re-launch as nproc torchrun ranks
        raise typer.Exit(launch_local(nproc, argv_from_click(ctx)))
    X, names = read_csv(data, header=header)
    d = X.shape[1]
    est = EnergyDensity(
        energy,
        low=_parse_bounds(low, d, "low"),
        high=_parse_bounds(high, d, "high"),
        margin=margin,
        clip=clip,
        max_iter=max_iter,
        random_state=seed,
        verbose=not quiet,
    )
    # --nproc / torchrun / --checkpoint / --resume change where and how safely, not what
    par = init_parallel()
    try:
        ck = None if checkpoint is None else RunCheckpoint(checkpoint, resume=resume)
        est.fit(X, parallel=par, checkpoint=ck)
    except Exception as e:
        if par.world_size > 1:
            e.args = (f"rank {par.rank} of {par.world_size}: {e}", *e.args[1:])
        raise
    finally:
        shutdown_parallel()
    if not par.is_main:
        return
    # the rows as fitted: with --clip, those outside the box were clipped onto its faces
    Xf = est.domain_.validate(X, clip=True)
    n_clipped = int(np.any(Xf != X, axis=1).sum())
    mean_ll = est.score(Xf)  # before the names are attached: Xf is a plain array
    if names:
        est.feature_names_in_ = np.asarray(names, dtype=object)
    _write(output, est.save, output)
    clipped = f" ({n_clipped} row(s) clipped onto the box)" if n_clipped else ""
    typer.echo(
        f"fitted {X.shape[0]} rows × {d} columns in {est.fit_time_:.1f} s; "
        f"log Z = {est.log_partition_}; mean log-likelihood {mean_ll:.4f}{clipped}"
    )
    if getattr(est, "selection_", None) is not None:
        typer.echo(str(est.selection_))
    typer.echo(f"wrote {output}")


def _load(model: Path) -> EnergyDensity:
    from .estimator import EnergyDensity

    return EnergyDensity.load(model)  # a ModelFileError becomes one error line


@app.command()
def score(
    model: Path = typer.Argument(..., help="model file"),
    data: Path = typer.Argument(..., help="CSV file of points"),
    output: Path = typer.Option(
        None, "--output", "-o", help="write the scores here as CSV ('-': standard output)"
    ),
    header: bool = typer.Option(None, "--header/--no-header", help=_HEADER_HELP),
) -> None:
    """Print (or write) one normalized log-density per row, in the order of the rows.

    Columns are matched to the model's by name when the CSV has a header and the model was
    fitted with one (any order); otherwise by position.
    """
    from .csvio import write_csv

    out = check_output_path(output, [model, data], what="scores", text=True)
    est = _load(model)
    X = _read_points(data, est, header)
    with warnings.catch_warnings():  # the columns are aligned above
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        lp = est.score_samples(X)
    if out is None:
        sys.stdout.write("".join(f"{v!r}\n" for v in map(float, lp)))
    else:
        _write(out, write_csv, out, lp, header=["log_density"])
        if out != STDOUT:
            typer.echo(f"wrote {len(lp)} scores to {out}")


def _sample_summary(info: SampleInfo | None, n: int) -> str:
    if info is not None and info.method == "mcmc":
        rhat, ess = info.rhat_max, info.ess_min
        acc = np.nan if info.acceptance_rate is None else info.acceptance_rate
        parts = [
            f"MCMC (reflected MALA, {info.n_chains} chains, {info.burn_in} "
            f"burn-in, thin {info.thin}): approximate draws",
            "R-hat max " + ("n/a" if rhat is None else f"{rhat:.3f}"),
            "min ESS " + ("n/a" if ess is None else f"{ess:.0f}") + f" of {n}",
            f"acceptance {float(np.mean(acc)):.2f}",
        ]
        if rhat is not None and rhat > 1.01:
            parts.append("warning: R-hat > 1.01, the chains have not mixed")
        return "sampling: " + "; ".join(parts)
    rate = None if info is None else info.acceptance_rate
    return "sampling: exact (rejection on sound energy bounds)" + (
        "" if rate is None else f"; acceptance {rate:.3g}"
    )


@app.command(
    help="Draw samples from a model: exact i.i.d. draws (rejection on sound energy bounds) "
    "when the predicted acceptance is at least 1e-3 — always for linear energies — else "
    "MCMC (256 reflected MALA chains, approximate). A summary line says which, with R-hat "
    "and the effective sample size (ESS) for MCMC; it goes to stderr when the samples go to "
    "stdout."
)
def sample(
    model: Path = typer.Argument(..., help="model file"),
    n: int = typer.Option(1000, "-n", help="number of samples"),
    output: Path = typer.Option(
        None, "--output", "-o", help="CSV file to write ('-' or none: standard output)"
    ),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="random seed"),
) -> None:
    from .csvio import write_csv

    if n < 1:
        _fail("-n must be >= 1")
    if n > MAX_SAMPLES:
        _fail(f"-n must be <= {MAX_SAMPLES}")
    out = check_output_path(output, [model], what="samples", text=True)
    est = _load(model)
    S = est.sample(n, random_state=seed)
    names = _model_names(est) or [f"x{i}" for i in range(S.shape[1])]
    summary = _sample_summary(est.model_.last_sample_info, n)
    if out is None or out == STDOUT:
        write_csv(STDOUT, S, header=names)
        typer.echo(summary, err=True)
    else:
        _write(out, write_csv, out, S, header=names)
        typer.echo(f"wrote {n} samples to {out}")
        typer.echo(summary)


@app.command()
def plot(
    model: Path = typer.Argument(..., help="model file"),
    output: Path = typer.Option(
        Path("density.png"), "--output", "-o", help="image to write (.png, .pdf, .svg, ...)"
    ),
    data: Path = typer.Option(None, help="CSV of points to overlay"),
    header: bool = typer.Option(None, "--header/--no-header", help=_HEADER_HELP),
) -> None:
    """Density heatmap (+ data) in 2-D, a curve in 1-D, a corner plot for d > 2."""
    from .plotting import plot_density

    out = check_output_path(
        output, [model, data], what="image", text=False, suffixes=_image_formats()
    )
    est = _load(model)
    X = None if data is None else _read_points(data, est, header)
    fig = plot_density(est.model_, X, feature_names=_model_names(est))
    _write(out, fig.savefig, out, dpi=110)
    typer.echo(f"wrote {out}")


@app.command()
def info(model: Path = typer.Argument(..., help="model file")) -> None:
    """Describe a model file."""
    est = _load(model)
    m = est.model_
    typer.echo(f"energy       {m.energy_fn.spec()}")
    typer.echo(f"box          low={list(m.domain.low)} high={list(m.domain.high)}")
    typer.echo(f"base         {m.base}")
    typer.echo(f"log Z        {m.log_partition_}")
    if getattr(est, "selection_", None) is not None:
        typer.echo(str(est.selection_))
    names = _model_names(est)
    if names:
        typer.echo(f"columns      {', '.join(names)}")


def main() -> None:
    app()


# --- certify & studies (issue 4) ---
@app.command()
def certify(
    model_a: Path = typer.Argument(..., help="first model file (A)"),
    model_b: Path = typer.Argument(..., help="second model file (B), same box and base"),
    tol: float = typer.Option(0.1, help="target relative gap between the oscillation bounds"),
    time_limit: float = typer.Option(120.0, help="seconds for branch-and-bound"),
    json_out: Path = typer.Option(
        None, "--json", help="also write the certificate as JSON ('-': only JSON, to stdout)"
    ),
) -> None:
    """Certified upper bound on KL(A‖B) and KL(B‖A): min(osc, osc²/8), osc = osc(V_B − V_A)."""
    from .certify import kl_bound
    from .io import load_model

    if not (np.isfinite(tol) and tol > 0):
        _fail(f"--tol must be a finite number > 0, got {tol}")
    if not (np.isfinite(time_limit) and time_limit > 0):
        _fail(f"--time-limit must be a finite number of seconds > 0, got {time_limit}")
    out = check_output_path(json_out, [model_a, model_b], what="certificate", text=True)
    ma, mb = load_model(model_a), load_model(model_b)
    cert = kl_bound(ma, mb, tol=tol, time_limit=time_limit, labels=(str(model_a), str(model_b)))
    text = json.dumps(cert.to_dict(), indent=2)
    if out == STDOUT:
        sys.stdout.write(text + "\n")
        return
    typer.echo(str(cert))
    if out is not None:
        _write(out, out.write_text, text, encoding="utf-8")
        typer.echo(f"wrote {out}")


@app.command()
def study(
    name: str = typer.Argument(..., help="identity | approximation | zeros | errata"),
    out: Path = typer.Option(Path("."), "--out", "-o", help="folder for NAME.md and NAME.png"),
    quick: bool = typer.Option(False, "--quick", help="reduced size (seconds instead of minutes)"),
) -> None:
    """Run one of the seed's theorems as a study; write a Markdown report and a PNG."""
    from .studies import STUDIES, run_study

    if name not in STUDIES:
        _fail(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
    _check_folder(out, "output folder")
    result = run_study(name, quick=quick, out_dir=out)
    typer.echo(result.to_markdown())
    typer.echo(f"wrote {out / (name + '.md')}, {out / (name + '.png')}")


if __name__ == "__main__":
    main()
