"""Model files: safetensors weights with a JSON header; loading executes no code.

A ``.ebm`` file is a single safetensors file.  Its metadata entry ``"ebmfit"`` holds a JSON
document with the format version, the energy spec (family + hyperparameters), the box, the
base measure, log Z (with error, method, cost) and free-form extras.  Writes are atomic
(temporary file + rename), so an interrupted save never corrupts an existing file.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .base import base_from_dict
from .domain import Box
from .energies import make_energy
from .model import EnergyModel
from .partition.result import LogZ

__all__ = ["ModelFileError", "load_model", "load_model_with_extra", "save_model"]

FORMAT = "ebmfit-model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing, truncated, corrupted or of an unknown format."""


def save_model(model: EnergyModel, path, extra: dict | None = None) -> None:
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


def load_model_with_extra(path, device=None) -> tuple[EnergyModel, dict]:
    """Read a model file; returns the model and the extras dict."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(
            f"{path}: not a readable ebmfit model file (truncated or corrupted?): {e}"
        ) from e
    if "ebmfit" not in meta:
        raise ModelFileError(f"{path}: a safetensors file without an ebmfit header")
    try:
        header = json.loads(meta["ebmfit"])
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: corrupted ebmfit header ({e})") from e
    if not isinstance(header, dict):
        raise ModelFileError(
            f"{path}: corrupted ebmfit header (a JSON {type(header).__name__}, not an object)"
        )
    version = header.get("version")
    if header.get("format") != FORMAT or not isinstance(version, int) or version > VERSION:
        raise ModelFileError(f"{path}: unknown format {header.get('format')!r} v{version}")
    try:
        energy = make_energy(header["energy"])
        energy.load_state_dict(tensors, strict=True)
        domain = Box.from_dict(header["domain"])
        base = base_from_dict(header["base"])
        lz = header.get("log_partition")
        lz = None if lz is None else LogZ.from_dict(lz)
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


def load_model(path, device=None) -> EnergyModel:
    """Read a model file written by :func:`save_model`."""
    return load_model_with_extra(path, device)[0]
