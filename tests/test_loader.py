"""Loading daemon targets: files, modules, module:Class."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from daemonkit.cli.loader import load_daemon_class
from daemonkit.errors import LoadError
from tests.helpers import ROOT


def test_file_with_one_daemon() -> None:
    cls = load_daemon_class(str(ROOT / "examples" / "echo_daemon.py"))
    assert cls.__name__ == "EchoDaemon"


def test_module_and_module_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "server.py").write_text(
        textwrap.dedent(
            """
            from daemonkit import Daemon
            from daemonkit.daemon import Daemon as Imported  # imported names do not count
            class Main(Daemon):
                pass
            NOT_A_CLASS = 1
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_daemon_class("mypkg.server").__name__ == "Main"
        assert load_daemon_class("mypkg.server:Main").__name__ == "Main"
        with pytest.raises(LoadError, match="is not a Daemon subclass"):
            load_daemon_class("mypkg.server:NOT_A_CLASS")
        with pytest.raises(LoadError, match="no module named 'mypkg.nope'"):
            load_daemon_class("mypkg.nope")
    finally:
        for name in [m for m in sys.modules if m.startswith("mypkg")]:
            del sys.modules[name]


def test_file_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(LoadError, match="defines no Daemon subclass"):
        load_daemon_class(str(empty))
    broken = tmp_path / "broken.py"
    broken.write_text("import nonexistent_module_xyz\n")
    with pytest.raises(LoadError, match="importing .*broken.py failed: ModuleNotFoundError"):
        load_daemon_class(str(broken))
    with pytest.raises(LoadError, match="no such file"):
        load_daemon_class(str(tmp_path / "missing.py"))
    with pytest.raises(LoadError, match="is empty"):
        load_daemon_class(":Main")


def test_module_import_error_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "crashy_mod_xyz.py").write_text("raise RuntimeError('at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LoadError, match="RuntimeError: at import"):
        load_daemon_class("crashy_mod_xyz")


def test_a_file_inside_a_package_is_imported_as_part_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python -m daemonkit app/queue/server.py` where app/queue/ is a package whose
    # modules import each other relatively, as examples/jobqueue/ does.
    monkeypatch.setattr(sys, "path", list(sys.path))
    pkg = tmp_path / "app" / "queuepkg_xyz"
    (pkg / "inner").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "inner" / "__init__.py").write_text("")
    (pkg / "store.py").write_text("LIMIT = 7\n")
    (pkg / "inner" / "server.py").write_text(
        textwrap.dedent(
            """
            from daemonkit import Daemon
            from ..store import LIMIT
            class Server(Daemon):
                limit = LIMIT
            """
        )
    )
    try:
        cls = load_daemon_class(str(pkg / "inner" / "server.py"))
        assert cls.__name__ == "Server"
        assert cls.__module__ == "queuepkg_xyz.inner.server"
        assert cls.limit == 7  # type: ignore[attr-defined]
        # the package's parent is what went on sys.path, not the file's folder
        assert str(tmp_path / "app") in sys.path
        assert str(pkg / "inner") not in sys.path
    finally:
        for name in [m for m in sys.modules if m.startswith("queuepkg_xyz")]:
            del sys.modules[name]


def test_a_package_file_that_fails_to_import_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    pkg = tmp_path / "brokenpkg_xyz"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "server.py").write_text("from .missing import X\n")
    try:
        with pytest.raises(LoadError, match=r"importing .*server\.py failed: ModuleNotFoundError"):
            load_daemon_class(str(pkg / "server.py"))
    finally:
        for name in [m for m in sys.modules if m.startswith("brokenpkg_xyz")]:
            del sys.modules[name]
