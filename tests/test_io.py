"""Model files (``ebmfit.io``): round trips, the file format, corrupted files, atomic writes.

A model file is one safetensors file whose metadata entry ``"ebmfit"`` holds a JSON header.
The contract tested here:

* save → load gives a model whose ``score_samples`` is *identical* (bit for bit) for every
  energy family, and keeps the log Z record and the fitted extras;
* the file is plain safetensors and loading never unpickles (a pickle disguised as a model
  file is refused without being executed);
* every way a file can be bad (missing, empty, truncated, flipped bytes, random bytes, a
  safetensors file of someone else, a header that lies) raises
  :class:`ebmfit.io.ModelFileError` with a message saying what is wrong — never another
  exception type;
* a save that fails part-way leaves the previous file byte-identical and no temporary file.

Models are fitted with small energies and few iterations: the tests are about the file, not the
fit.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import stat
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ebmfit.io as eio
from ebmfit import Box, EnergyDensity, EnergyModel
from ebmfit.energies import CallableEnergy, LegendreEnergy
from ebmfit.io import ModelFileError, load_model, load_model_with_extra, save_model

FAMILIES = {
    "spline": {"n_basis": 8},
    "legendre": {"degree": 4},
    "cosine": {"n_freq": 6},
    "mlp": {"hidden": (16,), "n_fourier": 8},
}
LOW, HIGH = [-3.0, 10.0], [5.0, 12.0]  # a non-unit box: densities are in user coordinates


def _data(n: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = np.clip(rng.normal([0.4, 0.6], [0.15, 0.2], size=(n, 2)), 0.0, 1.0)
    return np.asarray(LOW) + u * (np.asarray(HIGH) - np.asarray(LOW))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def fitted(request) -> EnergyDensity:
    fam = request.param
    return EnergyDensity(
        fam,
        energy_params=FAMILIES[fam],
        low=LOW,
        high=HIGH,
        max_iter=5,
        random_state=0,
        device="cpu",
    ).fit(_data())


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    """The bytes of a small valid model file (Legendre energy)."""
    path = tmp_path_factory.mktemp("ref") / "ref.ebm"
    _fitted_small(0).save(path)
    return path.read_bytes()


def _split(raw: bytes) -> tuple[int, dict, bytes]:
    """(header length, safetensors header JSON, tensor bytes) of a safetensors file."""
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _with_header(raw: bytes, header: dict) -> bytes:
    """``raw`` with its safetensors header replaced (tensor bytes unchanged)."""
    _, _, body = _split(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + body


def _with_ebmfit_header(raw: bytes, edit) -> bytes:
    """``raw`` with the ebmfit JSON header replaced by ``edit(header)`` (a dict or a string)."""
    _, st, _ = _split(raw)
    new = edit(json.loads(st["__metadata__"]["ebmfit"]))
    st["__metadata__"]["ebmfit"] = new if isinstance(new, str) else json.dumps(new)
    return _with_header(raw, st)


# --------------------------------------------------------------------------- round trips
def test_round_trip_identical_scores(fitted, tmp_path):
    path = tmp_path / "m.ebm"
    fitted.save(path)
    loaded = EnergyDensity.load(path)
    rng = np.random.default_rng(1)
    X = np.asarray(LOW) + rng.uniform(size=(500, 2)) * (np.asarray(HIGH) - np.asarray(LOW))
    np.testing.assert_array_equal(loaded.score_samples(X), fitted.score_samples(X))
    assert loaded.log_partition_ == fitted.log_partition_  # value, stderr, method, n_evals, bias
    assert loaded.n_features_in_ == 2
    assert loaded.domain_ == fitted.domain_
    assert loaded.energy_.spec() == fitted.energy_.spec()
    assert loaded.n_iter_ == fitted.n_iter_
    assert loaded.stop_reason_ == fitted.stop_reason_
    # saving the loaded model again writes the same tensors and the same header
    path2 = tmp_path / "again.ebm"
    loaded.save(path2)
    _, h1, b1 = _split(path.read_bytes())
    _, h2, b2 = _split(path2.read_bytes())
    assert b1 == b2
    assert json.loads(h1["__metadata__"]["ebmfit"]) == json.loads(h2["__metadata__"]["ebmfit"])


def test_round_trip_model_api_and_device(tmp_path):
    """``save_model``/``load_model`` on an EnergyModel with random coefficients; ``device=``."""
    energy = LegendreEnergy(2, degree=5)
    with torch.no_grad():
        energy.coef.copy_(
            torch.randn(energy.coef.shape, generator=torch.Generator().manual_seed(0))
        )
    model = EnergyModel(energy, Box(LOW, HIGH))
    model.log_partition()
    save_model(model, tmp_path / "m.ebm", extra={"note": "random"})
    loaded, extra = load_model_with_extra(tmp_path / "m.ebm", device="cpu")
    X = _data(200, seed=3)
    np.testing.assert_array_equal(loaded.log_prob(X), model.log_prob(X))
    assert extra == {"note": "random"}
    assert load_model(tmp_path / "m.ebm").log_partition_ == model.log_partition_


def test_feature_names_survive(tmp_path):
    est = EnergyDensity("legendre", energy_params={"degree": 2}, low=LOW, high=HIGH, max_iter=5)
    est.fit(_data())
    est.feature_names_in_ = np.asarray(["temperature", "pressure"], dtype=object)
    est.save(tmp_path / "m.ebm")
    assert list(EnergyDensity.load(tmp_path / "m.ebm").feature_names_in_) == [
        "temperature",
        "pressure",
    ]


def test_loaded_estimator_samples_reproducibly(tmp_path):
    est = _fitted_small(0)
    est.save(tmp_path / "m.ebm")
    loaded = EnergyDensity.load(tmp_path / "m.ebm")
    np.testing.assert_array_equal(loaded.sample(50, random_state=7), est.sample(50, random_state=7))


# --------------------------------------------------------------------------- the format
def test_file_is_plain_safetensors(model_bytes, tmp_path):
    path = tmp_path / "m.ebm"
    path.write_bytes(model_bytes)
    n, st, _ = _split(model_bytes)
    assert 8 + n <= len(model_bytes)
    header = json.loads(st["__metadata__"]["ebmfit"])
    assert header["format"] == "ebmfit-model"
    assert header["version"] == 2
    assert len(header["sha256"]) == 64  # checksum over the header and every tensor
    assert header["energy"] == {"family": "legendre", "dim": 2, "degree": 3}
    assert header["domain"] == {"low": LOW, "high": HIGH}
    assert header["base"]["kind"] == "uniform"
    assert set(header["log_partition"]) >= {"value", "stderr", "method", "n_evals"}
    with safe_open(str(path), framework="pt") as f:  # any safetensors reader can open it
        assert set(f.keys()) == {k for k in st if k != "__metadata__"}
        assert f.metadata()["ebmfit"] == st["__metadata__"]["ebmfit"]
    assert b"\x80\x04" not in model_bytes[:16]  # not a pickle stream


def test_loading_never_unpickles(model_bytes, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("model loading must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    path = tmp_path / "m.ebm"
    path.write_bytes(model_bytes)
    EnergyDensity.load(path).score_samples(_data(20))


class _Trap:
    """Unpickling this object creates the file ``marker`` (it would run code on load)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_disguised_as_model_is_refused_without_running(tmp_path):
    marker = tmp_path / "code_was_executed"
    path = tmp_path / "evil.ebm"
    torch.save({"coef": _Trap(str(marker))}, path)
    with pytest.raises(ModelFileError, match="not a readable ebmfit model file"):
        load_model(path)
    path.write_bytes(pickle.dumps(_Trap(str(marker))))
    with pytest.raises(ModelFileError, match="not a readable ebmfit model file"):
        load_model(path)
    assert not marker.exists()


