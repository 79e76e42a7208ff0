"""scripts/build-pyuv: the patch it applies, and its quiet exit when pyuv is there.

The build itself (download, patch, compile, cache, install) runs in
``make test`` before the suite; these tests pin what can be checked without
the network.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess

import pytest

from tests.helpers import PYTHON, ROOT

SCRIPT = ROOT / "scripts" / "build-pyuv"
PATCH = ROOT / "scripts" / "pyuv-py310.patch"

# The script answers at once when pyuv is installed; a build takes ~20 s.
QUICK = 30.0


def _changes(patch: str) -> dict[str, tuple[list[str], list[str]]]:
    """file -> (removed lines, added lines) of a unified diff."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    current: tuple[list[str], list[str]] | None = None
    for line in patch.splitlines():
        if line.startswith("+++ "):
            current = out.setdefault(line[4:].split("/", 1)[1].strip(), ([], []))
        elif line.startswith("--- "):
            continue
        elif current is not None and line.startswith("-"):
            current[0].append(line[1:].strip())
        elif current is not None and line.startswith("+"):
            current[1].append(line[1:].strip())
    return out


def test_the_patch_makes_the_two_c_api_fixes_and_nothing_else() -> None:
    changes = _changes(PATCH.read_text())
    assert changes == {
        "src/handle.c": (["Py_REFCNT(self) = refcnt;"], ["Py_SET_REFCNT(self, refcnt);"]),
        "src/common.c": (
            [
                "return PyUnicode_EncodeUTF8(PyUnicode_AS_UNICODE(unicode), "
                'PyUnicode_GET_SIZE(unicode), "surrogateescape");'
            ],
            ['return PyUnicode_AsEncodedString(unicode, "utf-8", "surrogateescape");'],
        ),
    }


def test_the_sdist_is_pinned_by_version_and_sha256() -> None:
    text = SCRIPT.read_text()
    assert "PYUV_VERSION=1.4.0" in text
    assert "PYUV_SHA256=caea2004d1125fe17cbde3c211c8abc72844e9b8dd7dfa007711e98fbc96fbc2" in text
    assert "sha256sum -c" in text


@pytest.mark.skipif(importlib.util.find_spec("pyuv") is None, reason="pyuv is not installed")
def test_it_is_quiet_and_quick_when_pyuv_is_installed() -> None:
    done = subprocess.run(
        ["sh", str(SCRIPT), PYTHON],
        capture_output=True,
        text=True,
        timeout=QUICK,
        env=dict(os.environ),
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
