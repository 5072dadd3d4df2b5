"""Model files: safetensors weights with a JSON header; loading executes no code.

A ``.ebm`` file is a single safetensors file.  Its metadata entry ``"ebmfit"`` holds a JSON
document with the format version, the energy spec (family + hyperparameters), the box, the
base measure, log Z (with error, method, cost), free-form extras and a SHA-256 checksum over
all of that and every tensor.  Writes are atomic (temporary file + rename), so an interrupted
save never corrupts an existing file.

Loading trusts nothing in the file.  In order, before anything is built:

1. the header's size and JSON nesting depth are bounded (no ``RecursionError``, no huge parse);
2. every field is type- and range-checked; the sizes the header asks for (``n_basis``,
   ``degree``, ``hidden``, mixture components, ...) are checked against sane limits *and*
   against the shapes of the tensors actually in the file (read from the safetensors index,
   without loading them), so a 37 KB file cannot make the loader allocate gigabytes;
3. the tensors are loaded (their size is the file's size) and must be finite;
4. the checksum must match: a tampered log Z, box or coefficient is refused.

The header checks live in :mod:`ebmfit.io.checks`; the per-kind ones are small functions in
two registries, :data:`ENERGY_CHECKS` (by energy family) and :data:`BASE_CHECKS` (by
base-measure kind), re-exported here.  A new kind adds one function, e.g.::

    @register_base_check("my_kind")
    def _check_my_kind(spec: dict, dim: int, shapes: dict[str, tuple[int, ...]]) -> None: ...

The checksum guards against corruption and hand edits, not against an adversary (anyone can
recompute a SHA-256): model files are data, and loading one never runs code.  Files of format
version 1 (written before checksums) still load, with a :class:`ModelFileWarning`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import stat
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..base import base_from_dict
from ..domain import Box
from ..energies import make_energy
from ..model import EnergyModel
from ..partition.result import LogZ
from .checks import (
    BASE_CHECKS,
    BASE_PREFIX,
    ENERGY_CHECKS,
    MAX_HEADER_CHARS,
    MAX_JSON_DEPTH,
    Shapes,
    check_header,
    is_int,
    json_depth,
    register_base_check,
    register_energy_check,
)

__all__ = [
    "BASE_CHECKS",
    "ENERGY_CHECKS",
    "ModelFileError",
    "ModelFileWarning",
    "load_model",
    "load_model_with_extra",
    "register_base_check",
    "register_energy_check",
    "save_model",
]

FORMAT = "ebmfit-model"
VERSION = 2  # 2: with the "sha256" checksum; 1: without (loaded with a warning)


class ModelFileError(ValueError):
    """A model file is missing, truncated, corrupted or of an unknown format."""


class ModelFileWarning(UserWarning):
    """A model file loaded, but something about it could not be checked (e.g. no checksum)."""


# --------------------------------------------------------------------------- checksum
def _canonical(header: dict) -> bytes:
    h = {k: v for k, v in header.items() if k != "sha256"}
    return json.dumps(h, sort_keys=True, separators=(",", ":")).encode()


def checksum(header: dict, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the header (without its ``"sha256"`` entry, canonical JSON) and every
    tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256(_canonical(header))
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- save
def save_model(model: EnergyModel, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write ``model`` to ``path`` atomically."""
    path = Path(path)
    spec = model.energy_fn.spec()  # raises for energies that wrap code
    header = {
        "format": FORMAT,
        "version": VERSION,
        "energy": spec,
        "domain": model.domain.to_dict(),
        "base": model.base.to_dict(),
        "log_partition": None if model.log_partition_ is None else model.log_partition_.to_dict(),
        "extra": extra or {},
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.energy_fn.state_dict().items()}
    for k, v in getattr(model.base, "tensors", dict)().items():  # a fitted base's parameters
        tensors[BASE_PREFIX + k] = v.detach().cpu().contiguous()
    header = json.loads(json.dumps(header))  # exactly what a reader will see
    header["sha256"] = checksum(header, tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name next to the target, created exclusively with the default permissions
    # (0o666 minus the umask; mkstemp and safetensors both create 0o600 files)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp, "xb"):
            pass
        mode = stat.S_IMODE(os.stat(path if path.is_file() else tmp).st_mode)
        save_file(tensors, tmp, metadata={"ebmfit": json.dumps(header)})
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- load
def _read_index(path: Path) -> tuple[dict, Shapes, dict]:
    """The safetensors metadata, tensor shapes and dtypes, without loading any tensor."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        shapes, dtypes = {}, {}
        for k in f.keys():
            sl = f.get_slice(k)
            shapes[k] = tuple(int(x) for x in sl.get_shape())
            dtypes[k] = str(sl.get_dtype())
    return meta, shapes, dtypes


def load_model_with_extra(
    path: str | os.PathLike, device: str | torch.device | None = None
) -> tuple[EnergyModel, dict]:
    """Read a model file; returns the model and the extras dict (see the module docstring for
    what is checked, and in which order)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        meta, shapes, dtypes = _read_index(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(
            f"{path}: not a readable ebmfit model file (truncated or corrupted?): {e}"
        ) from e
    if "ebmfit" not in meta:
        raise ModelFileError(f"{path}: a safetensors file without an ebmfit header")
    text = meta["ebmfit"]
    if len(text) > MAX_HEADER_CHARS:
        raise ModelFileError(f"{path}: corrupted ebmfit header ({len(text)} characters)")
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ModelFileError(
            f"{path}: corrupted ebmfit header (JSON nested deeper than {MAX_JSON_DEPTH} levels)"
        )
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ModelFileError(f"{path}: corrupted ebmfit header ({e})") from e
    if not isinstance(header, dict):
        raise ModelFileError(
            f"{path}: corrupted ebmfit header (a JSON {type(header).__name__}, not an object)"
        )
    version = header.get("version")
    if header.get("format") != FORMAT or not is_int(version) or not 1 <= version <= VERSION:
        raise ModelFileError(f"{path}: unknown format {header.get('format')!r} v{version}")
    bad = sorted(k for k, t in dtypes.items() if t not in ("F16", "BF16", "F32", "F64"))
    try:
        if bad:
            raise ValueError(f"tensor(s) {bad} are not floating point")
        check_header(header, shapes)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: inconsistent model file: {e}") from e
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path}: not a readable ebmfit model file: {e}") from e
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            raise ModelFileError(f"{path}: tensor {name!r} holds non-finite values")
    if version >= 2:
        if not isinstance(header.get("sha256"), str):
            raise ModelFileError(f"{path}: the header has no checksum ('sha256')")
        if checksum(header, tensors) != header["sha256"]:
            raise ModelFileError(
                f"{path}: checksum mismatch: the file was modified or corrupted after it was "
                "written (its log Z, box or weights cannot be trusted)"
            )
    else:
        warnings.warn(
            f"{path}: a version-1 model file without a checksum; its integrity cannot be "
            "checked (save it again to add one)",
            ModelFileWarning,
            stacklevel=2,
        )
    try:
        energy = make_energy(header["energy"])
        base_tensors = {
            k[len(BASE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(BASE_PREFIX)
        }
        tensors = {k: v for k, v in tensors.items() if not k.startswith(BASE_PREFIX)}
        energy.load_state_dict(tensors, strict=True)
        domain = Box.from_dict(header["domain"])
        base = (
            base_from_dict(header["base"], base_tensors)
            if base_tensors
            else base_from_dict(header["base"])
        )
        lz = header.get("log_partition")
        if lz is not None:
            lz = dict(lz)
            lz["stderr"] = math.nan if lz.get("stderr") is None else lz["stderr"]
            lz = LogZ.from_dict(lz)
        if base.dim != domain.dim:
            raise ValueError(f"base measure of dimension {base.dim} on a {domain.dim}-D box")
        model = EnergyModel(energy, domain, base, log_partition=lz)
        extra = dict(header.get("extra") or {})
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path}: inconsistent model file: {e}") from e
    if device is not None:
        energy = energy.to(device)
    energy.eval()
    for name, t in energy.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelFileError(f"{path}: tensor {name!r} holds non-finite values")
    return model, extra


def load_model(path: str | os.PathLike, device: str | torch.device | None = None) -> EnergyModel:
    """Read a model file written by :func:`save_model`."""
    return load_model_with_extra(path, device)[0]
