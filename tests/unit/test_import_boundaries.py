"""The import rules of the layout, checked by walking every module's imports.

* ``shared/`` imports nothing from ``services/``.
* ingest, inference, aggregator and gateway import only ``shared/`` and themselves;
  session rules, contracts and the boot path live in ``shared/``.
* Only the composition roots (``services/up``, ``services/replay``, the CLI modules
  ``services/cli.py`` and ``services/core_commands.py``) import other services' modules.
* No import circle between modules (lazy imports in functions count; ``TYPE_CHECKING`` blocks do not).

Imports inside functions count for the boundaries: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "inference", "aggregator", "gateway")
COMPOSITION_ROOTS = ("services.up", "services.replay", "services.cli", "services.core_commands")
PACKAGES = ("services", "shared")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(
    module: str, path: Path, *, type_checking: bool = True, source: str | None = None
) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import of ``module``; ``from a import b`` yields a.b when a.b is a module."""
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text, filename=str(path))
    known = _KNOWN
    is_package = path.name == "__init__.py"

    def visit(nodes: list[ast.stmt]) -> Iterator[tuple[str, int]]:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(node, module, is_package)
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
                yield from ((s, node.lineno) for s in subs) if subs else [(target, node.lineno)]
            elif isinstance(node, ast.If) and _is_type_checking(node):
                if type_checking:
                    yield from visit(node.body)
                yield from visit(node.orelse)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield from visit(node.body)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        stmts = [c for c in children if isinstance(c, ast.stmt)]
                        stmts += [s for c in children if isinstance(c, ast.ExceptHandler) for s in c.body]
                        yield from visit(stmts)

    yield from visit(tree.body)


def owner(module: str) -> str:
    """'services.inference.engine' -> 'services.inference'; 'shared.log' -> 'shared'."""
    parts = module.split(".")
    if parts[0] == "services" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


_KNOWN = all_modules()


def test_services_import_only_shared_and_themselves() -> None:
    wrong = []
    for module, path in all_modules().items():
        mine = owner(module)
        if mine.startswith(COMPOSITION_ROOTS) or module == "services":
            continue
        for target, line in imports(module, path):
            if target.split(".")[0] != "services":
                continue
            if mine == "shared" or (mine in {f"services.{s}" for s in SERVICES} and owner(target) != mine):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "imports across service boundaries (move the shared part to shared/):\n" + "\n".join(wrong)


def test_no_import_circle() -> None:
    known = all_modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        graph[module] = {t for t, _ in imports(module, path, type_checking=False) if t in known and t != module}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    # a package importing its own submodules at top level (``__init__`` re-exports) is not a circle
    real = [c for c in cycles if not all(c[0].startswith(m + ".") or m.startswith(c[0]) for m in c)]
    assert not real, "import circles:\n" + "\n".join(" -> ".join(c) for c in real)


def test_walker_sees_lazy_and_type_checking_imports() -> None:
    """The walker itself: imports inside functions count, TYPE_CHECKING-only ones make no circle."""
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from services.gateway import app\n"
        "def f():\n    from services.inference import engine\n"
        "from . import log\n"
    )
    path = ROOT / "shared" / "probe.py"
    found_all = list(imports("shared.probe", path, source=src))
    found_run = list(imports("shared.probe", path, type_checking=False, source=src))
    assert ("services.gateway.app", 3) in found_all
    assert ("services.gateway.app", 3) not in found_run
    assert ("services.inference.engine", 5) in found_run
    assert ("shared.log", 6) in found_run
