"""Columns recorded on a grid: detected, recorded in ``grid_columns_``, warned about once."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmfit import EnergyDensity, GridDataWarning
from ebmfit._lattice import MAX_LEVEL_FRACTION, grid_columns, grid_message


@settings(max_examples=50, deadline=None)
@given(
    step=st.sampled_from([1.0, 0.1, 0.25, 1e-3, 5.0]),
    offset=st.floats(-100, 100),
    levels=st.integers(2, 20),
    seed=st.integers(0, 2**16),
)
def test_values_on_a_grid_are_found_with_their_step(step, offset, levels, seed):
    rng = np.random.default_rng(seed)
    n = 200
    k = np.r_[0, levels - 1, rng.integers(0, levels, n - 2)]  # both ends present
    g = offset + step * k
    X = np.c_[rng.normal(size=n), g]
    cols = grid_columns(X)
    assert [c.column for c in cols] == [1]
    assert cols[0].step == pytest.approx(step, rel=1e-6)
    assert cols[0].n_values == np.unique(g).size


def test_continuous_and_irregular_columns_are_not_grids():
    rng = np.random.default_rng(0)
    n = 500
    cont = rng.normal(size=n)
    irregular = rng.choice([0.0, 1.0, np.sqrt(2.0)], n)  # few values, no common step
    many = np.arange(n) * 0.5  # a grid, but every value distinct: nothing repeats
    assert grid_columns(np.c_[cont, irregular, many]) == []
    assert int(MAX_LEVEL_FRACTION * n) < n  # the level cap is what rules out `many`
    assert grid_columns(np.c_[np.round(cont, 1)][:20]) == []  # too few rows to tell


def test_fit_warns_once_and_names_the_columns():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"depth": rng.normal(size=300), "mag": np.round(rng.normal(size=300), 1)})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        est = EnergyDensity(random_state=0).fit(X)
    grid = [x for x in w if issubclass(x.category, GridDataWarning)]
    assert len(grid) == 1
    msg = str(grid[0].message)
    assert "mag" in msg and "step 0.1" in msg and "depth" not in msg and "dequantized" in msg
    assert [c.column for c in est.grid_columns_] == [1]
    assert "\n" not in grid_message(est.grid_columns_ * 7)  # one line, at most 5 named
    assert "and 2 more" in grid_message(est.grid_columns_ * 7)


def test_cli_prints_the_warning_as_one_line(tmp_path):
    import subprocess
    import sys

    rng = np.random.default_rng(2)
    csv = tmp_path / "q.csv"
    pd.DataFrame({"mag": np.round(4 + rng.gamma(2.0, 0.3, 200), 1)}).to_csv(csv, index=False)
    r = subprocess.run(
        [sys.executable, "-m", "ebmfit", "fit", str(csv), "-o", str(tmp_path / "m.ebm")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "column 0" in lines[0] and "step 0.1" in lines[0]
    assert "GridDataWarning" not in r.stderr and ".py:" not in r.stderr
