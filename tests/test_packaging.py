"""Packaging: what a pip user gets, and that optional engines stay optional.

The quick tests check that ``import daemonkit`` loads no optional engine,
that each engine's absence gives a line naming the extra to install, and
that ``setup.cfg`` keeps every optional dependency in an extra and in
``dev``. The slow ones build the sdist and the wheel, install the wheel
without extras into a fresh virtualenv (its dependencies come from the
package index: no network is a failure, not a skip), run an example daemon
from it over a real socket, and check what the sdist ships.
"""

from __future__ import annotations

import configparser
import email
import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit.bots.progress import PlainProgress, choose_progress
from daemonkit.protocols.websocket import sessions
from tests.helpers import PYTHON, ROOT, free_port, recv_until, wait_for_port

# A parallel run (make unit: pytest -n 2 --dist loadfile) runs this whole
# module in one worker: the sdist and the wheel are built once, and never by
# two processes at once (a build stages daemonkit-VERSION/ and
# daemonkit.egg-info/ in the source tree; two at once fail).

# Every subprocess step is bounded; a build or an install that needs longer
# is broken (a cold build with its isolated environments takes about 15 s).
STEP_TIMEOUT = 90

# Optional engines: the module, and the extra that installs it.
OPTIONAL = {
    "rich": "bots",
    "websockets": "speedups",
    "watchfiles": "reload",
    "prometheus_client": "metrics",
    "cronsim": "cron",
    "redis": "broker",
}


def _requirement_names(text: str) -> set[str]:
    names = set()
    for line in text.strip().splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.-]+)", line)
        if match:
            names.add(match.group(1).lower())
    return names


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- quick: nothing optional is imported, or required --------------------------------


def test_import_daemonkit_loads_no_optional_engine() -> None:
    code = (
        "import sys, daemonkit, daemonkit.http, daemonkit.websocket, daemonkit.bots, "
        "daemonkit.bots.progress, daemonkit.cli, daemonkit.ops.runner\n"
        "print(' '.join(sorted(m for m in sys.modules if '.' not in m)))\n"
    )
    out = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, timeout=STEP_TIMEOUT, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    for module in [*OPTIONAL, "pygments", "markdown_it"]:
        assert module not in loaded, f"import daemonkit loaded {module}"
    # The core engines are imported: they are what every daemon needs.
    assert {"colorlog", "httptools"} <= loaded


def test_runtime_dependencies_are_the_core_only() -> None:
    cfg = _setup_cfg()
    required = _requirement_names(cfg["options"]["install_requires"])
    assert {"uvloop", "colorlog", "httptools"} <= required
    assert not required & {m.replace("_", "-") for m in OPTIONAL}, required
    extras = cfg["options.extras_require"]
    dev = _requirement_names(extras["dev"])
    for module, extra in OPTIONAL.items():
        assert module.replace("_", "-") in _requirement_names(extras[extra]), (module, extra)
    for extra in set(extras) - {"dev", "docs", "bench"}:
        missing = _requirement_names(extras[extra]) - dev
        assert not missing, f"the dev extra must include {missing} ([{extra}]) for the suite"
    assert "build" in dev


