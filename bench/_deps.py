"""Install what bench/run.py needs, when it is missing and can be installed.

* Python packages: the peers (Twisted, gevent, Tornado) and matplotlib for the
  charts come from the ``bench`` extra, ``pip install -e '.[bench]'``; a
  package still missing after that (an older setup.cfg) is installed by name.
* Node: the Socket.IO peer of ``bench/broker_fanout.py`` (socket.io, its
  Redis adapter and the ``redis`` client), pinned in ``bench/node/package.json``
  and its lock file, installed with ``npm ci`` into ``bench/node/node_modules``
  (git-ignored) by :func:`ensure_node`, only when that benchmark runs.
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
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from _common import BENCH_DIR, REPO_DIR, python_executable

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
#: The Node packages' folder: package.json and package-lock.json (committed), node_modules.
NODE_DIR = BENCH_DIR / "node"
NODE_MODULES = NODE_DIR / "node_modules"
PIP_TIMEOUT = 600.0
NPM_TIMEOUT = 600.0
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


def _run(cmd: list[str], timeout: float, cwd: Path = REPO_DIR) -> tuple[bool, str]:
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
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


def node_missing() -> list[str]:
    """The pinned Node packages (name@version) not installed in bench/node/node_modules."""
    wanted: dict[str, str] = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    missing = []
    for name, version in sorted(wanted.items()):
        try:
            found = json.loads((NODE_MODULES / name / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            found = None
        if found != version:
            missing.append(f"{name}@{version}")
    return missing


def ensure_node(notes: list[str], install: bool = True) -> bool:
    """``npm ci`` the pinned Node packages when missing (and ``install``); True if they are there.

    ``npm ci`` installs exactly what bench/node/package-lock.json says (each
    package checked against its integrity hash) and nothing else; never a
    global install, never outside bench/node.
    """
    missing = node_missing()
    if not missing:
        return True
    if shutil.which("node") is None or shutil.which("npm") is None:
        notes.append(f"cannot install {' '.join(missing)}: node and npm are not installed")
        return False
    if not install:
        notes.append(f"not installed (--no-install): {' '.join(missing)}")
        return False
    cmd = ["npm", "ci", "--no-audit", "--no-fund", "--omit=dev"]
    ok, out = _run(cmd, NPM_TIMEOUT, cwd=NODE_DIR)
    notes.append(f"npm ci in bench/node: {'ok' if ok else 'failed: ' + out}")
    return ok and not node_missing()


def ensure_all(install: bool) -> list[str]:
    """Install what is missing when ``install``; return notes on what was done."""
    notes: list[str] = []
    if install:
        ensure_python(notes)
        ensure_apt(notes)  # libuv1-dev first: pyuv builds against it
        ensure_pyuv(notes)
    return notes
