r"""Validation of a model file's header, before anything is built (:mod:`ebmfit.io`).

Every field is type- and range-checked, and the sizes a header asks for (``n_basis``,
``degree``, ``hidden``, mixture components, ...) are checked against sane limits *and* against
the shapes of the tensors in the file (read from the safetensors index, without loading them),
so a small file cannot make the loader allocate gigabytes.

The per-kind checks are small functions in two registries, :data:`ENERGY_CHECKS` (by energy
family) and :data:`BASE_CHECKS` (by base-measure kind); :func:`register_energy_check` and
:func:`register_base_check` add one.  :func:`check_header` runs them all.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

from ..energies import FAMILIES

__all__ = [
    "BASE_CHECKS",
    "BASE_PREFIX",
    "ENERGY_CHECKS",
    "Shapes",
    "check_header",
    "is_int",
    "json_depth",
    "register_base_check",
    "register_energy_check",
]

BASE_PREFIX = "base."  # tensors of the base measure; the energy's own keys never start so

#: Limits on what a header may ask for (far above anything ebmfit fits, far below harm).
MAX_HEADER_CHARS = 32 * 2**20
MAX_JSON_DEPTH = 32
MAX_DIM = 10_000
MAX_ELEMENTS = 2**25  # numbers one energy or base may allocate (256 MiB in float64)
MAX_BASIS = 4096  # spline knots / cosine frequencies per axis
MAX_DEGREE = 256  # Legendre total degree
MAX_WIDTH = 65_536  # an MLP layer or the number of Fourier features
MAX_LAYERS = 64
MAX_COMPONENTS = 10_000  # mixture components of a base
MAX_NAME_CHARS = 1000

Shapes = dict[str, tuple[int, ...]]


# --------------------------------------------------------------------------- field checks
def is_int(v: object) -> bool:
    """``v`` is an integer (a JSON number without fraction), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _int(d: dict, key: str, lo: int, hi: int, where: str, default: int | None = None) -> int:
    v = d.get(key, default)
    if not is_int(v) or not lo <= v <= hi:
        raise ValueError(f"{where}: {key!r} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


def _real(
    d: dict,
    key: str,
    where: str,
    default: float | None = None,
    lo: float = -math.inf,
    hi: float = math.inf,
) -> float:
    v = d.get(key, default)
    if not _is_real(v) or not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{where}: {key!r} must be a finite number in [{lo}, {hi}], got {v!r}")
    return float(v)


def _obj(v: object, where: str) -> dict:
    if not isinstance(v, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(v).__name__}")
    return v


def _matrix(v: object, shape: tuple[int, ...], where: str) -> None:
    """``v`` is a nested list of finite numbers of exactly ``shape``."""
    if not shape:
        if not _is_real(v) or not math.isfinite(v):
            raise ValueError(f"{where}: expected a finite number, got {v!r}"[:200])
        return
    if not isinstance(v, list) or len(v) != shape[0]:
        n = len(v) if isinstance(v, list) else type(v).__name__
        raise ValueError(f"{where}: expected a list of length {shape[0]}, got {n}")
    for x in v:
        _matrix(x, shape[1:], where)


def _expect_shapes(shapes: Shapes, want: Shapes, where: str) -> None:
    if set(shapes) != set(want):
        missing, extra = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
        raise ValueError(f"{where}: tensors missing {missing}, unexpected {extra}")
    for k, s in want.items():
        if tuple(shapes[k]) != tuple(s):
            raise ValueError(f"{where}: tensor {k!r} has shape {shapes[k]}, expected {s}")


# --------------------------------------------------------------------------- energies
#: family -> check(spec, shapes of the energy's tensors) -> number of elements it allocates.
ENERGY_CHECKS: dict[str, Callable[[dict, Shapes], int]] = {}


def register_energy_check(
    family: str,
) -> Callable[[Callable[[dict, Shapes], int]], Callable[[dict, Shapes], int]]:
    def deco(fn: Callable[[dict, Shapes], int]) -> Callable[[dict, Shapes], int]:
        ENERGY_CHECKS[family] = fn
        return fn

    return deco


def _linear(spec: dict, shapes: Shapes, key: str, lo: int, hi: int, offset: int) -> int:
    where = f"energy {spec.get('family')!r}"
    d = _int(spec, "dim", 1, MAX_DIM, where)
    k = _int(spec, key, lo, hi, where) + offset
    if k**d > MAX_ELEMENTS:
        raise ValueError(f"{where}: {k}^{d} coefficients exceed the limit {MAX_ELEMENTS}")
    _expect_shapes(shapes, {"coef": (k,) * d, "mask": (k,) * d}, where)
    return 2 * k**d


@register_energy_check("spline")
def _check_spline(spec: dict, shapes: Shapes) -> int:
    _int(spec, "penalty_order", 1, 3, "energy 'spline'", default=3)
    return _linear(spec, shapes, "n_basis", 4, MAX_BASIS, 0)


@register_energy_check("legendre")
def _check_legendre(spec: dict, shapes: Shapes) -> int:
    return _linear(spec, shapes, "degree", 1, MAX_DEGREE, 1)


@register_energy_check("cosine")
def _check_cosine(spec: dict, shapes: Shapes) -> int:
    return _linear(spec, shapes, "n_freq", 2, MAX_BASIS, 0)


@register_energy_check("mlp")
def _check_mlp(spec: dict, shapes: Shapes) -> int:
    where = "energy 'mlp'"
    d = _int(spec, "dim", 1, MAX_DIM, where)
    hidden = spec.get("hidden", [128, 128, 128])
    if not isinstance(hidden, list) or len(hidden) > MAX_LAYERS:
        raise ValueError(f"{where}: 'hidden' must be a list of at most {MAX_LAYERS} widths")
    for h in hidden:
        if not is_int(h) or not 1 <= h <= MAX_WIDTH:
            raise ValueError(f"{where}: hidden widths must be integers in [1, {MAX_WIDTH}]")
    nf = _int(spec, "n_fourier", 0, MAX_WIDTH, where, default=64)
    _real(spec, "fourier_scale", where, default=3.0)
    _int(spec, "seed", -(2**63), 2**64 - 1, where, default=0)
    want = {"freqs": (nf, d)}
    width, n = d + 2 * nf, nf * d
    for i, h in enumerate([*hidden, 1]):
        want[f"net.{2 * i}.weight"] = (h, width)
        want[f"net.{2 * i}.bias"] = (h,)
        n += h * width + h
        width = h
    if n > MAX_ELEMENTS:
        raise ValueError(f"{where}: {n} parameters exceed the limit {MAX_ELEMENTS}")
    # compare shapes only for the tensors named like ours (the family may add buffers)
    for k, s in want.items():
        if k in shapes and tuple(shapes[k]) != s:
            raise ValueError(f"{where}: tensor {k!r} has shape {shapes[k]}, expected {s}")
    return n


@register_energy_check("quadratic")
def _check_quadratic(spec: dict, shapes: Shapes) -> int:
    d = _int(spec, "dim", 1, 4096, "energy 'quadratic'")
    _expect_shapes(shapes, {"mean": (d,), "precision": (d, d)}, "energy 'quadratic'")
    return d + d * d


@register_energy_check("zero")
def _check_zero(spec: dict, shapes: Shapes) -> int:
    _int(spec, "dim", 1, MAX_DIM, "energy 'zero'")
    _expect_shapes(shapes, {}, "energy 'zero'")
    return 0


@register_energy_check("residual")
def _check_residual(spec: dict, shapes: Shapes) -> int:
    _real(spec, "bound", "energy 'residual'", lo=0.0)
    inner = _obj(spec.get("inner"), "energy 'residual': 'inner'")
    inner_shapes = {k[6:]: s for k, s in shapes.items() if k.startswith("inner.")}
    return _check_energy(inner, inner_shapes)


@register_energy_check("defensive")
def _check_defensive(spec: dict, shapes: Shapes) -> int:
    where = "energy 'defensive'"
    mix = _real(spec, "mix", where, lo=0.0)
    if not 0.0 < mix < 1.0:
        raise ValueError(f"{where}: 'mix' must be in (0, 1), got {mix}")
    _real(spec, "log_z", where)
    inner = _obj(spec.get("inner"), f"{where}: 'inner'")
    inner_shapes = {k[6:]: s for k, s in shapes.items() if k.startswith("inner.")}
    return _check_energy(inner, inner_shapes)


def _check_energy(spec: object, shapes: Shapes) -> int:
    spec = _obj(spec, "energy spec")
    fam = spec.get("family")
    check = ENERGY_CHECKS.get(fam) if isinstance(fam, str) else None
    if check is None:
        if fam not in FAMILIES:
            raise ValueError(f"unknown energy family {fam!r}; known: {sorted(FAMILIES)}")
        for k, v in spec.items():  # a family without a registered check: no huge integers
            if is_int(v) and abs(v) > MAX_WIDTH and k != "seed":
                raise ValueError(f"energy {fam!r}: {k!r}={v} exceeds {MAX_WIDTH}")
        return 0
    return check(spec, shapes)


# --------------------------------------------------------------------------- base measures
#: kind -> check(spec, dim of the box, shapes of the base's tensors); raises ValueError.
BASE_CHECKS: dict[str, Callable[[dict, int, Shapes], None]] = {}


def register_base_check(
    kind: str,
) -> Callable[[Callable[[dict, int, Shapes], None]], Callable[[dict, int, Shapes], None]]:
    def deco(fn: Callable[[dict, int, Shapes], None]) -> Callable[[dict, int, Shapes], None]:
        BASE_CHECKS[kind] = fn
        return fn

    return deco


@register_base_check("uniform")
def _check_uniform(spec: dict, dim: int, shapes: Shapes) -> None:
    if _int(spec, "dim", 1, MAX_DIM, "base 'uniform'") != dim:
        raise ValueError(f"base measure of dimension {spec['dim']} on a {dim}-D box")
    _expect_shapes(shapes, {}, "base 'uniform'")


@register_base_check("truncated_gmm")
def _check_truncated_gmm(spec: dict, dim: int, shapes: Shapes) -> None:
    where = "base 'truncated_gmm'"
    if _int(spec, "dim", 1, MAX_DIM, where) != dim:
        raise ValueError(f"{where}: dimension {spec['dim']} on a {dim}-D box")
    w = spec.get("weights")
    if not isinstance(w, list) or not 1 <= len(w) <= MAX_COMPONENTS:
        raise ValueError(f"{where}: 'weights' must be a list of 1 to {MAX_COMPONENTS} numbers")
    k = len(w)
    if k * dim > MAX_ELEMENTS:
        raise ValueError(f"{where}: {k} components × {dim} dimensions exceed the limit")
    _matrix(w, (k,), f"{where}: 'weights'")
    _matrix(spec.get("means"), (k, dim), f"{where}: 'means'")
    _matrix(spec.get("stds"), (k, dim), f"{where}: 'stds'")
    if min(w) < 0 or not any(x > 0 for x in w):
        raise ValueError(f"{where}: weights must be >= 0 and not all zero")
    if min(min(r) for r in spec["stds"]) <= 0:
        raise ValueError(f"{where}: standard deviations must be > 0")
    _real(spec, "uniform_weight", where, default=0.0, lo=0.0, hi=1.0)
    _expect_shapes(shapes, {}, where)


@register_base_check("logit_gmm")
def _check_logit_gmm(spec: dict, dim: int, shapes: Shapes) -> None:
    where = "base 'logit_gmm'"
    if _int(spec, "dim", 1, MAX_DIM, where) != dim:
        raise ValueError(f"{where}: dimension {spec['dim']} on a {dim}-D box")
    k = _int(spec, "n_components", 1, MAX_COMPONENTS, where)
    if k * dim * dim > MAX_ELEMENTS:
        raise ValueError(f"{where}: {k} components of {dim}×{dim} factors exceed the limit")
    _real(spec, "uniform_weight", where, default=0.0, lo=0.0, hi=1.0)
    if not isinstance(spec.get("covariance_type", "full"), str):
        raise ValueError(f"{where}: 'covariance_type' must be a string")
    _expect_shapes(shapes, {"weights": (k,), "means": (k, dim), "chols": (k, dim, dim)}, where)


@register_base_check("flow")
def _check_flow(spec: dict, dim: int, shapes: Shapes) -> None:
    where = "base 'flow'"
    if _int(spec, "dim", 1, MAX_DIM, where) != dim:
        raise ValueError(f"{where}: dimension {spec['dim']} on a {dim}-D box")
    t = _int(spec, "transforms", 1, 16, where)
    hidden = spec.get("hidden")
    if (
        not isinstance(hidden, list)
        or not 1 <= len(hidden) <= 8
        or not all(is_int(h) and 1 <= h <= 4096 for h in hidden)
    ):
        raise ValueError(f"{where}: 'hidden' must be a list of 1 to 8 widths in [1, 4096]")
    if t * (dim + max(hidden)) * max(hidden) * len(hidden) > MAX_ELEMENTS:
        raise ValueError(f"{where}: {t} transforms of widths {hidden} exceed the limit")
    _real(spec, "uniform_weight", where, default=0.0, lo=0.0, hi=1.0)
    if spec.get("passes") is not None:  # absent or null: fully autoregressive
        _int(spec, "passes", 2, dim, where)
    for name in ("mean", "scale"):
        if shapes.get(name) != (dim,):
            raise ValueError(f"{where}: tensor {name!r} missing or not of shape ({dim},)")
    # the flow's own tensors are checked against the architecture when it is rebuilt


def _check_base(spec: object, dim: int, shapes: Shapes) -> None:
    spec = _obj(spec, "base measure")
    kind = spec.get("kind")
    check = BASE_CHECKS.get(kind) if isinstance(kind, str) else None
    if check is None:
        raise ValueError(f"unknown base measure {kind!r}; known: {sorted(BASE_CHECKS)}")
    check(spec, dim, shapes)


# --------------------------------------------------------------------------- header
def json_depth(text: str) -> int:
    """Maximum nesting depth of ``[``/``{`` in a JSON text (strings skipped), in one pass."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _check_domain(spec: object, dim: int) -> None:
    spec = _obj(spec, "domain")
    for key in ("low", "high"):
        v = spec.get(key)
        if not isinstance(v, list) or len(v) != dim:
            n = len(v) if isinstance(v, list) else type(v).__name__
            raise ValueError(f"domain: {key!r} must list {dim} numbers (the energy's d), got {n}")
        _matrix(v, (dim,), f"domain: {key!r}")
    bad = [i for i, (a, b) in enumerate(zip(spec["low"], spec["high"], strict=True)) if not a < b]
    if bad:
        raise ValueError(f"domain: high <= low in column(s) {bad[:10]}")


def _check_log_partition(lz: object) -> None:
    if lz is None:
        return
    lz = _obj(lz, "log_partition")
    where = "log_partition"
    _real(lz, "value", where)  # a NaN or infinite log Z would make every score wrong
    se = lz.get("stderr")
    if se is not None and not (_is_real(se) and se >= 0):  # None: unknown (NaN) error
        raise ValueError(f"{where}: 'stderr' must be a number >= 0 or null, got {se!r}")
    if not isinstance(lz.get("method"), str):
        raise ValueError(f"{where}: 'method' must be a string, got {lz.get('method')!r}")
    _int(lz, "n_evals", 0, 2**63 - 1, where)
    if lz.get("bias", "none") not in ("none", "lower", "upper"):
        raise ValueError(f"{where}: 'bias' must be 'none', 'lower' or 'upper'")


def _check_extra(extra: object, dim: int) -> None:
    extra = _obj(extra, "extra")
    where = "extra"
    if "n_features_in" in extra and _int(extra, "n_features_in", 1, MAX_DIM, where) != dim:
        raise ValueError(f"{where}: n_features_in={extra['n_features_in']} for a {dim}-D model")
    if "n_iter" in extra:
        _int(extra, "n_iter", 0, 2**63 - 1, where)
    if extra.get("fit_time") is not None:
        _real(extra, "fit_time", where, lo=0.0)
    if "stop_reason" in extra and not isinstance(extra["stop_reason"], str):
        raise ValueError(f"{where}: 'stop_reason' must be a string")
    if "feature_names" in extra:
        names = extra["feature_names"]
        if not isinstance(names, list) or not all(
            isinstance(n, str) and len(n) <= MAX_NAME_CHARS for n in names
        ):
            raise ValueError(f"{where}: 'feature_names' must be a list of strings")
        if len(names) != dim:
            raise ValueError(
                f"{where}: {len(names)} feature name(s) for a model with {dim} column(s)"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: duplicate feature names")


def _spec_dim(spec: dict) -> object:
    """The dimension of an energy spec (a wrapper such as 'residual' holds it in 'inner')."""
    while isinstance(spec, dict) and "dim" not in spec and isinstance(spec.get("inner"), dict):
        spec = spec["inner"]
    return spec.get("dim") if isinstance(spec, dict) else None


def check_header(header: dict, shapes: Shapes) -> int:
    """Validate every field of ``header`` against limits and ``shapes`` (nothing is built)."""
    energy_shapes = {k: s for k, s in shapes.items() if not k.startswith(BASE_PREFIX)}
    base_shapes = {k[len(BASE_PREFIX) :]: s for k, s in shapes.items() if k.startswith(BASE_PREFIX)}
    spec = _obj(header.get("energy"), "energy spec")
    n = _check_energy(spec, energy_shapes)
    n_file = sum(math.prod(s) for s in shapes.values())
    if n > 2 * n_file + 4096:
        raise ValueError(
            f"the energy spec asks for {n} numbers but the file holds {n_file}: sizes in the "
            "header do not match its tensors"
        )
    dim = _spec_dim(spec)
    if not is_int(dim) or not 1 <= dim <= MAX_DIM:
        raise ValueError(f"energy spec: 'dim' must be an integer in [1, {MAX_DIM}], got {dim!r}")
    _check_domain(header.get("domain"), dim)
    _check_base(header.get("base"), dim, base_shapes)
    _check_log_partition(header.get("log_partition"))
    _check_extra(header.get("extra", {}), dim)
    return dim
