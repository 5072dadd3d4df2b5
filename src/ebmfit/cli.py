"""The ``ebmfit`` command line: demo, fit, score, sample, plot, info.

Every command calls the public API (EnergyDensity, io, plotting); nothing lives only here.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import typer

from .domain import DataError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Normalized energy-based density models on a box.",
)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _write(path: Path, write, *args, **kwargs) -> None:
    """Run ``write(*args, **kwargs)``, turning an OS error (no folder, no permission) into an error
    message and exit code 2."""
    try:
        write(*args, **kwargs)
    except OSError as e:
        _fail(f"cannot write {path}: {e}")


def _parse_bounds(s: str | None, d: int, name: str):
    if s is None:
        return None
    try:
        v = [float(t) for t in s.split(",")]
    except ValueError:
        _fail(f"--{name} must be a number or a comma-separated list of numbers, got {s!r}")
    if len(v) == 1:
        return v * d
    if len(v) != d:
        _fail(f"--{name} has {len(v)} values but the data has {d} columns")
    return v


@app.command()
def demo(
    target: str = typer.Option("banana", help="built-in 2-D target (see ebmfit.datasets.TARGETS)"),
    n: int = typer.Option(5000, help="number of training samples"),
    out: Path = typer.Option(Path("ebmfit-demo"), "--out", "-o", help="output folder"),
    energy: str = typer.Option("auto", help="energy family"),
    seed: int = typer.Option(0, help="random seed"),
):
    """Fit a built-in 2-D target; print test NLL, log Z ± error and KL to the truth; write a PNG."""
    from .datasets import TARGETS, load_target
    from .estimator import EnergyDensity
    from .plotting import plot_density_comparison

    if target not in TARGETS:
        _fail(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
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
    max_iter: int = typer.Option(None, help="iterations (per penalty value for linear energies)"),
    seed: int = typer.Option(0, help="random seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    nproc: int = typer.Option(1, help="processes on this machine (torchrun + DDP; mlp energies)"),
    checkpoint: Path = typer.Option(None, help="checkpoint file, rewritten atomically (mlp)"),
    resume: bool = typer.Option(False, help="continue from --checkpoint if it exists"),
):
    """Fit a density to a CSV file and save it (see docs/distributed.md for --nproc/torchrun)."""
    from .csvio import read_csv
    from .estimator import EnergyDensity
    from .training import distributed as dist
    from .training.fit import FitError

    if nproc > 1 and not dist.is_torchrun_worker():  # re-launch as nproc torchrun ranks
        argv = dist.argv_from_click(ctx)
        raise typer.Exit(dist.launch_local(nproc, argv))
    try:
        X, header = read_csv(data)
        d = X.shape[1]
        if nproc > 1 or checkpoint or resume or dist.is_torchrun_worker():
            code = dist.fit_and_save(
                X,
                output,
                feature_names=header,
                energy=energy,
                low=_parse_bounds(low, d, "low"),
                high=_parse_bounds(high, d, "high"),
                margin=margin,
                clip=clip,
                max_iter=max_iter or 2000,
                seed=seed,
                checkpoint=checkpoint,
                resume=resume,
                progress=not quiet,
                echo=typer.echo,
            )
            raise typer.Exit(code)
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
        est.fit(X)
        mean_ll = est.score(X)  # before the names are attached: X is a plain array
        if header:
            est.feature_names_in_ = np.asarray(header, dtype=object)
    except (DataError, ValueError, FitError, FloatingPointError) as e:
        _fail(str(e))
    _write(output, est.save, output)
    typer.echo(
        f"fitted {X.shape[0]} rows × {d} columns in {est.fit_time_:.1f} s; "
        f"log Z = {est.log_partition_}; mean log-likelihood {mean_ll:.4f}"
    )
    typer.echo(f"wrote {output}")


def _load(model: Path):
    from .estimator import EnergyDensity
    from .io import ModelFileError

    try:
        return EnergyDensity.load(model)
    except ModelFileError as e:
        _fail(str(e))


@app.command()
def score(
    model: Path = typer.Argument(..., help="model file"),
    data: Path = typer.Argument(..., help="CSV file of points"),
    output: Path = typer.Option(None, "--output", "-o", help="write the scores here (CSV)"),
):
    """Print (or write) one normalized log-density per row."""
    from .csvio import read_csv, write_csv

    est = _load(model)
    try:
        X, _ = read_csv(data)
        with warnings.catch_warnings():  # CSV columns are positional, whatever their header
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            lp = est.score_samples(X)
    except (DataError, ValueError) as e:
        _fail(str(e))
    if output:
        _write(output, write_csv, output, lp, header=["log_density"])
        typer.echo(f"wrote {len(lp)} scores to {output}")
    else:
        sys.stdout.write("".join(f"{v!r}\n" for v in map(float, lp)))


@app.command()
def sample(
    model: Path = typer.Argument(..., help="model file"),
    n: int = typer.Option(1000, "-n", help="number of samples"),
    output: Path = typer.Option(None, "--output", "-o", help="CSV file to write"),
    seed: int = typer.Option(0, help="random seed"),
):
    """Draw exact samples from a model."""
    from .csvio import write_csv

    est = _load(model)
    if n < 1:
        _fail("-n must be >= 1")
    S = est.sample(n, random_state=seed)
    names = list(getattr(est, "feature_names_in_", [f"x{i}" for i in range(S.shape[1])]))
    if output:
        _write(output, write_csv, output, S, header=names)
        typer.echo(f"wrote {n} samples to {output}")
    else:
        sys.stdout.write(",".join(names) + "\n")
        sys.stdout.write("".join(",".join(repr(float(v)) for v in r) + "\n" for r in S))


@app.command()
def plot(
    model: Path = typer.Argument(..., help="model file"),
    output: Path = typer.Option(Path("density.png"), "--output", "-o", help="PNG to write"),
    data: Path = typer.Option(None, help="CSV of points to overlay"),
):
    """Density heatmap (+ data) in 2-D, a curve in 1-D, marginals for d > 2."""
    from .csvio import read_csv
    from .plotting import plot_density

    est = _load(model)
    X = None
    if data is not None:
        try:
            X, _ = read_csv(data)
        except DataError as e:
            _fail(str(e))
        if X.shape[1] != est.n_features_in_:
            _fail(f"{data} has {X.shape[1]} column(s) but the model has {est.n_features_in_}")
    names = list(getattr(est, "feature_names_in_", [])) or None
    fig = plot_density(est.model_, X, feature_names=names)
    _write(output, fig.savefig, output, dpi=110)
    typer.echo(f"wrote {output}")


@app.command()
def info(model: Path = typer.Argument(..., help="model file")):
    """Describe a model file."""
    est = _load(model)
    m = est.model_
    typer.echo(f"energy       {m.energy_fn.spec()}")
    typer.echo(f"box          low={list(m.domain.low)} high={list(m.domain.high)}")
    typer.echo(f"base         {m.base}")
    typer.echo(f"log Z        {m.log_partition_}")


def main() -> None:
    app()


# --- certify & studies (issue 4) ---
@app.command()
def certify(
    model_a: Path = typer.Argument(..., help="first model file (A)"),
    model_b: Path = typer.Argument(..., help="second model file (B), same box and base"),
    tol: float = typer.Option(0.1, help="target relative gap between the oscillation bounds"),
    time_limit: float = typer.Option(120.0, help="seconds for branch-and-bound"),
    json_out: Path = typer.Option(None, "--json", help="also write the certificate as JSON"),
):
    """Certified upper bound on KL(A‖B) and KL(B‖A): min(osc, osc²/8), osc = osc(V_B − V_A)."""
    import json

    from .certify import kl_bound
    from .io import ModelFileError, load_model

    try:
        ma, mb = load_model(model_a), load_model(model_b)
    except ModelFileError as e:
        _fail(str(e))
    try:
        cert = kl_bound(ma, mb, tol=tol, time_limit=time_limit, labels=(str(model_a), str(model_b)))
    except ValueError as e:
        _fail(str(e))
    typer.echo(str(cert))
    if json_out is not None:
        json_out.write_text(json.dumps(cert.to_dict(), indent=2), encoding="utf-8")
        typer.echo(f"wrote {json_out}")


@app.command()
def study(
    name: str = typer.Argument(..., help="identity | approximation | zeros | errata"),
    out: Path = typer.Option(Path("."), "--out", "-o", help="folder for NAME.md and NAME.png"),
    quick: bool = typer.Option(False, "--quick", help="reduced size (seconds instead of minutes)"),
):
    """Run one of the seed's theorems as a study; write a Markdown report and a PNG."""
    from .studies import STUDIES, run_study

    if name not in STUDIES:
        _fail(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
    result = run_study(name, quick=quick, out_dir=out)
    typer.echo(result.to_markdown())
    typer.echo(f"wrote {out / (name + '.md')}, {out / (name + '.png')}")


if __name__ == "__main__":
    main()
