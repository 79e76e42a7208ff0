"""The compiled core and its pure-Python fallback (daemonkit.core.compiled, setup.py).

``make test`` runs the suite on the compiled core, then the core, framing and
protocol tests again with ``DAEMONKIT_NO_EXTENSIONS=1``; these tests check the
switch between the two and the build's fallback where no compiler exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import daemonkit
from daemonkit.core import compiled
from tests.helpers import PYTHON, ROOT

STEP_TIMEOUT = 60


def _python(code: str, *, env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    run = subprocess.run(
        [PYTHON, "-c", code],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        env=env if env is not None else dict(os.environ),
        cwd=cwd,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def _env(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


WHICH = (
    "import daemonkit, daemonkit.framing.lines as l, daemonkit.core.connection as c; "
    "print(daemonkit.CORE, l.__file__.endswith('.py'), c.__file__.endswith('.py'))"
)


def _compiler_works() -> bool:
    return shutil.which(os.environ.get("CC", "cc")) is not None


def test_the_running_core_is_the_one_asked_for() -> None:
    """This run's core: pure when forced, else compiled wherever a compiler built it."""
    if compiled.extensions_disabled():
        assert daemonkit.CORE == "pure"
    elif _compiler_works():
        # make test installs with a compiler present: the core must have been compiled
        # (a build that silently fell back would otherwise pass unnoticed).
        assert daemonkit.CORE == "compiled", "the compiled core was not built: pip install -e ."
    for name in compiled.COMPILED_MODULES:
        module = sys.modules[name] if name in sys.modules else __import__(name, fromlist=["_"])
        is_source = (module.__file__ or "").endswith(".py")
        assert is_source == (daemonkit.CORE == "pure"), name


@pytest.mark.parametrize("value", ["1", "yes"])
def test_the_switch_forces_every_pure_module(value: str) -> None:
    assert _python(WHICH, env=_env(DAEMONKIT_NO_EXTENSIONS=value)) == "pure True True"


@pytest.mark.parametrize("value", [None, "", "0"])
def test_without_the_switch_the_installed_core_runs(value: str | None) -> None:
    out = _python(WHICH, env=_env(DAEMONKIT_NO_EXTENSIONS=value))
    core = "compiled" if any(ROOT.glob("daemonkit/core/connection.*.so")) else "pure"
    assert out == ("compiled False False" if core == "compiled" else "pure True True")


def test_a_tree_without_extensions_runs_the_pure_core(tmp_path: Path) -> None:
    """The fallback: the package with no compiled module at all (a pure wheel, the sdist)."""
    shutil.copytree(
        ROOT / "daemonkit", tmp_path / "daemonkit", ignore=shutil.ignore_patterns("*.so")
    )
    code = (
        "import daemonkit; from daemonkit.framing import Lines; "
        f"print(daemonkit.CORE, daemonkit.__file__.startswith({str(tmp_path)!r}), "
        "Lines().feed(b'a\\nb'))"
    )
    env = _env(PYTHONPATH=str(tmp_path), DAEMONKIT_NO_EXTENSIONS=None)
    assert _python(code, env=env, cwd=tmp_path) == "pure True [b'a']"


def test_version_says_which_core() -> None:
    out = subprocess.run(
        [PYTHON, "-m", "daemonkit", "--version"],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        env=_env(DAEMONKIT_NO_EXTENSIONS="1"),
    )
    assert out.stdout == f"daemonkit {daemonkit.__version__} (pure core)\n", out.stderr


def _setup_py(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "setup.py", *args],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        cwd=ROOT,
        env=_env(**env),
    )


def test_the_build_falls_back_to_pure_python_without_a_compiler() -> None:
    """CC=false: the probe fails, the build says so once and goes on without extensions."""
    run = _setup_py("--version", CC="false", DAEMONKIT_NO_EXTENSIONS="")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == daemonkit.__version__
    said = [line for line in run.stderr.splitlines() if line.startswith("daemonkit:")]
    assert len(said) == 1 and "no working C compiler" in said[0], run.stderr
    assert "installing the pure-Python core" in said[0]


def test_the_build_honours_the_switch() -> None:
    run = _setup_py("--version", DAEMONKIT_NO_EXTENSIONS="1")
    assert run.returncode == 0, run.stderr
    said = [line for line in run.stderr.splitlines() if line.startswith("daemonkit:")]
    assert said == ["daemonkit: DAEMONKIT_NO_EXTENSIONS is set; installing the pure-Python core"]


def test_extensions_disabled_reads_the_environment() -> None:
    assert compiled.extensions_disabled({"DAEMONKIT_NO_EXTENSIONS": "1"})
    assert not compiled.extensions_disabled({"DAEMONKIT_NO_EXTENSIONS": "0"})
    assert not compiled.extensions_disabled({"DAEMONKIT_NO_EXTENSIONS": ""})
    assert not compiled.extensions_disabled({})
