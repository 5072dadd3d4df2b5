"""The ``ebmfit`` command line, run in-process with ``typer.testing.CliRunner``.

``fit`` (with and without a CSV header, bounds from the data or ``--low/--high``), ``score``
(to stdout and to a CSV), ``sample``, ``plot`` (1-D, 2-D and 3-D models; a real PNG), ``info``
and ``demo``.  Every error exits with code 2 and a message on stderr, nothing on stdout and no
traceback.  What the commands print is checked against the Python API (the CLI only calls it).

The models read by ``sample``/``plot``/``info`` are written with the Python API from small
Legendre energies with fixed random coefficients: sampling cost grows with the energy, and
these tests are about the commands, not the fit.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ebmfit import Box, EnergyDensity, EnergyModel
from ebmfit.cli import app
from ebmfit.csvio import read_csv
from ebmfit.energies import LegendreEnergy
from ebmfit.io import save_model

# a clean run prints nothing but its output: a user or runtime warning (which a user would see
# on stderr) fails the test
pytestmark = [
    pytest.mark.filterwarnings("error::UserWarning"),
    pytest.mark.filterwarnings("error::RuntimeWarning"),
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIT_ARGS = ["--energy", "legendre", "--max-iter", "5", "-q"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _points(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 2.0 + 3.0 * np.clip(rng.normal(0.5, 0.15, size=(n, d)), 0.0, 1.0)  # in [2, 5]^d


def _write_csv(path, X: np.ndarray, header: list[str] | None = None):
    lines = [",".join(header)] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in X]
    path.write_text("\n".join(lines) + "\n")
    return path


def _model_file(path, d: int, degree: int = 2, seed: int = 0):
    """A model file with a Legendre energy of fixed random coefficients on [2, 5]^d."""
    energy = LegendreEnergy(d, degree=degree)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        energy.coef.copy_(torch.randn(energy.coef.shape, generator=g, dtype=torch.float64))
    model = EnergyModel(energy, Box([2.0] * d, [5.0] * d))
    model.log_partition()
    save_model(model, path)
    return path


def _ok(result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def _error(result, match: str) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    assert re.search(match, result.stderr), result.stderr
    return result.stderr


# --------------------------------------------------------------------------- fit + score
def test_fit_with_header_then_score(runner, tmp_path):
    X = _points(80, 2)
    data = _write_csv(tmp_path / "data.csv", X, header=["temp", "pressure"])
    model = tmp_path / "m.ebm"
    res = runner.invoke(app, ["fit", str(data), "-o", str(model), *FIT_ARGS])
    out_fit = _ok(res)
    assert res.stderr == ""
    assert re.search(
        r"fitted 80 rows × 2 columns in [\d.]+ s; log Z = .*; mean log-likelihood", out_fit
    )
    assert f"wrote {model}" in out_fit
    est = EnergyDensity.load(model)
    assert list(est.feature_names_in_) == ["temp", "pressure"]
    assert est.domain_ == Box.from_data(X, 0.05)  # bounds from the data, default margin
    # the requested family, or the base alone when it did not beat it (the selection's rule)
    chosen = est.selection_.chosen
    assert chosen in ("base", "legendre|base")
    assert est.energy_.family == ("zero" if chosen == "base" else "defensive")

    # score: one float per row on stdout, equal to the Python API's
    res = runner.invoke(app, ["score", str(model), str(data)])
    out = _ok(res)
    assert res.stderr == ""
    values = np.array([float(line) for line in out.splitlines()])
    assert values.shape == (80,)
    with warnings.catch_warnings():  # fitted with feature names, asked with a plain array
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        np.testing.assert_array_equal(values, est.score_samples(X))
    mean_ll = float(re.search(r"mean log-likelihood (\S+)", out_fit).group(1))
    assert mean_ll == pytest.approx(values.mean(), abs=1e-4)

    # score -o: a CSV with a header and one value per row
    scores = tmp_path / "scores.csv"
    out = _ok(runner.invoke(app, ["score", str(model), str(data), "-o", str(scores)]))
    assert f"wrote 80 scores to {scores}" in out
    S, header = read_csv(scores)
    assert header == ["log_density"]
    np.testing.assert_array_equal(S[:, 0], values)


def test_fit_without_header_with_bounds(runner, tmp_path):
    X = _points(60, 2, seed=1)
    data = _write_csv(tmp_path / "data.csv", X)
    model = tmp_path / "m.ebm"
    out = _ok(
        runner.invoke(
            app, ["fit", str(data), "-o", str(model), "--low", "0,1", "--high", "6", *FIT_ARGS]
        )
    )
    assert "fitted 60 rows × 2 columns" in out
    est = EnergyDensity.load(model)
    assert est.domain_ == Box([0.0, 1.0], [6.0, 6.0])
    assert not hasattr(est, "feature_names_in_")
    values = np.array(
        [float(v) for v in _ok(runner.invoke(app, ["score", str(model), str(data)])).split()]
    )
    np.testing.assert_array_equal(values, est.score_samples(X))
    # a point outside the box has density 0: log-density -inf, not an error
    outside = _write_csv(tmp_path / "outside.csv", np.array([[7.0, 2.0], [3.0, 3.0]]))
    values = [
        float(v) for v in _ok(runner.invoke(app, ["score", str(model), str(outside)])).split()
    ]
    assert values[0] == -np.inf and np.isfinite(values[1])


def test_fit_one_column(runner, tmp_path):
    data = _write_csv(tmp_path / "data.csv", _points(50, 1), header=["x"])
    model = tmp_path / "m.ebm"
    assert "fitted 50 rows × 1 columns" in _ok(
        runner.invoke(app, ["fit", str(data), "-o", str(model), *FIT_ARGS])
    )
    assert EnergyDensity.load(model).n_features_in_ == 1


def test_fit_seed_makes_it_reproducible(runner, tmp_path):
    data = _write_csv(tmp_path / "data.csv", _points(60, 2))
    for name in ("a.ebm", "b.ebm"):
        _ok(
            runner.invoke(
                app, ["fit", str(data), "-o", str(tmp_path / name), "--seed", "3", *FIT_ARGS]
            )
        )
    X = _points(20, 2, seed=5)
    a, b = (EnergyDensity.load(tmp_path / n) for n in ("a.ebm", "b.ebm"))
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))


# --------------------------------------------------------------------------- sample
def test_sample_to_csv(runner, tmp_path):
    model = _model_file(tmp_path / "m.ebm", 2)
    out_csv = tmp_path / "s.csv"
    out = _ok(runner.invoke(app, ["sample", str(model), "-n", "50", "-o", str(out_csv)]))
    assert f"wrote 50 samples to {out_csv}" in out
    S, header = read_csv(out_csv)
    assert header == ["x0", "x1"]
    assert S.shape == (50, 2)
    assert np.all((S >= 2.0) & (S <= 5.0))
    # the same seed gives the same samples as the Python API, and on stdout
    np.testing.assert_array_equal(S, EnergyDensity.load(model).sample(50, random_state=0))
    lines = _ok(runner.invoke(app, ["sample", str(model), "-n", "50"])).splitlines()
    assert lines[0] == "x0,x1"
    np.testing.assert_array_equal(
        np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]]), S
    )
    other = _ok(runner.invoke(app, ["sample", str(model), "-n", "50", "--seed", "1"]))
    assert other.splitlines()[1:] != lines[1:]


def test_sample_keeps_feature_names(runner, tmp_path):
    est = EnergyDensity("legendre", energy_params={"degree": 2}, max_iter=5, random_state=0)
    est.fit(_points(40, 2))
    est.feature_names_in_ = np.asarray(["a", "b"], dtype=object)
    est.save(tmp_path / "m.ebm")
    lines = _ok(runner.invoke(app, ["sample", str(tmp_path / "m.ebm"), "-n", "3"])).splitlines()
    assert lines[0] == "a,b" and len(lines) == 4


# --------------------------------------------------------------------------- plot and info
@pytest.mark.parametrize("d", [1, 2, 3])
def test_plot_writes_png(runner, tmp_path, d):
    model = _model_file(tmp_path / "m.ebm", d)
    png = tmp_path / "p.png"
    out = _ok(runner.invoke(app, ["plot", str(model), "-o", str(png)]))
    assert f"wrote {png}" in out
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 5000  # a drawn figure, not an empty canvas


def test_plot_with_data_overlay(runner, tmp_path):
    model = _model_file(tmp_path / "m.ebm", 2)
    data = _write_csv(tmp_path / "data.csv", _points(100, 2), header=["u", "v"])
    png = tmp_path / "p.png"
    _ok(runner.invoke(app, ["plot", str(model), "-o", str(png), "--data", str(data)]))
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_info(runner, tmp_path):
    model = _model_file(tmp_path / "m.ebm", 2, degree=3)
    out = _ok(runner.invoke(app, ["info", str(model)]))
    lz = EnergyDensity.load(model).log_partition_
    assert "energy       {'family': 'legendre', 'dim': 2, 'degree': 3}" in out
    assert "box          low=[2.0, 2.0] high=[5.0, 5.0]" in out
    assert "base         Uniform(dim=2)" in out
    assert f"log Z        {lz}" in out
    assert "gauss-legendre" in out


# --------------------------------------------------------------------------- demo
def test_demo_small(runner, tmp_path):
    out_dir = tmp_path / "demo"
    out = _ok(runner.invoke(app, ["demo", "--n", "500", "-o", str(out_dir)]))
    m = re.search(r"KL\(target‖model\)\s+(\S+) ± (\S+) nats", out)
    assert m, out
    kl, se = float(m.group(1)), float(m.group(2))
    assert se > 0
    assert -4 * se < kl < 0.5  # a KL estimate (≥ 0 up to noise) of a sensible fit
    assert re.search(r"test NLL\s+\S+ nats", out)
    assert re.search(r"log Z\s+\S+ ± \S+ \(gauss-legendre, \d+ evals\)", out)
    assert (out_dir / "density.png").read_bytes()[:8] == PNG_MAGIC
    est = EnergyDensity.load(out_dir / "model.ebm")
    assert est.n_features_in_ == 2


# --------------------------------------------------------------------------- errors
def test_errors_exit_2_with_message(runner, tmp_path):
    model = _model_file(tmp_path / "m.ebm", 2)
    missing = str(tmp_path / "missing.ebm")
    data = _write_csv(tmp_path / "data.csv", _points(20, 2))
    junk = tmp_path / "junk.ebm"
    junk.write_bytes(b"definitely not a model")
    _error(runner.invoke(app, ["info", missing]), "no such model file")
    _error(runner.invoke(app, ["score", missing, str(data)]), "no such model file")
    _error(runner.invoke(app, ["sample", missing, "-n", "5"]), "no such model file")
    _error(runner.invoke(app, ["plot", missing]), "no such model file")
    _error(runner.invoke(app, ["info", str(junk)]), "not a readable ebmfit model file")
    _error(runner.invoke(app, ["sample", str(model), "-n", "0"]), "-n must be >= 1")
    _error(runner.invoke(app, ["score", str(model), str(tmp_path / "nope.csv")]), "no such file")
    _error(
        runner.invoke(app, ["demo", "--target", "nonsense", "-o", str(tmp_path / "d")]),
        "unknown target 'nonsense'",
    )
    _error(
        runner.invoke(
            app, ["fit", str(data), "-o", str(tmp_path / "x.ebm"), "--energy", "gpt", "-q"]
        ),
        "unknown energy 'gpt'",
    )


def test_plot_data_with_wrong_columns(runner, tmp_path):
    model = _model_file(tmp_path / "m.ebm", 2)
    wide = _write_csv(tmp_path / "wide.csv", _points(10, 3))
    _error(
        runner.invoke(
            app, ["plot", str(model), "-o", str(tmp_path / "p.png"), "--data", str(wide)]
        ),
        "3 column",
    )


def test_unwritable_outputs_exit_2(runner, tmp_path):
    model = _model_file(tmp_path / "m.ebm", 2)
    data = _write_csv(tmp_path / "data.csv", _points(40, 2))
    nowhere = tmp_path / "missing-folder" / "out"
    _error(
        runner.invoke(app, ["sample", str(model), "-n", "5", "-o", f"{nowhere}.csv"]),
        "missing-folder",
    )
    _error(
        runner.invoke(app, ["score", str(model), str(data), "-o", f"{nowhere}.csv"]),
        "missing-folder",
    )
    _error(runner.invoke(app, ["plot", str(model), "-o", f"{nowhere}.png"]), "missing-folder")
    # the model path is a folder: cannot write there
    _error(runner.invoke(app, ["fit", str(data), "-o", str(tmp_path), *FIT_ARGS]), str(tmp_path))


def test_help(runner):
    out = _ok(runner.invoke(app, ["--help"]))
    for cmd in ("demo", "fit", "score", "sample", "plot", "info"):
        assert cmd in out


def test_training_failure_exits_2(runner, tmp_path, monkeypatch):
    from ebmfit.training.fit import FitError

    def diverge(self, X, y=None, **where):  # the CLI passes parallel=/checkpoint=
        raise FitError("training diverged at iteration 7 (non-finite loss/energies)")

    monkeypatch.setattr(EnergyDensity, "fit", diverge)
    data = _write_csv(tmp_path / "data.csv", _points(40, 2))
    _error(
        runner.invoke(app, ["fit", str(data), "-o", str(tmp_path / "m.ebm"), "-q"]),
        "training diverged at iteration 7",
    )
    assert not (tmp_path / "m.ebm").exists()
