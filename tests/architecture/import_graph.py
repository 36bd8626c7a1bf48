"""The import graph of the gradleak package, read from the source (AST), with its layers.

Every ``import``/``from … import`` of a ``gradleak`` module counts, also those inside functions
(a lazy import is still a dependency). Edges go module → module; a ``from pkg import name`` where
``name`` is a submodule points at that submodule.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "src" / "gradleak"

# Lower numbers are lower layers; a module may import its own layer or below, never above.
LAYERS: dict[str, int] = {
    "errors": 0, "types": 0, "registry": 0, "io": 0, "runtime": 0, "objective": 0, "version": 0, "memory": 0,
    "models": 1, "data": 1, "metrics": 1,
    "defenses": 2, "scenarios": 2, "attacks": 2,
    "experiment": 3, "training": 3, "train_loop": 3, "utility": 3, "inspect": 3, "sweep": 3, "report": 3,
    "text": 3, "api": 3, "captured": 3, "integrations": 4, "figures": 1,
    "cli": 5,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("gradleak") and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:  # gradleak/__init__: the public face, above everything
        return 99
    return LAYERS.get(parts[1])


def upward_imports(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    bad = []
    for source, targets in edges.items():
        for target in targets:
            ls, lt = layer(source), layer(target)
            if ls is None or lt is None or lt > ls:
                bad.append((source, target))
    return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found
