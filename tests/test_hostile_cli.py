"""Hostile use of the command line: bad flags, outputs that would destroy inputs, CSV files
whose header, encoding or column order disagree with the model.

The contract (issue 10, docs/robustness.md): a failing command exits 2 with exactly one line
``error: ...`` on stderr naming the problem and writes nothing to stdout; ``-`` is standard
output for text outputs; no command overwrites one of its inputs; CSV columns are matched to a
model's by name whenever both have names.  Models are built directly with the Python API
(fixed random Legendre coefficients on an asymmetric box, so a column swap is visible).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import ebmfit.io as eio
from ebmfit import Box, EnergyDensity, EnergyModel
from ebmfit.cli import app
from ebmfit.energies import LegendreEnergy, QuadraticEnergy

LOW, HIGH = [2.0, -1.0], [5.0, 1.0]

# a clean run prints nothing but its output: a user warning fails the test
pytestmark = pytest.mark.filterwarnings("error::UserWarning")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _model(path, names=("temp", "pressure"), seed=0):
    energy = LegendreEnergy(2, degree=3)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        energy.coef.copy_(torch.randn(energy.coef.shape, generator=g, dtype=torch.float64))
    model = EnergyModel(energy, Box(LOW, HIGH))
    model.log_partition()
    extra = {"feature_names": list(names)} if names else {}
    eio.save_model(model, path, extra=extra)
    return path


def _points(n=30, seed=1):
    rng = np.random.default_rng(seed)
    return np.asarray(LOW) + rng.uniform(0.05, 0.95, (n, 2)) * (np.subtract(HIGH, LOW))


def _csv(path, X, header=None, prefix=""):
    lines = [",".join(header)] if header else []
    lines += [",".join(repr(float(v)) for v in r) for r in X]
    path.write_text(prefix + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _error(res, match: str) -> str:
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.stdout == ""
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.output
    assert match in res.stderr, res.stderr
    return res.stderr


def _ref(model_path, X) -> np.ndarray:
    """The Python API's scores of the plain array X (columns in the model's order)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return EnergyDensity.load(model_path).score_samples(X)


def _scores(stdout: str) -> np.ndarray:
    return np.array([float(v) for v in stdout.split()])


