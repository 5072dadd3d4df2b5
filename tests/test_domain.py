import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ebmfit import Box, DataError
from ebmfit.domain import reflect_unit


def test_box_maps_round_trip_and_log_volume():
    b = Box([-1.0, 2.0], [3.0, 2.5])
    x = np.array([[0.0, 2.1], [3.0, 2.5]])
    u = b.to_unit(x)
    assert np.allclose(b.from_unit(u), x)
    assert np.allclose(u[1], [1, 1])
    assert b.log_volume == pytest.approx(np.log(4 * 0.5))
    t = torch.as_tensor(x)
    assert torch.allclose(b.from_unit(b.to_unit(t)), t)


def test_box_rejects_empty_dimensions():
    with pytest.raises(ValueError, match="dimension"):
        Box([0, 1], [1, 1])


def test_from_data_adds_margin_and_handles_constant_columns():
    X = np.array([[0.0, 5.0], [1.0, 5.0]])
    b = Box.from_data(X, margin=0.1)
    assert b.low[0] == pytest.approx(-0.1) and b.high[0] == pytest.approx(1.1)
    assert b.high[1] > 5 > b.low[1]


def test_validate_names_rows_and_columns():
    b = Box.unit(3)
    X = np.full((6, 3), 0.5)
    X[2, 1] = 1.5
    X[4, 0] = -0.1
    with pytest.raises(DataError, match=r"row\(s\) \[2, 4\].*column\(s\) \[0, 1\]"):
        b.validate(X)
    Y = b.validate(X, clip=True)
    assert Y[2, 1] == 1 and Y[4, 0] == 0
    X[3, 2] = np.nan
    with pytest.raises(DataError, match=r"\[3\] contain NaN"):
        b.validate(X)


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=20))
def test_reflection_lands_in_cube_and_fixes_the_cube(vals):
    u = torch.tensor(vals, dtype=torch.float64)
    r = reflect_unit(u)
    assert torch.all((r >= 0) & (r <= 1))
    inside = (u >= 0) & (u <= 1)
    assert torch.allclose(r[inside], u[inside])
    assert torch.allclose(reflect_unit(r), r)
