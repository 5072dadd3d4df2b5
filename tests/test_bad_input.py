"""Bad input gives a clear error that names the offending rows / columns / lines.

Covered for the estimator (fit and score time), the CSV reader and the command line: NaN and
infinite rows, rows outside a given box (and ``clip=True`` instead), the wrong number of
columns, too few rows, constant columns, 1-D input, bad bounds, non-numeric and ragged CSV
rows.  A failed ``ebmfit fit`` never touches a model file that is already there.

Energies are tiny (Legendre of degree 2–3, few iterations): only the validation is tested.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from ebmfit import DataError, EnergyDensity
from ebmfit.cli import app
from ebmfit.csvio import read_csv


def _est(**kw) -> EnergyDensity:
    kw.setdefault("energy_params", {"degree": 2})
    kw.setdefault("max_iter", 5)
    kw.setdefault("random_state", 0)
    return EnergyDensity("legendre", **kw)


def _X(n: int = 40, d: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 0.9, size=(n, d))


@pytest.fixture(scope="module")
def fitted() -> EnergyDensity:
    return _est(low=0.0, high=1.0).fit(_X())


# --------------------------------------------------------------------------- non-finite values
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_at_fit_are_named(bad):
    X = _X()
    X[3, 1] = bad
    X[17, 0] = bad
    with pytest.raises(
        DataError,
        match=re.escape("X: 2 row(s) [3, 17] contain NaN or infinite values (column(s) [0, 1])"),
    ):
        _est().fit(X)


def test_many_non_finite_rows_are_summarised():
    X = _X(60)
    X[::4, 0] = np.nan  # 15 rows
    with pytest.raises(
        DataError, match=re.escape("15 row(s) [0, 4, 8, 12, 16, 20, 24, 28, 32, 36] (and 5 more)")
    ):
        _est().fit(X)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_rows_at_score_are_named(fitted, bad):
    X = _X(10, seed=1)
    X[6, 0] = bad
    with pytest.raises(
        DataError, match=re.escape("1 row(s) [6] contain NaN or infinite values (column(s) [0])")
    ):
        fitted.score_samples(X)
    with pytest.raises(DataError, match=re.escape("row(s) [6]")):
        fitted.score(X)


# --------------------------------------------------------------------------- the box
def test_rows_outside_the_box_are_named():
    X = _X()
    X[2, 1] = 1.5
    X[5, 1] = -0.25
    with pytest.raises(
        DataError,
        match=re.escape(
            "X: 2 row(s) [2, 5] lie outside the box (column(s) [1]; low=[0.0, 0.0], high=[1.0, 1.0])"
        ),
    ) as info:
        _est(low=0.0, high=1.0).fit(X)
    assert "clip=True" in str(info.value)  # the message says how to proceed


def test_clip_instead_of_raising():
    X = _X()
    X[2, 1] = 1.5
    X[5, 0] = -0.25
    clipped = _est(low=0.0, high=1.0, clip=True).fit(X)
    reference = _est(low=0.0, high=1.0).fit(np.clip(X, 0.0, 1.0))
    grid = _X(30, seed=5)
    np.testing.assert_array_equal(clipped.score_samples(grid), reference.score_samples(grid))


def test_rows_outside_the_box_score_minus_inf(fitted):
    """At score time a row outside the box is a valid question with answer log 0 = −inf."""
    X = np.array([[0.5, 0.5], [1.5, 0.5], [0.5, -0.1]])
    lp = fitted.score_samples(X)
    assert np.isfinite(lp[0])
    assert np.all(lp[1:] == -np.inf)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"low": 0.0}, "give both low and high, or neither"),
        ({"high": 1.0}, "give both low and high, or neither"),
        (
            {"low": [0.0, 0.0, 0.0], "high": 1.0},
            re.escape("low has 3 values but X has 2 column(s)"),
        ),
        ({"low": 0.0, "high": [[1.0, 1.0]]}, re.escape("high has 2 values but X has 2 column(s)")),
        (
            {"low": [0.0, 0.5], "high": [1.0, 0.5]},
            re.escape("box has high <= low in dimension(s) [1]"),
        ),
        ({"low": [0.0, -np.inf], "high": 1.0}, "box bounds must be finite"),
        ({"validation_fraction": 1.0}, re.escape("validation_fraction must be in (0, 1), got 1.0")),
    ],
)
def test_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        _est(**kw).fit(_X())


# --------------------------------------------------------------------------- shapes
def test_wrong_number_of_columns_at_score(fitted):
    with pytest.raises(
        ValueError, match="X has 3 features, but EnergyDensity is expecting 2 features"
    ):
        fitted.score_samples(_X(5, d=3))
    with pytest.raises(
        ValueError, match="X has 1 features, but EnergyDensity is expecting 2 features"
    ):
        fitted.score(_X(5, d=1))


@pytest.mark.parametrize("n", [1, 5, 9])
def test_too_few_rows(n):
    with pytest.raises(
        DataError, match=rf"need at least 10 samples to fit a density, got n_samples = {n}"
    ):
        _est().fit(_X(n))


def test_no_rows():
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        _est().fit(np.zeros((0, 2)))


def test_ten_rows_are_enough():
    assert np.isfinite(_est().fit(_X(10)).score(_X(10)))


@pytest.mark.parametrize("bounds", [{}, {"low": 0.0, "high": 1.0}])
def test_constant_column_is_named(bounds):
    """Constant columns are refused with or without an explicit box: the maximum-likelihood
    density on them is a point mass (with a box given, the fit used to run for minutes and
    return a degenerate model with log Z in the thousands)."""
    X = _X(40, d=3)
    X[:, 1] = 0.5
    with pytest.raises(DataError, match=re.escape("X: column(s) [1] are constant")):
        _est(**bounds).fit(X)


@pytest.mark.parametrize("method", ["fit", "score_samples", "score"])
def test_one_dimensional_input(fitted, method):
    x = np.linspace(0.1, 0.9, 20)
    call = _est().fit if method == "fit" else getattr(fitted, method)
    with pytest.raises(
        ValueError, match=r"(?s)Expected 2D array, got 1D array instead.*reshape\(-1, 1\)"
    ):
        call(x)


def test_three_dimensional_input():
    with pytest.raises(ValueError, match="Found array with dim 3"):
        _est().fit(np.zeros((20, 2, 2)))


def test_non_numeric_array():
    X = _X().astype(object)
    X[4, 1] = "abc"
    with pytest.raises(ValueError, match="could not convert string to float: 'abc'"):
        _est().fit(X)


# --------------------------------------------------------------------------- CSV files
def _csv(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_non_numeric_cell_names_line_and_column(tmp_path):
    path = _csv(tmp_path, "x,y\n0.1,0.2\n0.3,0.4\n0.5,abc\n0.7,0.8\n")
    with pytest.raises(
        DataError, match=re.escape("data.csv: line 4, column 'y': 'abc' is not a number")
    ):
        read_csv(path)
    path = _csv(tmp_path, "0.1,0.2\n0.3,0.4\n0.5,0.6\n?,0.8\n")  # no header: column by index
    with pytest.raises(DataError, match=re.escape("line 4, column '0': '?' is not a number")):
        read_csv(path)


def test_csv_ragged_row_names_line(tmp_path):
    path = _csv(tmp_path, "x,y\n0.1,0.2\n0.3,0.4,0.9\n0.5,0.6\n")
    with pytest.raises(DataError, match=re.escape("data.csv: line 3 has 3 cells, expected 2")):
        read_csv(path)
    path = _csv(tmp_path, "0.1,0.2\n0.3,0.4\n0.5\n")
    with pytest.raises(DataError, match=re.escape("line 3 has 1 cells, expected 2")):
        read_csv(path)


def test_csv_line_numbers_count_blank_lines(tmp_path):
    path = _csv(tmp_path, "x,y\n\n0.1,0.2\n\n0.3,oops\n")
    with pytest.raises(DataError, match=re.escape("line 5, column 'y': 'oops' is not a number")):
        read_csv(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "the file has no data rows"),
        ("\n\n", "no data rows"),
        ("x,y\n", "a header but no data rows"),
    ],
)
def test_csv_without_data(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        read_csv(_csv(tmp_path, text))


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        read_csv(tmp_path / "nope.csv")


def test_csv_reads_what_it_should(tmp_path):
    X, header = read_csv(_csv(tmp_path, "a;b\n1;2\n3.5;-4e-3\n"))
    assert header == ["a", "b"]
    np.testing.assert_array_equal(X, [[1.0, 2.0], [3.5, -4e-3]])
    X, header = read_csv(_csv(tmp_path, "1\t2\n3\t4\n"))
    assert header is None
    np.testing.assert_array_equal(X, [[1.0, 2.0], [3.0, 4.0]])


# --------------------------------------------------------------------------- the CLI
GOOD = "x,y\n" + "".join(f"{a},{b}\n" for a, b in _X(60, seed=3).tolist())


def _bad_csvs() -> dict[str, tuple[str, str]]:
    rows = GOOD.splitlines()
    return {
        "nan": ("\n".join([*rows[:5], "0.5,nan", *rows[5:]]), re.escape("row(s) [4] contain NaN")),
        "inf": (
            "\n".join([*rows[:3], "inf,0.5", *rows[3:]]),
            re.escape("row(s) [2] contain NaN or infinite"),
        ),
        "ragged": (
            "\n".join([*rows[:4], "0.5,0.5,0.5", *rows[4:]]),
            re.escape("line 5 has 3 cells, expected 2"),
        ),
        "text": (
            "\n".join([*rows[:7], "0.5,hello", *rows[7:]]),
            re.escape("line 8, column 'y': 'hello' is not a number"),
        ),
        "few": ("\n".join(rows[:6]), "need at least 10 samples"),
        "constant": (
            "x,y\n" + "".join(f"{a},1.0\n" for a in np.linspace(0, 1, 20).tolist()),
            re.escape("column(s) [1] are constant"),
        ),
        "outside": (
            "\n".join([*rows[:9], "0.5,7.0", *rows[9:]]),
            re.escape("1 row(s) [8] lie outside the box (column(s) [1]"),
        ),
        "empty": ("", "no data rows"),
    }


def test_failed_cli_fit_leaves_saved_model_untouched(tmp_path):
    runner = CliRunner()
    good = _csv(tmp_path, GOOD, "good.csv")
    model = tmp_path / "m.ebm"
    args = ["--energy", "legendre", "--max-iter", "5", "-q", "--low", "0", "--high", "1"]
    res = runner.invoke(app, ["fit", str(good), "-o", str(model), *args])
    assert res.exit_code == 0, res.output
    before = model.read_bytes()
    for name, (text, match) in _bad_csvs().items():
        bad = _csv(tmp_path, text, f"{name}.csv")
        res = runner.invoke(app, ["fit", str(bad), "-o", str(model), *args])
        assert res.exit_code == 2, (name, res.output)
        assert res.stderr.startswith("error: "), name
        assert re.search(match, res.stderr), (name, res.stderr)
        assert res.stdout == "", name
        assert model.read_bytes() == before, name
    res = runner.invoke(app, ["fit", str(tmp_path / "missing.csv"), "-o", str(model), *args])
    assert res.exit_code == 2 and "no such file" in res.stderr
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".csv") == ["m.ebm"]


def test_cli_bounds_errors(tmp_path):
    runner = CliRunner()
    good = _csv(tmp_path, GOOD, "good.csv")
    out = tmp_path / "m.ebm"
    for extra, match in [
        (["--low", "0,0,0", "--high", "1"], "--low has 3 values but the data has 2 columns"),
        (["--low", "zero", "--high", "1"], "--low must be a number or a comma-separated list"),
        (["--low", "0"], "give both low and high"),
        (["--low", "0.5", "--high", "1"], "lie outside the box"),
    ]:
        res = runner.invoke(app, ["fit", str(good), "-o", str(out), "-q", *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert match in res.stderr, (extra, res.stderr)
    assert not out.exists()


def test_cli_score_bad_input(tmp_path, fitted):
    runner = CliRunner()
    model = tmp_path / "m.ebm"
    fitted.save(model)
    wide = _csv(tmp_path, "a,b,c\n0.1,0.2,0.3\n", "wide.csv")
    res = runner.invoke(app, ["score", str(model), str(wide)])
    assert res.exit_code == 2
    assert "wide.csv has 3 column(s) but the model has 2" in res.stderr
    nan = _csv(tmp_path, "0.1,0.2\nnan,0.3\n", "nan.csv")
    res = runner.invoke(app, ["score", str(model), str(nan)])
    assert res.exit_code == 2
    assert "row(s) [1] contain NaN" in res.stderr
    res = runner.invoke(app, ["score", str(tmp_path / "none.ebm"), str(nan)])
    assert res.exit_code == 2
    assert "no such model file" in res.stderr