# --------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"nope\.ebm: no such model file"):
        load_model(tmp_path / "nope.ebm")
    with pytest.raises(ModelFileError, match="no such model file"):
        EnergyDensity.load(tmp_path / "nope.ebm")


@pytest.mark.parametrize("keep", [0, 4, 8, 40, "half", -1])
def test_truncated_file(model_bytes, tmp_path, keep):
    n = {"half": len(model_bytes) // 2}.get(keep, keep)
    path = tmp_path / "cut.ebm"
    path.write_bytes(model_bytes[:n])
    with pytest.raises(ModelFileError, match=r"cut\.ebm: not a readable ebmfit model file"):
        load_model(path)


def test_random_bytes(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.ebm"
    for size in (7, 64, 5000):
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        with pytest.raises(ModelFileError, match="not a readable ebmfit model file"):
            load_model(path)


def test_flipped_bytes_in_header_structure(model_bytes, tmp_path):
    """Flips that break the safetensors header (length prefix, JSON syntax) are caught."""
    path = tmp_path / "flip.ebm"
    n, _, _ = _split(model_bytes)
    for pos in (0, 3, 7, 8, 9, 8 + n // 2, 8 + n - 1):
        raw = bytearray(model_bytes)
        raw[pos] ^= 0xFF
        path.write_bytes(bytes(raw))
        with pytest.raises(ModelFileError, match=r"flip\.ebm: "):
            load_model(path)


def test_every_single_byte_flip_in_header_is_handled(model_bytes, tmp_path):
    """Flip the lowest bit of every byte of the header: loading either fails with a
    ModelFileError or (a flip that leaves the same numbers, e.g. a float's last digit)
    yields a model whose log-densities are *identical* to the original's — it never escapes
    with another exception, and never loads a silently different model (the checksum)."""
    path = tmp_path / "flip.ebm"
    n, _, _ = _split(model_bytes)
    X = _data(20)
    ref = load_model(_write(tmp_path / "ref.ebm", model_bytes))
    ref_lp = ref.log_prob(np.clip(X, ref.domain.low, ref.domain.high))
    outcomes = {"error": 0, "loaded": 0}
    for pos in range(8, 8 + n):
        for mask in (0x01,):
            raw = bytearray(model_bytes)
            raw[pos] ^= mask
            path.write_bytes(bytes(raw))
            try:
                model = load_model(path)
            except ModelFileError:
                outcomes["error"] += 1
                continue
            outcomes["loaded"] += 1
            assert model.dim == 2
            np.testing.assert_array_equal(
                model.log_prob(np.clip(X, model.domain.low, model.domain.high)), ref_lp
            )
    assert outcomes["error"] > 0


def test_safetensors_without_ebmfit_header(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ModelFileError, match="safetensors file without an ebmfit header"):
        load_model(path)
    save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="without an ebmfit header"):
        load_model(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda h: "{not json", "corrupted ebmfit header"),
        (lambda h: {**h, "format": "something-else"}, "unknown format 'something-else'"),
        (lambda h: {**h, "version": 99}, "unknown format .* v99"),
        (lambda h: {**h, "version": "one"}, "unknown format"),
        (lambda h: [1, 2, 3], "header"),
        (lambda h: "null", "header"),
        (lambda h: {k: v for k, v in h.items() if k != "energy"}, "inconsistent model file"),
        (lambda h: {**h, "energy": {**h["energy"], "family": "gpt"}}, "unknown energy family"),
        (lambda h: {**h, "energy": {**h["energy"], "degree": 5}}, "inconsistent model file"),
        (lambda h: {**h, "energy": "legendre"}, "inconsistent model file"),
        (lambda h: {**h, "domain": {"low": [0, 0], "high": [0, 1]}}, "inconsistent model file"),
        (lambda h: {**h, "domain": {"low": [0], "high": [1]}}, "inconsistent model file"),
        (lambda h: {**h, "base": {"kind": "uniform", "dim": 3}}, "inconsistent model file"),
        (lambda h: {**h, "base": {"kind": "magic"}}, "inconsistent model file"),
        (lambda h: {**h, "log_partition": {"value": "x"}}, "inconsistent model file"),
        (lambda h: {**h, "extra": "x"}, "inconsistent model file"),
    ],
)
def test_header_that_lies(model_bytes, tmp_path, edit, match):
    path = tmp_path / "lie.ebm"
    path.write_bytes(_with_ebmfit_header(model_bytes, edit))
    with pytest.raises(ModelFileError, match=match):
        load_model(path)


