"""Contract tests over every energy family."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmfit import Box, EnergyModel
from ebmfit.energies import (
    CallableEnergy,
    CosineEnergy,
    LegendreEnergy,
    MLPEnergy,
    QuadraticEnergy,
    SplineEnergy,
    make_energy,
)
from ebmfit.energies.base import tensor_grid
from ebmfit.io import load_model, save_model


def randomised(e, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in e.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return e


FACTORIES = {
    "spline": lambda d: SplineEnergy(d, 7),
    "legendre": lambda d: LegendreEnergy(d, 5),
    "cosine": lambda d: CosineEnergy(d, 5),
    "mlp": lambda d: MLPEnergy(d, hidden=(16, 16), n_fourier=8),
    "quadratic": lambda d: QuadraticEnergy(d),
}


@pytest.fixture(params=list(FACTORIES))
def family(request):
    return request.param


@pytest.mark.parametrize("d", [1, 2, 3])
def test_shapes_and_gradient_reaches_every_parameter(family, d):
    e = randomised(FACTORIES[family](d))
    u = torch.rand(17, d, dtype=torch.float64)
    v = e(u)
    assert v.shape == (17,)
    v.sum().backward()
    for name, p in e.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if name != "mask":
            assert p.grad.abs().sum() > 0, name


def test_float32_and_float64_agree(family):
    e64 = randomised(FACTORIES[family](2)).double()
    e32 = FACTORIES[family](2).float()
    e32.load_state_dict({k: v.float() for k, v in e64.state_dict().items()})
    u = torch.rand(50, 2, dtype=torch.float64)
    assert e32(u.float()).dtype == torch.float32
    assert torch.allclose(e32(u.float()).double(), e64(u), atol=1e-4, rtol=1e-4)


def test_spec_and_file_round_trip(family, tmp_path):
    e = randomised(FACTORIES[family](2))
    e2 = make_energy(e.spec())
    e2.load_state_dict(e.state_dict())
    u = torch.rand(20, 2, dtype=torch.float64)
    assert torch.equal(e(u), e2(u))
    m = EnergyModel(e, Box([0, -1], [2, 1]))
    m.log_partition()
    save_model(m, tmp_path / "m.ebm")
    m2 = load_model(tmp_path / "m.ebm")
    x = m.domain.from_unit(u.numpy())
    assert np.array_equal(m.log_prob(x), m2.log_prob(x))
    assert m2.log_partition_ == m.log_partition_


@pytest.mark.parametrize("d", [1, 2, 3])
def test_grid_values_match_pointwise(family, d):
    e = randomised(FACTORIES[family](d))
    axes = [torch.rand(n, dtype=torch.float64) for n in (5, 4, 3)[:d]]
    with torch.no_grad():
        assert torch.allclose(
            e.grid_values(axes).double(), e(tensor_grid(axes)).double(), atol=1e-5
        )


@pytest.mark.parametrize("cls", [SplineEnergy, LegendreEnergy, CosineEnergy])
def test_grid_moments_is_the_adjoint_of_grid_values(cls):
    e = randomised(cls(2, 6))
    axes = [torch.rand(7, dtype=torch.float64), torch.rand(5, dtype=torch.float64)]
    w = torch.rand(35, dtype=torch.float64)
    Phi = e.features(tensor_grid(axes))  # (35, K^2)
    m = e.grid_moments(axes, w)
    assert torch.allclose(m.reshape(-1), (w[:, None] * Phi).sum(0), atol=1e-12)
    m2 = e.grid_moments(axes, w, power=2)
    assert torch.allclose(m2.reshape(-1), (w[:, None] * Phi**2).sum(0), atol=1e-12)


def test_linear_energies_are_linear_in_their_features():
    for cls in (SplineEnergy, LegendreEnergy, CosineEnergy):
        e = randomised(cls(2, 6))
        u = torch.rand(30, 2, dtype=torch.float64)
        assert torch.allclose(e(u), e.features(u) @ e.coef.reshape(-1), atol=1e-12)
        assert torch.allclose(e.mean_features(u).reshape(-1), e.features(u).mean(0), atol=1e-12)


def test_spline_basis_is_a_partition_of_unity():
    e = SplineEnergy(1, 9)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    B = e.basis1d(t)
    assert torch.allclose(B.sum(1), torch.ones_like(t), atol=1e-12)
    assert (B >= 0).all()


def test_roughness_diag_is_the_hessian_diagonal():
    for e in (
        SplineEnergy(2, 6, penalty_order=3),
        SplineEnergy(2, 6, penalty_order=2),
        LegendreEnergy(2, 4),
        CosineEnergy(2, 4),
    ):
        c = e.coef.detach().clone()
        H = torch.autograd.functional.hessian(lambda t, e=e: e.roughness(t), c)
        diag = torch.diagonal(H.reshape(c.numel(), c.numel()))
        assert torch.allclose(
            diag.reshape(c.shape) * e.mask, e.roughness_diag() * e.mask, atol=1e-9
        )
        Q, dq = e.penalty_transform()
        if Q is not None:  # Q^T ⊗ Q^T H Q ⊗ Q is diagonal with entries dq
            QQ = torch.kron(Q, Q)
            Hq = QQ.T @ H.reshape(c.numel(), c.numel()) @ QQ
            assert torch.allclose(Hq, torch.diag(dq.reshape(-1)), atol=1e-8)


def test_callable_energy_refuses_to_be_saved_and_checks_shape():
    e = CallableEnergy(lambda u: (u**2).sum(-1), 2, lipschitz=2 * 2**0.5)
    with pytest.raises(TypeError, match="cannot be saved"):
        e.spec()
    bad = CallableEnergy(lambda u: u, 2)
    with pytest.raises(ValueError, match="shape"):
        bad(torch.rand(3, 2))


# ----------------------------------------------------------------- soundness of bounds
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    width=st.floats(0.001, 1.0),
    fam=st.sampled_from(["spline", "legendre", "cosine", "mlp", "quadratic", "callable"]),
)
def test_interval_bounds_contain_dense_evaluations(seed, width, fam):
    d = 2
    if fam == "callable":
        e = CallableEnergy(lambda u: torch.sin(3 * u).sum(-1), d, lipschitz=3 * d**0.5)
    else:
        e = randomised(FACTORIES[fam](d), scale=1.0, seed=seed)
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(16, d, generator=g, dtype=torch.float64) * (1 - width)
    hi = lo + width
    vlo, vhi = e.interval_bounds(lo, hi)
    r = torch.rand(16, 400, d, generator=g, dtype=torch.float64)
    corners = torch.tensor([[0.0, 0.0], [0, 1], [1, 0], [1, 1]], dtype=torch.float64)
    r = torch.cat([r, corners.expand(16, -1, -1)], 1)
    pts = lo[:, None] + r * (hi - lo)[:, None]
    with torch.no_grad():
        v = e(pts.reshape(-1, d).to(e.param_dtype())).double().reshape(16, -1)
    assert torch.all(v >= vlo[:, None]) and torch.all(v <= vhi[:, None])


@pytest.mark.parametrize("fam", ["spline", "legendre", "cosine", "mlp", "quadratic"])
def test_interval_bounds_tighten_on_small_boxes(fam):
    e = randomised(FACTORIES[fam](2))
    c = torch.rand(32, 2, dtype=torch.float64) * 0.9 + 0.05
    gaps = []
    for h in (1e-1, 1e-2, 1e-3):
        vlo, vhi = e.interval_bounds(c - h / 2, c + h / 2)
        gaps.append(float((vhi - vlo).mean()))
    assert gaps[2] < gaps[1] < gaps[0]
    assert gaps[2] < 0.05 * gaps[0]
