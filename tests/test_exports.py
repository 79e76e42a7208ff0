"""The public API is what __all__ says, and layers import one way only."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import daemonkit

PACKAGE = Path(daemonkit.__file__).resolve().parent
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
    if p.name != "__main__.py"
)


@pytest.mark.parametrize("name", MODULES)
def test_all_is_complete_and_documented(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported)
    for public in exported:
        assert hasattr(module, public), f"{name}.__all__ lists missing {public}"
        obj = getattr(module, public)
        if callable(obj) and not isinstance(obj, int):
            assert obj.__doc__, f"{name}.{public} has no docstring"
    assert module.__doc__, f"{name} has no module docstring"


def test_top_level_reexports() -> None:
    for public in daemonkit.__all__:
        assert hasattr(daemonkit, public)


# Lower layers never import higher ones: framing <- reactor <- framework <- cli/testing.
LAYERS = {
    "errors": 0,
    "durations": 0,
    "framing": 1,
    "timers": 1,
    "endpoints": 1,
    "log": 1,
    "reactor": 2,
    "connection": 3,
    "daemon": 3,
    "handler": 3,
    "groups": 3,
    "hosts": 3,
    "http": 3,
    "udp": 3,
    "websocket": 3,
    "control": 3,  # daemon.start() imports it
    "metrics": 3,
    "memguard": 3,
    "upgrade": 3,  # daemon.start() uses it
    "reloader": 5,
    "pidfile": 1,
    "systemd": 4,  # adopts sockets into a Daemon
    "process": 4,  # pidfile, systemd, privileges and detaching for the CLI
    "ctl": 5,
    "loader": 4,
    "bots": 4,
    "cli": 5,
    "testing": 5,
}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "daemonkit" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_imports_go_one_way(path: Path) -> None:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    own = _layer(".".join(rel.parts))
    if own is None:
        return
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            target = _layer(node.module)
            if target is not None:
                assert target <= own, f"{rel} (layer {own}) imports {node.module} (layer {target})"
    if rel.parts[1] == "framing":
        imported = {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        } | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & {"asyncio", "socket", "logging", "time", "selectors"}, (
            f"framer {rel} does I/O, logging or time"
        )
