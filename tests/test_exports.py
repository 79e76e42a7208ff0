"""The public API is what __all__ says, and layers import one way only."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

import daemonkit
from daemonkit.core.compiled import COMPILED_MODULES

PACKAGE = Path(daemonkit.__file__).resolve().parent
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
    if p.name != "__main__.py"
)

#: Modules built on an engine that may not be installed: module -> the engine.
#: pyuv has no wheel for today's Pythons (python -m daemonkit build-pyuv builds it).
OPTIONAL_ENGINE = {"daemonkit.core.pyuvloop": "pyuv"}


def engine_missing(name: str) -> str | None:
    """The engine ``name`` is built on when that engine cannot be imported, else None."""
    engine = OPTIONAL_ENGINE.get(name)
    return engine if engine is not None and importlib.util.find_spec(engine) is None else None


@pytest.mark.parametrize("name", MODULES)
def test_all_is_complete_and_documented(name: str) -> None:
    if missing := engine_missing(name):
        pytest.skip(f"{missing} is not installed (python -m daemonkit build-pyuv builds it)")
    module = importlib.import_module(name)
    compiled = daemonkit.CORE == "compiled"
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported)
    for public in exported:
        assert hasattr(module, public), f"{name}.__all__ lists missing {public}"
        obj = getattr(module, public)
        if compiled and getattr(obj, "__module__", None) in COMPILED_MODULES:
            continue  # mypyc keeps no docstrings: the pure-core run of the suite checks them
        if callable(obj) and not isinstance(obj, int):
            assert obj.__doc__, f"{name}.{public} has no docstring"
    if not (compiled and name in COMPILED_MODULES):
        assert module.__doc__, f"{name} has no module docstring"


def test_top_level_reexports() -> None:
    for public in daemonkit.__all__:
        assert hasattr(daemonkit, public)


# The layers, bottom up: one per folder (and the few modules a user meets at
# the root). An import may only go down, or stay in its own layer; docs/design.md
# draws the same picture.
LAYERS = {
    "errors": 0,
    "framing": 1,
    "core": 2,
    "framework": 3,
    "protocols": 4,
    "daemon": 5,
    "http": 6,  # faces: hand on daemonkit.protocols.http / .websocket
    "websocket": 6,
    "bots": 6,
    "ops": 7,
    "testing": 8,
    "cli": 9,
    "__main__": 10,
}
ROOT_LAYER = 6  # daemonkit/__init__.py re-exports the daemon, the core and the framework

# Imports inside a function that may go up a layer, each with its reason.
LATE_IMPORTS_UP = {
    # Daemon.run() reaches the composition root: the one documented exception.
    ("daemonkit.daemon", "daemonkit.ops.runner"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "daemonkit":
        return None
    if len(parts) == 1:
        return ROOT_LAYER
    return LAYERS.get(parts[1])


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(module, at_module_level) for every daemonkit import, TYPE_CHECKING blocks left out."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.orelse:
                    visit_one(stmt, top)
                continue
            visit_one(child, top)

    def visit_one(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("daemonkit"):
                found.append((node.module, top))
                # "from daemonkit.x import y" may name the submodule daemonkit.x.y
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists() or (
                        PACKAGE.parent / sub.replace(".", "/") / "__init__.py"
                    ).exists():
                        found.append((sub, top))
        elif isinstance(node, ast.Import):
            found.extend((a.name, top) for a in node.names if a.name.startswith("daemonkit"))
        else:
            inner = top and not isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            visit(node, inner)

    visit(tree, True)
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    for path in SOURCES:
        name = _module_name(path)
        assert _layer(name) is not None, f"{name} is in no layer: add its folder to LAYERS"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path: Path) -> None:
    name = _module_name(path)
    own = _layer(name)
    assert own is not None
    tree = ast.parse(path.read_text())
    up = [
        f"{target} (layer {layer})"
        for target, top in _imports(tree)
        if (layer := _layer(target)) is not None
        and layer > own
        and (top or (name, target) not in LATE_IMPORTS_UP)
    ]
    assert not up, f"{name} (layer {own}) imports up a layer: {', '.join(up)}"
    if name.startswith("daemonkit.framing"):
        imported = {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        } | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & {"asyncio", "socket", "logging", "time", "selectors"}, (
            f"framer {name} does I/O, logging or time"
        )


def _module_graph() -> dict[str, set[str]]:
    """Module-level imports between daemonkit's modules (TYPE_CHECKING left out)."""
    names = {_module_name(p) for p in SOURCES}
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        name = _module_name(path)
        targets = {t for t, top in _imports(ast.parse(path.read_text())) if top}
        # Importing a package runs its __init__: an edge to the package itself.
        graph[name] = {t for t in targets if t in names and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a list of modules, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = GREY
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if color.get(nxt, BLACK) == GREY:
                return [*stack[stack.index(nxt) :], nxt]
            if color.get(nxt) == WHITE:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = BLACK
        return None

    for node in sorted(graph):
        if color[node] == WHITE:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_in_a_circle() -> None:
    cycle = find_cycle(_module_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_root_holds_only_what_a_user_meets() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == [
        "__init__.py",
        "__main__.py",
        "daemon.py",
        "errors.py",
        "http.py",
        "websocket.py",
    ]
