"""Hostile model files: every lie a header can tell is refused before anything is built.

The classes of defect (issue 10): a header whose numbers are wrong but well-formed (NaN or
shifted log Z, a moved box: the checksum and the field checks), a header that asks for huge
sizes (the size checks run against the tensors' shapes *before* the energy is built), a header
that is pathological JSON (nesting depth), and extras of the wrong type or length.  Each is
checked both with the checksum left stale and with it recomputed (so that the field check is
tested on its own, not only hidden behind the checksum), and through the CLI (exit 2, one line).
"""

from __future__ import annotations

import json
import struct
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import ebmfit.io as eio
from ebmfit import Box, EnergyDensity, EnergyModel
from ebmfit.cli import app
from ebmfit.energies import LegendreEnergy
from ebmfit.io import ModelFileError, ModelFileWarning, load_model


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """A small valid model file (Legendre, degree 3, on [2, 5] x [-1, 1]) with names."""
    path = tmp_path_factory.mktemp("ref") / "ref.ebm"
    energy = LegendreEnergy(2, degree=3)
    with torch.no_grad():
        energy.coef.copy_(
            torch.randn(energy.coef.shape, generator=torch.Generator().manual_seed(0))
        )
    model = EnergyModel(energy, Box([2.0, -1.0], [5.0, 1.0]))
    model.log_partition()
    eio.save_model(model, path, extra={"n_iter": 3, "feature_names": ["a", "b"]})
    return path


def _header(path) -> dict:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    st = json.loads(path.read_bytes()[8 : 8 + n])
    return json.loads(st["__metadata__"]["ebmfit"])


def _rewrite(src, dst, edit, *, resign: bool, tensors=None):
    """Copy ``src`` to ``dst`` with the ebmfit header replaced by ``edit(header)``; with
    ``resign`` the checksum is recomputed, so only the field checks can catch the lie."""
    h = edit(_header(src))
    tensors = load_file(str(src)) if tensors is None else tensors
    if resign and isinstance(h, dict):
        h["sha256"] = eio.checksum(h, tensors)
    text = h if isinstance(h, str) else json.dumps(h)
    save_file(tensors, str(dst), metadata={"ebmfit": text})
    return dst


def _set(path: str, value):
    """An edit setting the (dotted) ``path`` of the header to ``value``."""

    def edit(h):
        keys = path.split(".")
        d = h
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
        return h

    return edit


LIES = {
    "nan log Z": (_set("log_partition.value", float("nan")), "log_partition"),
    "inf log Z": (_set("log_partition.value", float("inf")), "log_partition"),
    "text log Z": (_set("log_partition.value", "1.0"), "log_partition"),
    "negative stderr": (_set("log_partition.stderr", -1.0), "stderr"),
    "bad bias": (_set("log_partition.bias", "sideways"), "bias"),
    "n_iter text": (_set("extra.n_iter", "x"), "n_iter"),
    "n_iter bool": (_set("extra.n_iter", True), "n_iter"),
    "fit_time text": (_set("extra.fit_time", "x"), "fit_time"),
    "names too short": (_set("extra.feature_names", ["a"]), "1 feature name"),
    "names too long": (_set("extra.feature_names", ["a", "b", "c"]), "3 feature name"),
    "names not strings": (_set("extra.feature_names", [1, 2]), "feature_names"),
    "names duplicated": (_set("extra.feature_names", ["a", "a"]), "duplicate"),
    "n_features_in": (_set("extra.n_features_in", 3), "n_features_in"),
    "stop_reason": (_set("extra.stop_reason", {"x": 1}), "stop_reason"),
    "box nan": (_set("domain.low", [float("nan"), 0.0]), "domain"),
    "box inverted": (_set("domain.high", [1.0, -2.0]), "high <= low"),
    "box too short": (_set("domain.low", [0.0]), "domain"),
    "dim text": (_set("energy.dim", "2"), "dim"),
    "degree float": (_set("energy.degree", 3.0), "degree"),
}


@pytest.mark.parametrize("resign", [True, False], ids=["resigned", "stale-checksum"])
@pytest.mark.parametrize("case", sorted(LIES))
def test_header_lies_are_refused(ref, tmp_path, case, resign):
    edit, match = LIES[case]
    path = _rewrite(ref, tmp_path / "lie.ebm", edit, resign=resign)
    with pytest.raises(ModelFileError, match=match if resign else None):
        load_model(path)


