"""Small blocking-socket helpers for tests, and a hook on the daemonkit loggers."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from daemonkit.daemon import Daemon
from daemonkit.ops.control import Operations

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: Every backend, for tests that hand one to a subprocess or a Reactor
#: themselves (the ``backend`` fixture of conftest.py serves the rest). pyuv
#: has no wheel for today's Pythons: ``make test`` builds it, else it skips.
ALL_BACKENDS = [
    "uvloop",
    "asyncio",
    pytest.param(
        "pyuv",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("pyuv") is None,
            reason="pyuv is not installed: run python -m daemonkit build-pyuv (make test does)",
        ),
    ),
]


def recv_until(sock: socket.socket, end: bytes, limit: int = 1 << 20) -> bytes:
    """Read until ``end`` is seen or the peer closes (the socket has a timeout)."""
    data = b""
    while not data.endswith(end) and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock: socket.socket) -> bytes:
    """Read until the peer closes (the socket has a timeout)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0
) -> None:
    """Poll until 127.0.0.1:port accepts (or the process died: fail with its stderr)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"daemon exited with {proc.returncode}: {err}") from None
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listening on port {port} after {timeout}s") from None
            time.sleep(0.02)


@contextlib.contextmanager
def daemonkit_log_to(emit: Callable[[logging.LogRecord], object]) -> Iterator[None]:
    """Call ``emit(record)`` for every record of the daemonkit loggers, DEBUG up, meanwhile."""
    handler = logging.Handler(logging.DEBUG)
    handler.emit = emit  # type: ignore[method-assign, assignment]
    logger = logging.getLogger("daemonkit")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def operations_of(daemon: Daemon) -> Operations:
    """The control socket/metrics the runner attached to a running ``daemon``.

    Tests only: Operations registers itself as one of the daemon's cleanups,
    which is where a test finds it.
    """
    found = [c for c in daemon._cleanups if isinstance(c, Operations)]
    assert len(found) == 1, f"expected one Operations among the cleanups, found {len(found)}"
    return found[0]


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"_example_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_stdlib_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Yield the URL of a stdlib ``ThreadingHTTPServer`` running ``handler``; stop it after.

    A third-party HTTP server (not ours) for the bots' tests: ``yield from
    serve_stdlib_http(Handler)`` in a fixture.
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def issue_test_cert(root: Path) -> tuple[Any, Path, Path, Path]:
    """A CA of the test's own and a server certificate for 127.0.0.1 under ``root``.

    Returns (the trustme CA, cert chain file, key file, CA file).
    """
    import trustme

    authority = trustme.CA()
    server = authority.issue_cert("127.0.0.1")
    cert, key, ca_file = root / "server.pem", root / "server.key", root / "ca.pem"
    cert.write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(ca_file))
    return authority, cert, key, ca_file
