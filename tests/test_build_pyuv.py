"""``python -m daemonkit build-pyuv``: the fixes it makes, its checks, its quiet exit.

The build itself (download, patch, compile, cache, install) runs in
``make test`` before the suite (through scripts/build-pyuv); these tests pin
what can be checked without the network, on a stand-in sdist.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from daemonkit.cli import build_pyuv
from daemonkit.cli.build_pyuv import PATCHES, PYUV_VERSION, BuildError, prepare_source
from tests.helpers import PYTHON, ROOT

# The command answers at once when pyuv is installed; a build takes ~20 s.
QUICK = 30.0


def _sdist(folder: Path, files: dict[str, str]) -> Path:
    """A pyuv-1.4.0.tar.gz holding *files* (and a setup.cfg) under pyuv-1.4.0/."""
    path = folder / f"pyuv-{PYUV_VERSION}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {**files, "setup.cfg": "[metadata]\nname = pyuv\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"pyuv-{PYUV_VERSION}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _pinned(monkeypatch: pytest.MonkeyPatch, sdist: Path) -> None:
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    monkeypatch.setattr(build_pyuv, "PYUV_SHA256", digest)


SOURCES = {name: f"/* before */\n    {old}\n/* after */\n" for name, old, _ in PATCHES}


def test_the_two_c_api_fixes_are_made_and_the_system_libuv_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdist = _sdist(tmp_path, SOURCES)
    _pinned(monkeypatch, sdist)
    source = prepare_source(sdist, tmp_path, "system")
    for name, old, new in PATCHES:
        text = (source / name).read_text()
        assert new in text and old not in text
        assert text.startswith("/* before */") and text.endswith("/* after */\n")
    assert "use_system_libuv = 1" in (source / "setup.cfg").read_text()
    bundled = prepare_source(sdist, tmp_path / "again", "bundled")
    assert "use_system_libuv" not in (bundled / "setup.cfg").read_text()


def test_an_sdist_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    sdist = _sdist(tmp_path, SOURCES)
    with pytest.raises(BuildError, match="not the pinned"):
        prepare_source(sdist, tmp_path, "system")


@pytest.mark.parametrize("times", [0, 2])
def test_a_fix_that_does_not_apply_exactly_once_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, times: int
) -> None:
    name, old, _ = PATCHES[1]
    sdist = _sdist(tmp_path, {**SOURCES, name: f"{old}\n" * times})
    _pinned(monkeypatch, sdist)
    with pytest.raises(BuildError, match="exactly once"):
        prepare_source(sdist, tmp_path, "system")


def test_the_pin_is_pyuv_1_4_0_by_its_sha256() -> None:
    assert PYUV_VERSION == "1.4.0"
    assert build_pyuv.PYUV_SHA256 == (
        "caea2004d1125fe17cbde3c211c8abc72844e9b8dd7dfa007711e98fbc96fbc2"
    )


def test_the_command_is_listed_and_has_help() -> None:
    listed = subprocess.run(
        [PYTHON, "-m", "daemonkit", "help"], capture_output=True, text=True, timeout=QUICK
    )
    assert "build-pyuv" in listed.stdout
    helped = subprocess.run(
        [PYTHON, "-m", "daemonkit", "help", "build-pyuv"],
        capture_output=True,
        text=True,
        timeout=QUICK,
    )
    assert helped.returncode == 0 and "--python" in helped.stdout


@pytest.mark.skipif(importlib.util.find_spec("pyuv") is None, reason="pyuv is not installed")
@pytest.mark.parametrize(
    "argv",
    [
        [PYTHON, "-m", "daemonkit", "build-pyuv"],
        ["sh", str(ROOT / "scripts" / "build-pyuv"), PYTHON],
    ],
    ids=["module", "script"],
)
def test_it_is_quiet_and_quick_when_pyuv_is_installed(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=QUICK, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_a_failed_pip_step_says_which_and_what_is_needed(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"pip wheel failed \(a C compiler"):
        build_pyuv._pip(PYTHON, ["wheel", "-q", "--no-deps", str(tmp_path / "no-such-source")])
