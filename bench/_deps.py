"""Install what bench/run.py needs, when it is missing and can be installed.

* Python packages: the peers (Twisted, gevent, Tornado) and matplotlib for the
  charts come from the ``bench`` extra, ``pip install -e '.[bench]'``; a
  package still missing after that (an older setup.cfg) is installed by name.
* C: libuv's headers (Debian's ``libuv1-dev``) for the C reference server,
  and ``redis-server`` and ``redis-benchmark`` (``redis-tools``) for the
  RESP workloads, with ``apt-get`` when running as root on a Debian-like
  system.

Every step has a time limit, and none of them is fatal: what could not be
installed turns into "skipped: ... not available" rows. Nothing here prints;
the caller shows the returned notes.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from _common import REPO_DIR, python_executable

#: Python modules the peers and the charts import, with the pip package of each.
PY_PACKAGES: dict[str, str] = {
    "twisted": "twisted",
    "gevent": "gevent",
    "tornado": "tornado",
    "matplotlib": "matplotlib",
}
#: Debian packages, with a file whose presence shows each is installed: libuv
#: for the C echo server, redis-server and redis-benchmark (redis-tools) for
#: the RESP workloads.
APT_PACKAGES: dict[str, str] = {
    "libuv1-dev": "/usr/include/uv.h",
    "redis-server": "/usr/bin/redis-server",
    "redis-tools": "/usr/bin/redis-benchmark",
}
PIP_TIMEOUT = 600.0
APT_TIMEOUT = 600.0


def module_available(name: str, python: str | None = None) -> bool:
    """Return True if ``name`` imports in the servers' interpreter (``python``)."""
    python = python or python_executable()
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return importlib.util.find_spec(name) is not None
    try:
        proc = subprocess.run(
            [
                python,
                "-c",
                f"import importlib.util as u, sys; sys.exit(u.find_spec({name!r}) is None)",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def missing_modules(names: Sequence[str]) -> list[str]:
    """Return the modules of ``names`` that the servers' interpreter cannot import."""
    return [n for n in names if not module_available(n)]


def _run(cmd: list[str], timeout: float) -> tuple[bool, str]:
    try:
        proc = subprocess.run(
            cmd, cwd=REPO_DIR, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{' '.join(cmd)}: {exc}"
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return proc.returncode == 0, " | ".join(tail)


def ensure_python(notes: list[str]) -> None:
    """pip-install the bench extra (then any package still missing) into the servers' venv."""
    missing = missing_modules(list(PY_PACKAGES))
    if not missing:
        return
    python = python_executable()
    ok, out = _run([python, "-m", "pip", "install", "-q", "-e", ".[bench]"], PIP_TIMEOUT)
    notes.append(f"pip install -e '.[bench]': {'ok' if ok else 'failed: ' + out}")
    still = missing_modules(missing)
    if still:
        pkgs = [PY_PACKAGES[m] for m in still]
        ok, out = _run([python, "-m", "pip", "install", "-q", *pkgs], PIP_TIMEOUT)
        notes.append(f"pip install {' '.join(pkgs)}: {'ok' if ok else 'failed: ' + out}")


def ensure_apt(notes: list[str]) -> None:
    """apt-get install the Debian packages whose marker file is missing (root only)."""
    missing = [pkg for pkg, marker in APT_PACKAGES.items() if not Path(marker).exists()]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        notes.append(f"cannot install {' '.join(missing)}: needs apt-get as root")
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", *missing]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=APT_TIMEOUT, env=env, check=False
        )
        if proc.returncode != 0:  # the package lists may be missing or stale
            subprocess.run(
                ["apt-get", "update", "-q"],
                capture_output=True,
                timeout=APT_TIMEOUT,
                env=env,
                check=False,
            )
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=APT_TIMEOUT, env=env, check=False
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"apt-get install {' '.join(missing)} failed: {exc}")
        return
    ok = proc.returncode == 0
    notes.append(
        f"apt-get install {' '.join(missing)}: "
        + ("ok" if ok else "failed: " + proc.stderr.strip()[-300:])
    )


def ensure_pyuv(notes: list[str]) -> None:
    """Build and install pyuv (the pyuv backend) with scripts/build-pyuv when it is missing."""
    if module_available("pyuv"):
        return
    ok, out = _run(["sh", "scripts/build-pyuv", python_executable()], PIP_TIMEOUT)
    notes.append(f"sh scripts/build-pyuv: {'ok' if ok else 'failed: ' + out}")


def ensure_all(install: bool) -> list[str]:
    """Install what is missing when ``install``; return notes on what was done."""
    notes: list[str] = []
    if install:
        ensure_python(notes)
        ensure_apt(notes)  # libuv1-dev first: pyuv builds against it
        ensure_pyuv(notes)
    return notes
