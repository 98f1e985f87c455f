"""The layers of docs/architecture.md hold: no module imports from a layer above its own, and no
import cycle (function-local imports included). Reads the source; imports nothing."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "factorvae"
#: bottom to top, as the table in docs/architecture.md
LAYERS = [["errors", "io"], ["loggers"], ["gaussian"], ["data"], ["nets"], ["methods"], ["metrics"], ["config"], ["weights"],
          ["pretrained", "runs"], ["export"], ["viz"], ["group", "async_eval", "fastpath", "trainer", "group_train"], ["usecases"],
          ["sweep"], ["report"], ["__init__", "__main__", "cli", "commands"]]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of other factorvae modules (a package for ``from pkg import name``
    where name is not a submodule)."""
    out: dict[str, set[str]] = {}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "factorvae":
                subs = [f"{node.module}.{a.name}" for a in node.names]
                found = [s for s in subs if s in mods]
                targets = found if len(found) == len(subs) else found + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "factorvae"]
            else:
                continue
            out.setdefault(m, set()).update(t for t in targets if t in mods and t != m)
    return out


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    assert top in RANK, f"{module} belongs to no layer: place it in docs/architecture.md and in LAYERS here"
    return RANK[top]


def test_no_import_runs_back_up_the_layers():
    mods = modules()
    up = sorted(f"{a} -> {b}" for a, bs in imports(mods).items() for b in bs if layer(a) < layer(b))
    assert up == []


def test_no_import_cycles():
    graph = imports(modules())
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path + [m, n]
            if n not in state:
                cycle = visit(n, path + [m])
                if cycle:
                    return cycle
        state[m] = 2
        return None

    for m in sorted(modules()):
        if m not in state:
            cycle = visit(m, [])
            assert cycle is None, " -> ".join(cycle)
