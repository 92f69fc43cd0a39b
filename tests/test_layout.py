"""The package layout's rules (docs/architecture.md), read from the source with `ast`:
generated code and the runtime never import the generator, the runtime never imports
the conformance library, and no import cycle exists among the three packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGES = ("generator", "specstack_runtime", "specstack_conformance")


def _modules(*packages: str) -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, *, lazy: bool, modules: dict[str, Path] | None = None) -> list[str]:
    """Modules `path` imports: at module level outside `if TYPE_CHECKING:`, and with
    `lazy` also inside functions. Given `modules`, `from pkg import sub` names only
    pkg.sub when that is a module (the implicit import of a parent package's __init__
    is not counted), and `from pkg import name` names pkg."""
    found: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if lazy:
                    visit(node.body)
            elif isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import"
                base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if modules is None:
                        found.extend((sub, base))
                    else:
                        found.append(sub if sub in modules else base)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        visit(children)

    visit(ast.parse(path.read_text("utf-8")).body)
    return found


@pytest.mark.parametrize("package", ["generated", "specstack_runtime", "specstack_conformance"])
def test_never_imports_the_generator(package: str) -> None:
    bad = {
        f"{mod}: {name}"
        for mod, path in _modules(package).items()
        for name in _imports(path, lazy=True)
        if name == "generator" or name.startswith("generator.")
    }
    assert not bad


def test_the_runtime_never_imports_the_conformance_library() -> None:
    bad = {
        f"{mod}: {name}"
        for mod, path in _modules("specstack_runtime").items()
        for name in _imports(path, lazy=True)
        if name.split(".")[0] == "specstack_conformance"
    }
    assert not bad


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-lazy-imports"])
def test_no_import_cycle(lazy: bool) -> None:
    mods = _modules(*PACKAGES)
    graph = {
        mod: {n for n in _imports(path, lazy=lazy, modules=mods) if n in mods and n != mod}
        for mod, path in mods.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def walk(mod: str) -> None:
        state[mod] = 1
        path.append(mod)
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                walk(dep)
        path.pop()
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            walk(mod)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_interpreter_tuning() -> None:
    """Speed comes from design: no module of the packages imports `gc` (thresholds,
    freeze, disable), which would hide a cost rather than remove it."""
    bad = {
        mod
        for mod, path in _modules(*PACKAGES).items()
        if "gc" in {name.split(".")[0] for name in _imports(path, lazy=True)}
    }
    assert not bad, sorted(bad)
