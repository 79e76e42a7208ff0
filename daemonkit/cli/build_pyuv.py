"""``python -m daemonkit build-pyuv``: build and install pyuv, for ``--backend pyuv``.

pyuv's last release (1.4.0, 2017) has no wheels for today's Pythons, and its
sdist does not compile on Python 3.10 and later as it is: two lines use C
API that was removed. This command, in the Python it runs under (or the one
``--python`` names):

1. downloads the pinned sdist with pip and checks its sha256
   (:data:`PYUV_SHA256`);
2. makes the two C-API fixes (:data:`PATCHES`), each checked to apply
   exactly once;
3. builds a wheel against the system libuv when its headers are installed
   (Debian's ``libuv1-dev``), else against the libuv the sdist bundles;
4. caches the wheel (under ``$XDG_CACHE_HOME/daemonkit/pyuv``, by default
   ``~/.cache``) and installs it with that Python's pip; arguments after
   ``--`` go to ``pip install`` (for example ``-- --target DIR``).

It does nothing, quietly, when pyuv 1.4.0 already imports. It needs the
network (PyPI), a C compiler and Python's headers; without them it says which
step failed and exits 1. Only the standard library is used, so a checkout's
``scripts/build-pyuv`` runs this file directly, before daemonkit is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "PATCHES",
    "PYUV_SHA256",
    "PYUV_VERSION",
    "STEP_TIMEOUT",
    "BuildError",
    "build_parser",
    "main",
]

#: The pyuv release built.
PYUV_VERSION = "1.4.0"
#: sha256 of ``pyuv-1.4.0.tar.gz``, from PyPI's index.
PYUV_SHA256 = "caea2004d1125fe17cbde3c211c8abc72844e9b8dd7dfa007711e98fbc96fbc2"
#: The fixes for Python >= 3.10, as (file in the sdist, text, replacement).
PATCHES: tuple[tuple[str, str, str], ...] = (
    (
        "src/common.c",
        "return PyUnicode_EncodeUTF8(PyUnicode_AS_UNICODE(unicode), "
        'PyUnicode_GET_SIZE(unicode), "surrogateescape");',
        'return PyUnicode_AsEncodedString(unicode, "utf-8", "surrogateescape");',
    ),
    ("src/handle.c", "Py_REFCNT(self) = refcnt;", "Py_SET_REFCNT(self, refcnt);"),
)
# Where the system libuv's header is looked for.
_SYSTEM_HEADERS = ("/usr/include/uv.h", "/usr/local/include/uv.h")
#: Seconds each pip step may take (a download, a compile of about 20 s).
STEP_TIMEOUT = 600


class BuildError(Exception):
    """A step of the build failed; the message says which and what to do."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m daemonkit build-pyuv``."""
    parser = argparse.ArgumentParser(
        prog="python -m daemonkit build-pyuv",
        description=f"Build pyuv {PYUV_VERSION} (patched for today's Pythons) and install it.",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the Python to install it into (default: this one)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="where built wheels are kept (default: $XDG_CACHE_HOME/daemonkit/pyuv)",
    )
    parser.add_argument(
        "--libuv",
        choices=("auto", "system", "bundled"),
        default="auto",
        help="build against the system libuv or the sdist's copy (auto: system when uv.h exists)",
    )
    parser.add_argument("pip_args", nargs="*", help="after --: extra arguments to pip install")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 when pyuv is installed (or was), 1 when a step failed."""
    args = build_parser().parse_args(argv)
    python = str(args.python)
    if _installed(python):
        return 0
    libuv = args.libuv
    if libuv == "auto":
        libuv = "system" if any(os.path.exists(p) for p in _SYSTEM_HEADERS) else "bundled"
    try:
        wheel = _cached_wheel(python, libuv, args.cache)
        _pip(
            python, ["install", "-q", "--no-deps", "--force-reinstall", *args.pip_args, str(wheel)]
        )
    except BuildError as exc:
        print(f"build-pyuv: {exc}", file=sys.stderr)
        return 1
    return 0


def _installed(python: str) -> bool:
    check = f"import pyuv, sys; sys.exit(pyuv.__version__ != {PYUV_VERSION!r})"
    done = subprocess.run(
        [python, "-c", check], capture_output=True, timeout=STEP_TIMEOUT, check=False
    )
    return done.returncode == 0


def _cached_wheel(python: str, libuv: str, cache: Path | None) -> Path:
    """The wheel for *python* and *libuv*, built into the cache first if it is not there."""
    tag = subprocess.run(
        [
            python,
            "-c",
            "import sys, sysconfig; "
            "print(sys.implementation.cache_tag + '-' + sysconfig.get_platform())",
        ],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=True,
    ).stdout.strip()
    root = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = (root if cache else root / "daemonkit" / "pyuv") / f"{PYUV_VERSION}-{tag}-{libuv}"
    found = sorted(folder.glob("pyuv-*.whl"))
    if found:
        return found[0]
    print(f"build-pyuv: building pyuv {PYUV_VERSION} against the {libuv} libuv", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="build-pyuv-") as tmp:
        work = Path(tmp)
        _pip(python, ["download", "-q", "--no-deps", "--no-binary", ":all:",
                      f"pyuv=={PYUV_VERSION}", "-d", str(work)])  # fmt: skip
        source = prepare_source(work / f"pyuv-{PYUV_VERSION}.tar.gz", work, libuv)
        _pip(python, ["wheel", "-q", "--no-deps", "-w", str(work / "wheel"), str(source)])
        folder.mkdir(parents=True, exist_ok=True)
        for built in (work / "wheel").glob("pyuv-*.whl"):
            shutil.copy2(built, folder)
    found = sorted(folder.glob("pyuv-*.whl"))
    if not found:
        raise BuildError("pip built no pyuv wheel")
    return found[0]


def prepare_source(sdist: Path, work: Path, libuv: str) -> Path:
    """Check *sdist*'s sha256, unpack it in *work*, patch it; return the source folder."""
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != PYUV_SHA256:
        raise BuildError(f"{sdist.name} has sha256 {digest}, not the pinned {PYUV_SHA256}")
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(work, filter="data")
        else:  # pragma: no cover - Pythons before the extraction filters
            tar.extractall(work)  # the archive's sha256 was checked
    source = work / f"pyuv-{PYUV_VERSION}"
    for name, old, new in PATCHES:
        path = source / name
        text = path.read_text(encoding="utf-8")
        if text.count(old) != 1:
            raise BuildError(f"{name} does not hold the line to fix exactly once: {old!r}")
        path.write_text(text.replace(old, new), encoding="utf-8")
    if libuv == "system":
        # setuptools reads command options from setup.cfg: this is
        # `setup.py build_ext --use-system-libuv` for a pip build.
        with (source / "setup.cfg").open("a", encoding="utf-8") as cfg:
            cfg.write("\n[build_ext]\nuse_system_libuv = 1\n")
    return source


def _pip(python: str, words: list[str]) -> None:
    done = subprocess.run(
        [python, "-m", "pip", *words],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        hint = " (a C compiler and Python's headers are needed)" if words[0] == "wheel" else ""
        raise BuildError(f"pip {words[0]} failed{hint}:\n" + "\n".join(tail))


if __name__ == "__main__":
    sys.exit(main())