# --------------------------------------------------------------------------- checksum
TAMPER = {
    "log Z shifted": _set("log_partition.value", 0.5),
    "box moved": _set("domain.high", [6.0, 1.0]),
    "names swapped": _set("extra.feature_names", ["b", "a"]),
    "fit time": _set("extra.fit_time", 1.0),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_tampered_but_plausible_header_fails_the_checksum(ref, tmp_path, case):
    path = _rewrite(ref, tmp_path / "t.ebm", TAMPER[case], resign=False)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_model(path)
    # the same edit with the checksum recomputed is a valid (different) model: the checksum
    # is what refused it
    load_model(_rewrite(ref, tmp_path / "t2.ebm", TAMPER[case], resign=True))


def test_tampered_coefficients_fail_the_checksum(ref, tmp_path):
    t = load_file(str(ref))
    t["coef"] = t["coef"].clone()
    t["coef"][1, 1] += 1e-9
    path = _rewrite(ref, tmp_path / "c.ebm", lambda h: h, resign=False, tensors=t)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_model(path)


def test_missing_checksum_is_refused_and_v1_files_warn(ref, tmp_path):
    drop = lambda h: {k: v for k, v in h.items() if k != "sha256"}  # noqa: E731
    with pytest.raises(ModelFileError, match="no checksum"):
        load_model(_rewrite(ref, tmp_path / "a.ebm", drop, resign=False))
    v1 = lambda h: {**drop(h), "version": 1}  # noqa: E731
    with pytest.warns(ModelFileWarning, match="without a checksum"):
        m = load_model(_rewrite(ref, tmp_path / "b.ebm", v1, resign=False))
    X = np.array([[3.0, 0.0], [4.0, 0.5]])
    np.testing.assert_array_equal(m.log_prob(X), load_model(ref).log_prob(X))


# --------------------------------------------------------------------------- sizes
HUGE = {
    "legendre degree": {"family": "legendre", "dim": 2, "degree": 10**6},
    "legendre degree in range": {"family": "legendre", "dim": 2, "degree": 200},
    "spline n_basis": {"family": "spline", "dim": 2, "n_basis": 30000},
    "spline n_basis^d": {"family": "spline", "dim": 3, "n_basis": 4000},
    "cosine n_freq": {"family": "cosine", "dim": 2, "n_freq": 10**5},
    "mlp hidden": {"family": "mlp", "dim": 2, "hidden": [10**6], "n_fourier": 8},
    "mlp many layers": {"family": "mlp", "dim": 2, "hidden": [4096] * 60, "n_fourier": 8},
    "mlp n_fourier": {"family": "mlp", "dim": 2, "hidden": [8], "n_fourier": 10**7},
    "dim": {"family": "legendre", "dim": 10**9, "degree": 3},
    "residual inner": {
        "family": "residual",
        "bound": 3.0,
        "inner": {"family": "mlp", "dim": 2, "hidden": [10**6]},
    },
}


@pytest.mark.parametrize("case", sorted(HUGE))
def test_huge_sizes_are_refused_before_anything_is_built(ref, tmp_path, monkeypatch, case):
    def built(*a, **k):
        raise AssertionError("the loader built an energy from an unchecked header")

    monkeypatch.setattr(eio, "make_energy", built)
    path = _rewrite(ref, tmp_path / "big.ebm", _set("energy", HUGE[case]), resign=True)
    with pytest.raises(ModelFileError, match="inconsistent model file"):
        load_model(path)


def test_huge_base_mixture_is_refused(ref, tmp_path):
    base = {"kind": "logit_gmm", "dim": 2, "n_components": 10**6, "uniform_weight": 0.1}
    path = _rewrite(ref, tmp_path / "b.ebm", _set("base", base), resign=True)
    with pytest.raises(ModelFileError, match="n_components"):
        load_model(path)
    base = {"kind": "logit_gmm", "dim": 2, "n_components": 3, "uniform_weight": 0.1}
    path = _rewrite(ref, tmp_path / "b.ebm", _set("base", base), resign=True)
    with pytest.raises(ModelFileError, match="tensors missing"):
        load_model(path)
    tg = {"kind": "truncated_gmm", "dim": 2, "weights": [1.0], "means": [[0.5]],
          "stds": [[0.1, 0.1]]}  # fmt: skip
    path = _rewrite(ref, tmp_path / "b.ebm", _set("base", tg), resign=True)
    with pytest.raises(ModelFileError, match="means"):
        load_model(path)


def test_flow_base_passes_is_checked(ref, tmp_path):
    flow = {"kind": "flow", "dim": 2, "transforms": 1, "hidden": [4], "uniform_weight": 0.0}
    for bad in (1, 3, "2", 2.5):
        path = _rewrite(ref, tmp_path / "f.ebm", _set("base", {**flow, "passes": bad}), resign=True)
        with pytest.raises(ModelFileError, match="passes"):
            load_model(path)


def test_every_base_kind_and_energy_family_has_a_check():
    """New kinds must come with their size check (see ebmfit.io's docstring)."""
    from ebmfit.energies import FAMILIES

    assert set(FAMILIES) <= set(eio.ENERGY_CHECKS)
    assert {"uniform", "truncated_gmm", "logit_gmm"} <= set(eio.BASE_CHECKS)


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_header(ref, tmp_path, depth):
    nest = "[" * depth + "]" * depth
    path = _rewrite(ref, tmp_path / "deep.ebm", lambda h: json.dumps(h)[:-1] + f', "x": {nest}}}',
                    resign=False)  # fmt: skip
    with pytest.raises(ModelFileError, match="nested deeper"):
        load_model(path)


# --------------------------------------------------------------------------- through the CLI
@pytest.mark.parametrize(
    "edit",
    [
        LIES["nan log Z"][0],
        LIES["n_iter text"][0],
        LIES["names too short"][0],
        _set("energy", HUGE["spline n_basis"]),
    ],
    ids=["nan-logz", "n_iter", "names", "huge"],
)
@pytest.mark.parametrize("command", ["info", "sample", "plot", "score"])
def test_cli_refuses_bad_files_with_one_line(ref, tmp_path, edit, command):
    path = _rewrite(ref, tmp_path / "bad.ebm", edit, resign=True)
    data = tmp_path / "d.csv"
    data.write_text("a,b\n3,0\n4,0.5\n")
    args = {
        "info": ["info", str(path)],
        "sample": ["sample", str(path), "-n", "5"],
        "plot": ["plot", str(path), "-o", str(tmp_path / "p.png")],
        "score": ["score", str(path), str(data)],
    }[command]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    assert "inconsistent model file" in res.stderr


def test_good_file_still_round_trips(ref):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = EnergyDensity.load(ref)
    assert list(est.feature_names_in_) == ["a", "b"]
    assert est.n_iter_ == 3