def test_progress_without_rich_is_plain_and_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    for name in ("rich", "rich.console", "rich.live", "rich.table", "rich.text"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    for color in ("auto", "always"):
        stream = Tty()
        progress = choose_progress(stream, color)
        assert type(progress) is PlainProgress
        assert progress.stream is stream
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1, lines
        assert "pip install 'daemonkit[bots]'" in lines[0]
        assert "rich" in lines[0]
    # Not asked for the table: no note.
    for stream, color in ((Tty(), "never"), (io.StringIO(), "auto")):
        assert type(choose_progress(stream, color)) is PlainProgress
        assert stream.getvalue() == ""


def test_websocket_unmasking_without_speedups_says_which_extra(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from websockets.speedups import apply_mask as c_apply_mask

    from daemonkit.framing.websocket import apply_mask as py_apply_mask

    sessions.unmasker.cache_clear()
    try:
        assert sessions.unmasker() is c_apply_mask
        sessions.unmasker.cache_clear()
        monkeypatch.setitem(sys.modules, "websockets.speedups", None)
        with caplog.at_level(logging.INFO, logger="daemonkit"):
            assert sessions.unmasker() is py_apply_mask
            assert sessions.unmasker() is py_apply_mask  # said once, not per connection
        notes = [r.getMessage() for r in caplog.records if r.name == "daemonkit.websocket"]
        assert len(notes) == 1, notes
        assert "pip install 'daemonkit[speedups]'" in notes[0]
    finally:
        sessions.unmasker.cache_clear()


# -- slow: build, install, run -------------------------------------------------------


def _clean_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONASYNCIODEBUG", "PYTHONHOME"):
        env.pop(name, None)
    return env


def _run(argv: list[str], what: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a step; a failure (network down, say) fails the test with the step's output."""
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            **{"env": _clean_env(), **kw},  # type: ignore[arg-type]
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} took more than {STEP_TIMEOUT}s: {exc.stderr!r}")
    if out.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {out.returncode}); it needs the package index, "
            f"check the network:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
    return out  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The sdist and the wheel, built by ``python -m build`` from this tree."""
    try:
        import build  # noqa: F401
    except ImportError:
        pytest.fail("the packaging tests need 'build': pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("dist")
    # The pure wheel (DAEMONKIT_NO_EXTENSIONS): the one that installs where no
    # compiler exists; compiling the core would also take most of STEP_TIMEOUT.
    _run(
        [PYTHON, "-m", "build", "--outdir", str(out), str(ROOT)],
        "python -m build",
        env={**_clean_env(), "DAEMONKIT_NO_EXTENSIONS": "1"},
    )
    (sdist,) = out.glob("daemonkit-*.tar.gz")
    (wheel,) = out.glob("daemonkit-*.whl")
    yield sdist, wheel


@pytest.mark.slow
def test_sdist_ships_what_its_tests_need(
    dists: tuple[Path, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        tar.extractall(tmp_path, filter="data")
    for needed in (
        "LICENSE",
        "README.md",
        "PYPI.md",
        "CHANGELOG.md",
        "tests/helpers.py",
        "tests/conftest.py",
        "tests/http/__init__.py",
        "tests/websocket/test_framing.py",
        "examples/echo_daemon.py",
        "docs/index.md",
        "docs/conf.py",
        "bench/run.py",
        "daemonkit/py.typed",
    ):
        assert needed in names, f"the sdist lacks {needed}"
    assert not [n for n in names if n.startswith("docs/_build") or "__pycache__" in n]
    # Its own tests collect from the unpacked sdist exactly as from this tree:
    # the same tests, and no collection error the tree does not have (a file
    # the sdist left out would be one; the tree's own are the suite's business).
    (root,) = tmp_path.iterdir()
    assert _collect(root) == _tree_tests(request)
    # ...and they run there, against the sdist's own copy of the package: a
    # framer's cases, the layering and exports, the docs' runnable files.
    where = subprocess.run(
        [PYTHON, "-c", "import daemonkit; print(daemonkit.__file__)"],
        capture_output=True, text=True, timeout=STEP_TIMEOUT, cwd=root, env=_clean_env(),
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(root)), where.stdout + where.stderr
    ran = subprocess.run(
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/framing/test_lines.py", "tests/test_exports.py", "tests/test_docs.py"],
        capture_output=True, text=True, timeout=STEP_TIMEOUT, cwd=root, env=_clean_env(),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert re.search(r"\b\d+ passed\b", ran.stdout) and "failed" not in ran.stdout


def _tree_tests(request: pytest.FixtureRequest) -> tuple[set[str], set[str]]:
    """What ``_collect(ROOT)`` returns, taken from this run when it collected the whole suite.

    A run of the suite as ``make test`` starts it (no paths, no ``-k``/``-m``)
    has collected every test of the tree already, without a collection error
    (it would have stopped): reusing that saves a second collection of the
    suite (about 10 s). Any other run collects the tree again.
    """
    config = request.config
    whole = [Path(arg).resolve() for arg in config.args] in ([], [ROOT / "tests"])
    if whole and not config.option.keyword and not config.option.markexpr:
        return {item.nodeid for item in request.session.items}, set()
    return _collect(ROOT)


def _collect(where: Path) -> tuple[set[str], set[str]]:
    """The test ids ``pytest --collect-only`` finds under ``where``, and the files it failed on."""
    out = subprocess.run(
        [PYTHON, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "--continue-on-collection-errors", "tests"],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        cwd=where,
        env=_clean_env(),
    )  # fmt: skip
    lines = out.stdout.splitlines()
    ids = {line for line in lines if "::" in line}
    errors = {line for line in lines if line.startswith("ERROR ")}
    assert ids, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.returncode == (1 if errors else 0), out.stdout[-3000:] + out.stderr[-3000:]
    return ids, errors


@pytest.mark.slow
def test_wheel_metadata(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(zf.read(meta_name))
    assert any(n.endswith("LICENSE") and ".dist-info/" in n for n in names), names
    assert "daemonkit/py.typed" in names
    # Built with DAEMONKIT_NO_EXTENSIONS: pure Python, for any platform, no extension inside.
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    assert not [n for n in names if n.endswith(".so")], names
    assert "daemonkit/core/connection.py" in names
    classifiers = meta.get_all("Classifier") or []
    assert "License :: OSI Approved :: MIT License" in classifiers
    assert "Typing :: Typed" in classifiers
    assert meta["Author"] == "daemonkit developers"
    requires = meta.get_all("Requires-Dist") or []
    core = {r.split(";")[0].split(">")[0].strip() for r in requires if "extra ==" not in r}
    assert {"colorlog", "httptools", "uvloop"} <= core, requires
    assert not core & {m.replace("_", "-") for m in OPTIONAL}, requires
    assert any(r.startswith("rich") and 'extra == "bots"' in r for r in requires), requires
    assert any(r.startswith("websockets") and 'extra == "speedups"' in r for r in requires), (
        requires
    )
    description = meta.get_payload()
    assert isinstance(description, str)
    assert "pip install daemonkit" in description
    assert "python -m daemonkit" in description
    assert "make demo" not in description  # the clone-oriented README is not the PyPI page


@pytest.mark.slow
def test_wheel_without_extras_runs_a_daemon(dists: tuple[Path, Path], tmp_path: Path) -> None:
    sdist, wheel = dists
    venv = tmp_path / "venv"
    _run([PYTHON, "-m", "venv", str(venv)], "python -m venv")
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", str(wheel)], "pip install the wheel")
    # Run from a directory with no daemonkit source in it, on the sdist's example.
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    (src,) = (tmp_path / "src").iterdir()
    where = _run(
        [
            python,
            "-c",
            "import sys, daemonkit, importlib.util as u; print(daemonkit.__file__);"
            "print(*[m for m in sys.argv[1:] if u.find_spec(m)])",
            *OPTIONAL,
        ],
        "import daemonkit",
        cwd=tmp_path,
    ).stdout.split("\n")
    assert where[0].startswith(str(venv)), where
    assert where[1] == "", f"installed without extras: {where[1]}"

    port = free_port()
    proc = subprocess.Popen(
        [python, "-m", "daemonkit", str(src / "examples" / "echo_daemon.py"),
         "--listen", f"tcp://127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=_clean_env(),
    )  # fmt: skip
    try:
        wait_for_port(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"hello from a pip install\n")
            assert recv_until(sock, b"\n") == b"hello from a pip install\n"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=STEP_TIMEOUT)
        assert proc.returncode == 0, err.decode()
        assert b"Traceback" not in err, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=STEP_TIMEOUT)
