"""User workflows around certificates: compression, targets, mixtures with the base, reports."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ebmfit import Box, EnergyModel
from ebmfit.certify import (
    KLCertificate,
    base_mixture,
    compress,
    kl_bound,
    kl_quadrature,
    oscillation_bounds,
    target_energy,
)
from ebmfit.datasets import load_target
from ebmfit.energies import CallableEnergy, LegendreEnergy, MLPEnergy

F64 = torch.float64


@pytest.fixture(scope="module")
def mlp_model():
    torch.manual_seed(0)
    e = MLPEnergy(2, hidden=(24, 24), n_fourier=8, seed=3)
    with torch.no_grad():
        e.net[-1].weight.mul_(20)  # a non-trivial density
    return EnergyModel(e, Box([0.0, -1.0], [2.0, 1.0]))


@pytest.mark.parametrize("how", ["float16", "bfloat16", "prune", "distil"])
def test_compress_returns_model_and_certificate_that_holds(mlp_model, how):
    kw = {"student": LegendreEnergy(2, 8)} if how == "distil" else {"amount": 0.3}
    before = {k: v.clone() for k, v in mlp_model.energy_fn.state_dict().items()}
    small, cert = compress(mlp_model, how, tol=0.2, time_limit=20.0, **kw)
    assert isinstance(small, EnergyModel) and isinstance(cert, KLCertificate)
    assert small.domain == mlp_model.domain
    assert cert.osc.converged and cert.holds
    assert cert.kl_ab.value <= cert.kl_upper and cert.kl_ba.value <= cert.kl_upper
    new = dict(small.energy_fn.named_parameters())
    if how in ("float16", "bfloat16"):
        dt = torch.float16 if how == "float16" else torch.bfloat16
        for p in new.values():  # the weights are exactly representable in 16 bits
            assert torch.equal(p, p.to(dt).to(p.dtype))
    if how == "prune":
        W = new["net.0.weight"]
        assert abs(float((W == 0).float().mean()) - 0.3) < 0.01
    # the original is untouched
    after = mlp_model.energy_fn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_compression_bound_orders_with_precision(mlp_model):
    _, c16 = compress(mlp_model, "float16", tol=0.2, time_limit=20.0)
    _, cbf = compress(mlp_model, "bfloat16", tol=0.2, time_limit=20.0)
    assert c16.kl_upper < cbf.kl_upper  # 11 vs 8 significant bits


def test_certificate_report_and_dict(mlp_model):
    _, cert = compress(mlp_model, "float16", tol=0.2, time_limit=20.0)
    text = str(cert)
    assert "KL(A||B) and KL(B||A) <=" in text and "osc(V_B - V_A) in [" in text
    d = json.loads(json.dumps(cert.to_dict()))
    assert d["kl_upper"] == pytest.approx(cert.kl_upper)
    assert d["osc"]["upper"] >= d["osc"]["lower"] >= 0
    assert d["holds"] is True


def test_kl_bound_rejects_models_on_different_boxes_or_bases(mlp_model):
    other = EnergyModel(mlp_model.energy_fn, Box.unit(2))
    with pytest.raises(ValueError, match="different boxes"):
        kl_bound(mlp_model, other)


def test_kl_quadrature_is_additive_over_independent_coordinates():
    """Product densities: KL of the product is the sum of the 1-D KLs."""

    def model(d, coefs):
        e = LegendreEnergy(d, 2)
        with torch.no_grad():
            for idx, v in coefs.items():
                e.coef[idx] = v
        return EnergyModel(e, Box.unit(d))

    a2 = model(2, {(1, 0): 0.7, (0, 2): -0.4})
    b2 = model(2, {(1, 0): -0.3, (0, 2): 0.5})
    ax, bx = model(1, {(1,): 0.7}), model(1, {(1,): -0.3})
    ay, by = model(1, {(2,): -0.4}), model(1, {(2,): 0.5})
    total = kl_quadrature(a2, b2).value
    parts = kl_quadrature(ax, bx).value + kl_quadrature(ay, by).value
    assert abs(total - parts) < 1e-12


@pytest.mark.parametrize("name", ["gaussian_mixture", "correlated_gaussian"])
def test_target_energy_is_minus_log_density_with_sound_bounds(name):
    tgt = load_target(name)
    V = target_energy(tgt)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(2000, 2, generator=g, dtype=F64)
    with torch.no_grad():
        assert float((V(u) + torch.as_tensor(tgt.log_prob(u.numpy()))).abs().max()) < 1e-9
    lo = torch.rand(200, 2, generator=g, dtype=F64) * 0.8
    hi = lo + 0.2 * torch.rand(200, 2, generator=g, dtype=F64)
    t = torch.rand(200, 50, 2, generator=g, dtype=F64)
    pts = lo[:, None] + t * (hi - lo)[:, None]
    with torch.no_grad():
        v = V(pts.reshape(-1, 2)).reshape(200, 50)
    vl, vh = V.interval_bounds(lo, hi)
    assert bool((vl[:, None] <= v).all() and (v <= vh[:, None]).all())


def test_target_energy_on_a_sub_box_maps_coordinates():
    tgt = load_target("correlated_gaussian")
    box = Box([0.2, 0.1], [0.9, 0.8])
    V = target_energy(tgt, box)
    u = torch.rand(100, 2, dtype=F64)
    x = box.from_unit(u)
    with torch.no_grad():
        assert float((V(u) + torch.as_tensor(tgt.log_prob(x.numpy()))).abs().max()) < 1e-9


def test_target_with_zeros_has_no_finite_certificate():
    with pytest.raises(ValueError, match="no finite KL certificate"):
        target_energy(load_target("checkerboard"))
    with pytest.raises(ValueError, match="leaves the support"):
        target_energy(load_target("correlated_gaussian"), Box([-0.1, 0.0], [1.0, 1.0]))


def test_target_without_analytic_bounds_needs_a_lipschitz_constant():
    tgt = load_target("banana")
    with pytest.raises(ValueError, match="lipschitz"):
        target_energy(tgt)
    # |d log q/dx1| <= 0.5/s1^2 + 0.8*4*0.5/s2^2, |d/dx2| <= 0.8/s2^2 on the square
    L = math.hypot(0.5 / tgt.s1**2 + 0.8 * 2 / tgt.s2**2, 0.8 / tgt.s2**2)
    V = target_energy(tgt, lipschitz=L)
    assert isinstance(V, CallableEnergy)
    lo = torch.rand(50, 2, dtype=F64) * 0.9
    hi = lo + 0.1
    pts = lo[:, None] + torch.rand(50, 30, 2, dtype=F64) * 0.1
    v = V(pts.reshape(-1, 2)).reshape(50, 30)
    vl, vh = V.interval_bounds(lo, hi)
    assert bool((vl[:, None] <= v).all() and (v <= vh[:, None]).all())


def test_model_versus_target_certificate():
    """A Legendre fit of a smooth target: certified KL(Q*||Q_m) above its quadrature value."""
    tgt = load_target("correlated_gaussian")
    star = EnergyModel(target_energy(tgt), Box.unit(2))
    fit = LegendreEnergy(2, 2)  # the exact family of this target's energy (a quadratic)
    u = torch.rand(4000, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        Phi = fit.features(u)
        y = star.energy_fn(u)
        cols = fit.mask.reshape(-1) > 0
        sol = torch.linalg.lstsq(
            Phi[:, cols] - Phi[:, cols].mean(0), (y - y.mean())[:, None]
        ).solution
        c = torch.zeros(fit.coef.numel(), dtype=F64)
        c[cols] = sol[:, 0]
        fit.coef.copy_(c.reshape(fit.coef.shape))
    cert = kl_bound(star, EnergyModel(fit, Box.unit(2)), tol=0.2, time_limit=4.0)
    assert cert.holds
    # the target's energy is a quadratic, represented exactly: the KLs are round-off, and the
    # certificate (which must resolve h ≈ const everywhere, so it stops at the time limit)
    # is already small
    assert cert.kl_ab.value < 1e-12 and cert.osc.lower < 1e-10
    assert not cert.osc.converged and "time limit" in cert.osc.stop_reason
    assert cert.kl_upper < 1e-4


def test_base_mixture_energy_and_kl_bounds():
    """Q_n = (1-1/n) Q + (1/n) P: V_n = -log((1-1/n) q + 1/n) and KL(Q||Q_n) <= -log(1-1/n)."""
    e = LegendreEnergy(2, 3)
    with torch.no_grad():
        e.coef.copy_(
            torch.randn(e.coef.shape, generator=torch.Generator().manual_seed(2), dtype=F64) * 2
        )
    m = EnergyModel(e, Box.unit(2))
    lz = m.log_partition().value
    for n in (2, 5, 50):
        Vn = base_mixture(m, n)
        u = torch.rand(500, 2, dtype=F64)
        with torch.no_grad():
            q = torch.exp(-e(u) - lz)
            assert float((Vn(u) + torch.log((1 - 1 / n) * q + 1 / n)).abs().max()) < 1e-12
        kl = kl_quadrature(m, EnergyModel(Vn, Box.unit(2))).value
        assert kl <= -math.log1p(-1 / n)
        # V_n is bounded (by log n above, since q >= 0) and its oscillation is certified
        zero = LegendreEnergy(2, 1)  # V = 0
        res = oscillation_bounds(zero, Vn, tol=0.1, time_limit=10.0)
        grid = torch.stack(
            torch.meshgrid(*[torch.linspace(0, 1, 201, dtype=F64)] * 2, indexing="ij"), -1
        ).reshape(-1, 2)
        with torch.no_grad():
            v = Vn(grid)
        assert res.converged and res.upper >= float(v.max() - v.min())
        assert float(v.max()) <= res.sup_upper and res.sup_lower <= math.log(n)


def test_cli_certify_and_study(tmp_path, mlp_model):
    from typer.testing import CliRunner

    from ebmfit.cli import app
    from ebmfit.io import save_model

    small, _ = compress(mlp_model, "float16", tol=0.5, time_limit=5.0)
    save_model(mlp_model, tmp_path / "a.ebm")
    save_model(small, tmp_path / "b.ebm")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "certify",
            str(tmp_path / "a.ebm"),
            str(tmp_path / "b.ebm"),
            "--tol",
            "0.3",
            "--json",
            str(tmp_path / "c.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "KL(A||B) and KL(B||A) <=" in res.output
    assert json.loads((tmp_path / "c.json").read_text())["holds"] is True
    res = runner.invoke(app, ["certify", str(tmp_path / "a.ebm"), str(tmp_path / "nope.ebm")])
    assert res.exit_code == 2
    res = runner.invoke(app, ["study", "errata", "--quick", "-o", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "errata.md").exists() and (tmp_path / "rep" / "errata.png").exists()
    res = runner.invoke(app, ["study", "nope"])
    assert res.exit_code == 2
