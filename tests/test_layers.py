"""The layers point one way (issue 9): energies, bases ← partition, samplers ← model ← training ←
estimator ← CLI.  Checked on the import statements of the source tree, and by importing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ebmfit"
LOW = ("training", "partition", "samplers", "energies")
HIGH = ("estimator", "io", "cli")
# known violations, each with the change that removes it
ALLOWED: set[tuple[str, str]] = set()


def _module(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """ebmfit-internal modules imported by ``path`` (relative to the package, dotted)."""
    tree = ast.parse(path.read_text())
    mod = _module(path)
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1] if node.level > 1 else pkg
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "ebmfit":
                target = node.module.split(".")[1:]
            else:
                continue
            names = [a.name for a in node.names]
            stem = ".".join(target)
            for n in names:  # `from . import x` imports the submodule x when there is one
                sub = SRC.joinpath(*target, n)
                if sub.with_suffix(".py").exists() or (sub / "__init__.py").exists():
                    out.add(f"{stem}.{n}" if stem else n)
                elif stem:
                    out.add(stem)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "ebmfit" and "." in a.name:
                    out.add(a.name.split(".", 1)[1])
    return out


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in SRC.rglob("*.py")}


def _top(mod: str) -> str:
    return mod.split(".")[0]


def test_lower_layers_never_import_estimator_io_or_cli():
    bad = []
    for mod, deps in _graph().items():
        if _top(mod) not in LOW:
            continue
        for dep in deps:
            if _top(dep) in HIGH and (mod, _top(dep)) not in ALLOWED:
                bad.append(f"{mod} imports {dep}")
    assert not bad, "\n".join(sorted(bad))


def test_energies_know_nothing_of_samplers_partition_or_training():
    bad = [
        f"{mod} imports {dep}"
        for mod, deps in _graph().items()
        if _top(mod) == "energies"
        for dep in deps
        if _top(dep) in ("samplers", "partition", "training", "model", "certify", *HIGH)
    ]
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles_between_modules():
    """Module-level imports form a DAG (imports inside functions and TYPE_CHECKING blocks are
    not counted by Python either, but ast sees them: so allowed edges are listed)."""
    graph = _graph()
    known = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    # package __init__ re-exports are edges parent -> child; a child importing its parent
    # package is a cycle only through the re-exports, which Python resolves; drop those
    for m in known:
        known[m] = {d for d in known[m] if not (m.startswith(d + ".") or d == "")}
    for m, d in ALLOWED:
        known.get(m, set()).discard(d)
    colour: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        colour[m] = 1
        stack.append(m)
        for d in sorted(known[m]):
            if colour.get(d) == 1:
                cycles.append([*stack[stack.index(d) :], d])
            elif d not in colour:
                visit(d)
        stack.pop()
        colour[m] = 2

    for m in sorted(known):
        if m not in colour:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_importing_samplers_loads_neither_sklearn_nor_torch_distributed():
    """``import torch`` may itself load ``torch.distributed`` (torch >= 2.x does): then no
    ebmfit module that imports it may be loaded, else ``torch.distributed`` must stay out."""
    code = (
        "import sys, torch; base = 'torch.distributed' in sys.modules; import ebmfit.samplers; "
        "mods = [m for m in sys.modules if m.startswith('ebmfit')]; "
        "print(int(base), int('sklearn' in sys.modules), int('torch.distributed' in sys.modules),"
        " ' '.join(mods))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base, sk, dist, *mods = out.stdout.split()
    assert sk == "0", "import ebmfit.samplers loaded scikit-learn"
    assert base == "1" or dist == "0", "import ebmfit.samplers loaded torch.distributed"
    uses_dist = {
        m
        for m in mods
        if (p := SRC.joinpath(*m.split(".")[1:]).with_suffix(".py")).exists()
        and "torch.distributed" in p.read_text()
    }
    assert not uses_dist, f"import ebmfit.samplers loaded {sorted(uses_dist)}"
