"""The compiled core: which modules mypyc compiles, and the switch back to pure Python.

daemonkit's per-frame path (receive → framer ``feed`` → ``on_read`` → ``send``
→ one write per read) runs once per frame, so its interpreter overhead is the
framework's overhead. Where the package is built with a C compiler, ``setup.py``
compiles the modules named in :data:`COMPILED_MODULES` with mypyc, **from
these same ``.py`` files**: the compiled and the pure core have one source, so
they cannot drift apart, and the code reads as plain Python (the compiler does
the inlining that used to be done by hand). Where no compiler exists, the
build says so once and installs the pure modules, which are always there.

``DAEMONKIT_NO_EXTENSIONS=1`` in the environment (aiohttp's convention)
forces the pure-Python modules even where the compiled ones are installed: a
finder placed first on ``sys.meta_path`` (the one process-wide switch there is
for imports) hands out the ``.py`` file for each of :data:`COMPILED_MODULES`.
It is all or nothing, because compiled modules call each other's classes
directly and expect them compiled too; and it must be decided before the first
of them is imported, which is why ``daemonkit/__init__.py`` calls
:func:`install_switch` first of all.

``setup.py`` reads this file with ``runpy`` (not an import), so it imports
only the standard library. Importing it installs the switch (see
:func:`install_switch`), so that whichever daemonkit module a program imports
first, the choice is made before any compiled module loads.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = [
    "COMPILED_MODULES",
    "NO_EXTENSIONS_ENV",
    "core",
    "extensions_disabled",
    "install_switch",
]

#: The environment variable that forces the pure-Python core when set to
#: anything but empty or ``0`` (aiohttp's ``AIOHTTP_NO_EXTENSIONS``, yarl's
#: ``YARL_NO_EXTENSIONS``).
NO_EXTENSIONS_ENV = "DAEMONKIT_NO_EXTENSIONS"

#: The modules mypyc compiles: the connection (receive, dispatch, gather,
#: flush), the framers it calls once per read (the HTTP request and
#: WebSocket framers included) and the HTTP connection, which runs once per
#: request. Everything else stays interpreted: it runs per connection or per
#: event, not per frame.
COMPILED_MODULES: tuple[str, ...] = (
    "daemonkit.framing.base",
    "daemonkit.framing.raw",
    "daemonkit.framing.lines",
    "daemonkit.framing.length",
    "daemonkit.framing.netstring",
    "daemonkit.framing.resp",
    "daemonkit.framing.http",
    "daemonkit.framing.websocket",
    "daemonkit.core.connection",
    "daemonkit.protocols.http.connection",
)

#: The module whose file tells which core is running.
_PROBE = "daemonkit.core.connection"


def extensions_disabled(environ: Mapping[str, str] = os.environ) -> bool:
    """True when ``DAEMONKIT_NO_EXTENSIONS`` asks for the pure-Python core."""
    return environ.get(NO_EXTENSIONS_ENV, "") not in ("", "0")


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Find the ``.py`` source of each compiled module, never its extension."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname not in COMPILED_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or spec.origin.endswith(".py"):
            return spec
        source = Path(spec.origin).with_name(fullname.rpartition(".")[2] + ".py")
        if not source.is_file():
            raise ImportError(
                f"{NO_EXTENSIONS_ENV} is set but {fullname} has no .py source next to "
                f"{spec.origin}; reinstall daemonkit from its sdist",
                name=fullname,
            )
        return importlib.util.spec_from_file_location(fullname, source)


def install_switch(environ: Mapping[str, str] = os.environ) -> bool:
    """Honour ``DAEMONKIT_NO_EXTENSIONS``: returns True if the pure core is forced.

    Idempotent. Must run before any of :data:`COMPILED_MODULES` is imported;
    ``import daemonkit`` does it.
    """
    if not extensions_disabled(environ):
        return False
    if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())
    return True


def core() -> str:
    """``"compiled"`` when the mypyc-compiled core is running, else ``"pure"``."""
    module = sys.modules.get(_PROBE)
    if module is None:
        module = importlib.import_module(_PROBE)
    origin = getattr(module, "__file__", None) or ""
    compiled = origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    return "compiled" if compiled else "pure"


# The switch must be in place before anything imports a compiled module.
install_switch()