# --------------------------------------------------------------------------- flags
@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["sample", "{m}", "--seed", "-1"], "'--seed'"),
        (["sample", "{m}", "--seed", "99999999999"], "'--seed'"),
        (["sample", "{m}", "-n", "0"], "-n must be >= 1"),
        (["sample", "{m}", "-n", "-5"], "-n must be >= 1"),
        (["sample", "{m}", "-n", "2.7"], "'-n'"),
        (["sample", "{m}", "-n", "10000000000"], "-n must be <="),
        (["fit", "{d}", "-o", "{t}/x.ebm", "--max-iter", "-3"], "'--max-iter'"),
        (["fit", "{d}", "-o", "{t}/x.ebm", "--max-iter", "0"], "'--max-iter'"),
        (["fit", "{d}", "-o", "{t}/x.ebm", "--max-iter", "2.5"], "'--max-iter'"),
        (["fit", "{d}", "-o", "{t}/x.ebm", "--seed", "-1"], "'--seed'"),
        (["fit", "{d}", "-o", "{t}/x.ebm", "--nproc", "0"], "'--nproc'"),
        (["fit", "{d}", "-o", "{t}/x.ebm", "--margin", "-0.7", "-q"], "margin"),
        (["fit", "{d}", "-o", "{t}/x.ebm", "--low", "nan", "--high", "9", "-q"], "--low"),
        (["fit", "{d}", "-o", "{t}/x.ebm", "--energy", "gpt", "-q"], "unknown energy 'gpt'"),
        (["fit", "{d}"], "Missing option"),
        (["certify", "{m}", "{m}", "--tol", "-1"], "--tol"),
        (["certify", "{m}", "{m}", "--tol", "0"], "--tol"),
        (["certify", "{m}", "{m}", "--tol", "nan"], "--tol"),
        (["certify", "{m}", "{m}", "--time-limit", "-1"], "--time-limit"),
        (["demo", "--n", "3", "-o", "{t}/demo"], "'--n'"),
        (["sample", "{m}", "--bogus"], "No such option"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_flags_give_one_line(runner, tmp_path, args, match):
    m = _model(tmp_path / "m.ebm")
    d = _csv(tmp_path / "d.csv", _points(), ["temp", "pressure"])
    args = [a.format(m=m, d=d, t=tmp_path) for a in args]
    _error(runner.invoke(app, args), match)
    assert not (tmp_path / "x.ebm").exists()


def test_unexpected_exceptions_are_one_line_too(runner, tmp_path, monkeypatch):
    m = _model(tmp_path / "m.ebm")

    def boom(self, *a, **k):
        raise IndexError("list index out of range")

    monkeypatch.setattr(EnergyDensity, "sample", boom)
    err = _error(runner.invoke(app, ["sample", str(m), "-n", "3"]), "internal error")
    assert "IndexError" in err


# --------------------------------------------------------------------------- outputs
def test_dash_means_stdout_for_text_outputs(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = _model(tmp_path / "m.ebm")
    d = _csv(tmp_path / "d.csv", _points(), ["temp", "pressure"])
    res = runner.invoke(app, ["score", str(m), str(d), "-o", "-"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "log_density" and len(lines) == 31
    ref = _ref(m, _points())
    np.testing.assert_array_equal(np.array(lines[1:], dtype=float), ref)
    res = runner.invoke(app, ["sample", str(m), "-n", "7", "-o", "-"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == "temp,pressure" and len(res.stdout.splitlines()) == 8
    assert "sampling: exact" in res.stderr  # the summary never mixes into the CSV
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["fit", "{d}", "-o", "-", "-q"], "binary"),
        (["plot", "{m}", "-o", "-"], "binary"),
        (["plot", "{m}", "-o", "{t}/x.ebm"], "unknown format '.ebm'"),
        (["plot", "{m}", "-o", "{t}/noext"], "unknown format"),
        (["plot", "{m}", "-o", "{t}"], "it is a folder"),
        (["sample", "{m}", "-o", "{t}/nowhere/s.csv"], "does not exist"),
    ],
)
def test_bad_outputs(runner, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    m = _model(tmp_path / "m.ebm")
    d = _csv(tmp_path / "d.csv", _points(), ["temp", "pressure"])
    _error(runner.invoke(app, [a.format(m=m, d=d, t=tmp_path) for a in args]), match)
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink", "dotted"])
@pytest.mark.parametrize(
    "args",
    [
        ["fit", "{d}", "-o", "{out_d}", "-q", "--max-iter", "2"],
        ["score", "{m}", "{d}", "-o", "{out_d}"],
        ["score", "{m}", "{d}", "-o", "{out_m}"],
        ["sample", "{m}", "-n", "5", "-o", "{out_m}"],
        ["plot", "{m}", "--data", "{d}", "-o", "{out_d}"],
        ["certify", "{m}", "{m}", "--json", "{out_m}"],
    ],
    ids=["fit", "score-data", "score-model", "sample", "plot", "certify"],
)
def test_no_command_overwrites_its_input(runner, tmp_path, args, link):
    m = _model(tmp_path / "m.ebm")
    d = _csv(tmp_path / "d.csv", _points(), ["temp", "pressure"])
    before = {p: p.read_bytes() for p in (m, d)}

    def alias(p):
        if link == "same":
            return p
        if link == "dotted":
            return tmp_path / "." / ".." / tmp_path.name / p.name
        q = tmp_path / f"alias-{p.name}"
        if not q.exists():
            (os.symlink if link == "symlink" else os.link)(p, q)
        return q

    argv = [a.format(m=m, d=d, out_d=alias(d), out_m=alias(m)) for a in args]
    _error(runner.invoke(app, argv), "refusing to overwrite the input file")
    assert {p: p.read_bytes() for p in (m, d)} == before


def test_certify_checks_json_path_before_printing(runner, tmp_path):
    m = _model(tmp_path / "m.ebm")
    _error(
        runner.invoke(app, ["certify", str(m), str(m), "--json", "/nonexistent/x.json"]),
        "does not exist",
    )
    res = runner.invoke(app, ["certify", str(m), str(m), "--json", "-"])
    assert res.exit_code == 0, res.output
    assert isinstance(json.loads(res.stdout), dict)  # only JSON on stdout


def test_study_output_must_be_a_folder(runner, tmp_path):
    f = tmp_path / "existing_file"
    f.write_text("keep me")
    _error(runner.invoke(app, ["study", "errata", "-o", str(f), "--quick"]), "not a folder")
    assert f.read_text() == "keep me"


# --------------------------------------------------------------------------- CSV columns
def test_score_matches_columns_by_name(runner, tmp_path):
    m = _model(tmp_path / "m.ebm")
    X = _points()
    ref = _ref(m, X)
    swapped = _csv(tmp_path / "s.csv", X[:, ::-1], ["pressure", "temp"])
    res = runner.invoke(app, ["score", str(m), str(swapped)])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(_scores(res.stdout), ref)
    assert np.isfinite(ref).all()
    # names that do not match are named, never scored by position
    bad = _csv(tmp_path / "b.csv", X, ["temp", "presure"])
    err = _error(runner.invoke(app, ["score", str(m), str(bad)]), "missing column(s) ['pressure']")
    assert "unknown column(s) ['presure']" in err
    # plot --data aligns the same way
    png = tmp_path / "p.png"
    res = runner.invoke(app, ["plot", str(m), "--data", str(swapped), "-o", str(png)])
    assert res.exit_code == 0, res.output


def test_headerless_csv_is_positional(runner, tmp_path):
    m = _model(tmp_path / "m.ebm")
    X = _points()
    d = _csv(tmp_path / "d.csv", X)
    res = runner.invoke(app, ["score", str(m), str(d)])
    np.testing.assert_array_equal(_scores(res.stdout), _ref(m, X))


@pytest.mark.parametrize("first", ["3.1,0.2x", "3.1,?", "abc,0.5", "3.1,"])
def test_a_typo_in_the_first_row_is_not_a_header(runner, tmp_path, first):
    m = _model(tmp_path / "m.ebm", names=None)
    d = tmp_path / "d.csv"
    d.write_text(first + "\n" + "\n".join(f"{a},{b}" for a, b in _points()) + "\n")
    res = runner.invoke(app, ["score", str(m), str(d)])
    assert res.exit_code == 2, res.output
    assert res.stdout == "" and res.stderr.count("\n") == 1
    assert "line 1" in res.stderr


def test_numeric_header(runner, tmp_path):
    """A header of numbers is data unless --header says so, or it repeats the model's names."""
    m = _model(tmp_path / "m.ebm", names=("1", "2"))
    X = _points()
    d = _csv(tmp_path / "d.csv", X, ["1", "2"])
    ref = _ref(m, X)
    for extra in ([], ["--header"]):
        res = runner.invoke(app, ["score", str(m), str(d), *extra])
        assert res.exit_code == 0, res.output
        np.testing.assert_array_equal(_scores(res.stdout), ref)
    m2 = _model(tmp_path / "m2.ebm", names=None)
    res = runner.invoke(app, ["score", str(m2), str(d), "--header"])
    assert len(_scores(res.stdout)) == len(X)
    res = runner.invoke(app, ["score", str(m2), str(d), "--no-header"])
    assert len(_scores(res.stdout)) == len(X) + 1


def test_bom_and_comments(runner, tmp_path):
    m = _model(tmp_path / "m.ebm")
    X = _points()
    text = "# measured 2024-05-01\ntemp,pressure\n# a comment\n" + "\n".join(
        f"{float(a)!r},{float(b)!r}" for a, b in X
    )
    d = tmp_path / "d.csv"
    d.write_bytes(b"\xef\xbb\xbf" + text.encode())
    res = runner.invoke(app, ["score", str(m), str(d)])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(_scores(res.stdout), _ref(m, X))
    latin = tmp_path / "l.csv"
    latin.write_bytes("t\xe9mp,pressure\n1,2\n".encode("latin-1"))
    _error(runner.invoke(app, ["score", str(m), str(latin)]), "not UTF-8")


# --------------------------------------------------------------------------- what is printed
def test_fit_with_clip_reports_a_finite_likelihood(runner, tmp_path):
    X = _points(60)
    X[:3, 0] = 9.0  # outside --high
    d = _csv(tmp_path / "d.csv", X)
    args = ["fit", str(d), "-o", str(tmp_path / "m.ebm"), "--low", "2,-1", "--high", "5,1"]
    res = runner.invoke(app, [*args, "--clip", "-q", "--energy", "legendre", "--max-iter", "3"])
    assert res.exit_code == 0, res.output
    assert "-inf" not in res.stdout and "nan" not in res.stdout
    assert "3 row(s) clipped onto the box" in res.stdout


def test_sample_reports_mcmc_diagnostics(runner, tmp_path):
    """A peaked 16-D Gaussian energy: exact rejection from one box would accept ~1e-15 of the
    proposals, so sampling goes to MCMC and says so, with R-hat and ESS."""
    d = 16
    energy = QuadraticEnergy(d, mean=torch.full((d,), 0.5), precision=400 * torch.eye(d))
    model = EnergyModel(energy, Box([0.0] * d, [1.0] * d))
    model.log_partition(random_state=0)
    path = tmp_path / "q.ebm"
    eio.save_model(model, path)
    res = runner.invoke(app, ["sample", str(path), "-n", "3000", "-o", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    assert "MCMC" in res.stdout and "approximate" in res.stdout
    assert "R-hat max 1." in res.stdout and "min ESS" in res.stdout


def test_sample_help_says_exact_or_mcmc(runner):
    res = runner.invoke(app, ["sample", "--help"])
    assert res.exit_code == 0
    assert "MCMC" in res.stdout and "exact" in res.stdout
