"""Load a Daemon (or Bot) subclass from a CLI target.

A target is ``path/to/file.py``, ``pkg.module`` or either followed by
``:ClassName``. A file inside a package (its folder has an ``__init__.py``)
is imported as a module of that package, so its relative imports work.
Without ``:ClassName`` the file or module must define exactly one subclass
of the wanted base (classes it merely imports do not count).
Every failure is a :class:`~daemonkit.errors.LoadError` whose message says
what to fix.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from daemonkit.bots.bot import Bot
from daemonkit.daemon import Daemon
from daemonkit.errors import LoadError

__all__ = ["load_bot_class", "load_class", "load_daemon_class"]

T = TypeVar("T")


def load_daemon_class(target: str) -> type[Daemon]:
    """Import ``target`` and return the Daemon subclass it names.

    Raises :class:`~daemonkit.errors.LoadError` when the file or module
    cannot be found or imported, when ``:ClassName`` is missing or not a
    Daemon subclass, or when the choice is ambiguous (then name the class).
    """
    return load_class(target, Daemon)


def load_bot_class(target: str) -> type[Bot]:
    """Import ``target`` and return the :class:`~daemonkit.bots.Bot` subclass it names."""
    return load_class(target, Bot)


def load_class(target: str, base: type[T]) -> type[T]:
    """Import ``target`` and return the subclass of ``base`` it names (see the module doc)."""
    kind = base.__name__
    spec, _, class_name = target.partition(":")
    if not spec:
        raise LoadError(f"target {target!r} is empty; give a file.py, a module or module:Class")
    module = _import(spec)
    if class_name:
        obj = getattr(module, class_name, None)
        if obj is None:
            raise LoadError(f"{spec} has no attribute {class_name!r}")
        if not (inspect.isclass(obj) and issubclass(obj, base)):
            raise LoadError(f"{spec}:{class_name} is not a {kind} subclass")
        return obj
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, base)
        and obj is not base
        and obj.__module__ == module.__name__
    ]
    if not found:
        raise LoadError(f"{spec} defines no {kind} subclass")
    if len(found) > 1:
        names = ", ".join(sorted(cls.__name__ for cls in found))
        raise LoadError(
            f"{spec} defines several {kind} subclasses ({names}); name one as {spec}:Name"
        )
    return found[0]


def _is_file(path: Path) -> bool:
    """``path.is_file()``, but a path we may not look at is a LoadError, not a traceback."""
    try:
        return path.is_file()
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _import(spec: str) -> ModuleType:
    if spec.endswith(".py") or "/" in spec or _is_file(Path(spec)):
        return _import_file(Path(spec))
    # `daemonkit mydaemon` from the console script must find ./mydaemon.py as
    # `python -m daemonkit mydaemon` does (uvicorn's --app-dir "." likewise).
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise LoadError(f"no module named {spec!r} (is it on PYTHONPATH?)") from exc
        raise LoadError(f"importing {spec} failed: {exc}") from exc
    except Exception as exc:
        raise LoadError(f"importing {spec} failed: {type(exc).__name__}: {exc}") from exc


def _import_file(path: Path) -> ModuleType:
    if not _is_file(path):
        raise LoadError(f"no such file: {path}")
    if (path.parent / "__init__.py").is_file():
        return _import_package_file(path)
    name = f"_daemonkit_target_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise LoadError(f"cannot load {path} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    # Let the file import its neighbours, as `python path/to/file.py` would.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise LoadError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _import_package_file(path: Path) -> ModuleType:
    """Import a file that lives in a package as that package's module.

    ``app/queue/server.py`` with ``app/queue/__init__.py`` (and no
    ``app/__init__.py``) is imported as ``queue.server`` with ``app`` on
    ``sys.path``, so its relative imports work, as pytest's default
    ("prepend") import mode does for test files inside packages.
    """
    path = path.resolve()
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    name = ".".join(parts)
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise LoadError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