def test_tensors_that_do_not_match_the_header(model_bytes, tmp_path):
    path = tmp_path / "t.ebm"
    _, st, _ = _split(model_bytes)
    meta = st["__metadata__"]
    save_file({"coef": torch.zeros(3, 3, dtype=torch.float64)}, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="inconsistent model file"):
        load_model(path)
    good = dict(load_model(_write(tmp_path / "ok.ebm", model_bytes)).energy_fn.state_dict())
    good["coef"] = torch.full_like(good["coef"], float("nan"))
    save_file(good, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="non-finite values"):
        load_model(path)


def _write(path, raw: bytes):
    path.write_bytes(raw)
    return path


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path)


# --------------------------------------------------------------------------- atomic writes
@functools.cache
def _fitted_small(seed: int) -> EnergyDensity:
    """A small fitted model (cached: saving does not change an estimator)."""
    return EnergyDensity(
        "legendre",
        energy_params={"degree": 3},
        low=LOW,
        high=HIGH,
        max_iter=5,
        random_state=seed,
        base="uniform",
        selection="none",
    ).fit(_data(seed=seed))


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_save_leaves_old_file_intact(tmp_path, monkeypatch, exc):
    path = tmp_path / "m.ebm"
    old = _fitted_small(0)
    old.save(path)
    before = path.read_bytes()
    X = _data(50, seed=9)
    expected = old.score_samples(X)

    def broken_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:  # half a file, then the failure
            f.write(b"\x00" * 100)
        raise exc

    # ebmfit.io binds safetensors' save_file at import: patch the name it calls
    monkeypatch.setattr(eio, "save_file", broken_save_file)
    with pytest.raises(type(exc)):
        _fitted_small(1).save(path)
    assert path.read_bytes() == before
    np.testing.assert_array_equal(EnergyDensity.load(path).score_samples(X), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ebm"]  # no temporary left over


def test_save_over_existing_replaces_it(tmp_path):
    path = tmp_path / "m.ebm"
    _fitted_small(0).save(path)
    new = _fitted_small(1)
    new.save(path)
    X = _data(50, seed=9)
    np.testing.assert_array_equal(EnergyDensity.load(path).score_samples(X), new.score_samples(X))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ebm"]


def test_save_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "m.ebm"
    _fitted_small(0).save(path)
    load_model(path)


def test_saved_file_has_ordinary_permissions(tmp_path):
    """A model file is created like any other file (mode 0o666 minus the umask), not 0o600.

    The atomic write goes through a temporary file; ``tempfile.mkstemp`` creates it with mode
    0o600, which ``os.replace`` would carry over to the model file."""
    old_umask = os.umask(0o022)
    try:
        _fitted_small(0).save(tmp_path / "m.ebm")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "m.ebm").stat().st_mode) == 0o644
    os.chmod(tmp_path / "m.ebm", 0o640)  # saving over a file keeps its permissions
    _fitted_small(1).save(tmp_path / "m.ebm")
    assert stat.S_IMODE((tmp_path / "m.ebm").stat().st_mode) == 0o640


class _Bowl(torch.nn.Module):
    """A trainable energy written as code: ``scale * |u - 1/2|^2``."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.scale * ((u - 0.5) ** 2).sum(-1)


def test_callable_energy_cannot_be_saved(tmp_path):
    path = tmp_path / "m.ebm"
    _fitted_small(0).save(path)
    before = path.read_bytes()
    energy = CallableEnergy(_Bowl(), dim=2, name="bowl")
    model = EnergyModel(energy, Box(LOW, HIGH))
    with pytest.raises(
        TypeError, match=r"CallableEnergy 'bowl' wraps arbitrary code.*cannot be saved"
    ):
        save_model(model, path)
    est = EnergyDensity(energy, low=LOW, high=HIGH, max_iter=5, random_state=0).fit(_data())
    with pytest.raises(TypeError, match="cannot be saved to a model file"):
        est.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ebm"]
