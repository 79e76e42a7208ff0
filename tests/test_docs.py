"""The docs say what the code does: their runnable examples run, their claims hold.

A reader copies the tutorial's files verbatim, so each ```python block that
starts with ``# <name>.py`` is written to a folder and the ``test_*.py`` ones
are run there with pytest, as the tutorial tells the reader to.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

from daemonkit import cli
from daemonkit.framing import Lines
from tests.test_exports import engine_missing

DOCS = Path(__file__).resolve().parent.parent / "docs"

_BLOCK = re.compile(r"```python\n# (\w+)\.py\n(.*?)```", re.DOTALL)


def _tutorial_files() -> dict[str, str]:
    """Every ```python block of the tutorial that names its file, by file name."""
    text = (DOCS / "tutorial.md").read_text()
    return {f"{name}.py": f"# {name}.py\n{code}" for name, code in _BLOCK.findall(text)}


def test_the_tutorial_test_files_pass_as_a_reader_would_run_them(tmp_path: Path) -> None:
    files = _tutorial_files()
    tests = sorted(name for name in files if name.startswith("test_"))
    assert "test_backpressure.py" in tests and "counter.py" in files
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b\d+ passed\b", result.stdout)
    assert "failed" not in result.stdout


def test_no_public_name_shadows_a_submodule() -> None:
    # `import daemonkit.websocket.session` once gave the session() function:
    # a package's attribute must be its submodule when the names match.
    import daemonkit

    for info in pkgutil.walk_packages(daemonkit.__path__, "daemonkit."):
        if info.name.endswith("__main__"):
            continue  # running it is the command line
        if engine_missing(info.name):
            continue  # built on an engine that is not installed (pyuv)
        module = importlib.import_module(info.name)
        parent_name, _, leaf = info.name.rpartition(".")
        parent = importlib.import_module(parent_name)
        assert getattr(parent, leaf) is module, f"{parent_name}.{leaf} is not the module"


def test_lines_framer_takes_str_as_the_websocket_page_says() -> None:
    # docs/websocket.md: broadcasting a str gives line clients a UTF-8 line.
    assert Lines().encode("héllo") == "héllo\n".encode()
    assert "takes `bytes` only" not in (DOCS / "websocket.md").read_text()


def test_cli_page_lists_every_exit_code() -> None:
    text = (DOCS / "cli.md").read_text()
    codes = {n: v for n, v in vars(cli).items() if n.startswith("EXIT_") and isinstance(v, int)}
    assert len(codes) >= 9
    for name, value in codes.items():
        assert f"`{name}`" in text, f"docs/cli.md does not name {name}"
        assert re.search(rf"^\| {value} \|", text, re.MULTILINE), f"no table row for {value}"


def test_tutorial_does_not_deny_the_pidfile() -> None:
    text = (DOCS / "tutorial.md").read_text()
    assert "does not write a pid file" not in text
    assert "--pidfile" in (DOCS / "cli.md").read_text()


def test_docs_cite_no_issue_numbers() -> None:
    # A reader cannot look up "issue 6": say what the figure is instead.
    for page in DOCS.glob("*.md"):
        assert not re.search(r"\bissue \d+\b", page.read_text()), page.name
