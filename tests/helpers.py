"""Small blocking-socket helpers for tests, and a hook on the daemonkit loggers."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from daemonkit.core.reactor import Reactor
from daemonkit.daemon import Daemon
from daemonkit.ops.control import Operations
from daemonkit.ops.workers import Supervisor

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: Names the backends the suite runs on, comma-separated (default: all of
#: them). ``make test``'s second run, on the pure-Python core, sets
#: ``uvloop,asyncio``: the pyuv backend runs the same core code.
ENV_BACKENDS = "DAEMONKIT_TEST_BACKENDS"


def selected_backends(names: list[str]) -> list[str]:
    """``names`` less those :data:`ENV_BACKENDS` leaves out (an unknown name is an error)."""
    chosen = os.environ.get(ENV_BACKENDS, "").replace(" ", "")
    if not chosen:
        return names
    wanted = chosen.split(",")
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise pytest.UsageError(f"{ENV_BACKENDS}: no backend {unknown}; there are {names}")
    return [name for name in names if name in wanted]


#: Every backend, for tests that hand one to a subprocess or a Reactor
#: themselves (the ``backend`` fixture of conftest.py serves the rest). pyuv
#: has no wheel for today's Pythons: ``make test`` builds it, else it skips.
ALL_BACKENDS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            importlib.util.find_spec("pyuv") is None,
            reason="pyuv is not installed: run python -m daemonkit build-pyuv (make test does)",
        ),
    )
    if name == "pyuv"
    else name
    for name in selected_backends(["uvloop", "asyncio", "pyuv"])
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


# -- real daemons started as subprocesses (workers, systemd) ---------------------------

# Seconds a subprocess gets to do what a test waits for.
WAIT = 20.0

# Stands in for systemd: moves the passed descriptors to 3, 4, ..., sets
# LISTEN_PID to the pid the daemon will have (exec keeps it), and execs it.
ACTIVATE = textwrap.dedent(
    """
    import fcntl, os, sys
    fds = [int(fd) for fd in sys.argv[1].split(",")]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # out of the way of 3, 4, ...
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i, inheritable=True)
        os.close(fd)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(sys.executable, [sys.executable, "-m", "daemonkit", *sys.argv[2:]])
    """
)


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # who sent it
        self.sock.bind(path)
        #: The pid that sent the last message :meth:`next` returned.
        self.sender: int | None = None

    def next(self, timeout: float = WAIT) -> dict[str, str]:
        """The next message, as a dict of its assignments (its sender's pid: :attr:`sender`)."""
        self.sock.settimeout(timeout)
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        self.sender = None
        for level, kind, creds in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                self.sender = struct.unpack("3i", creds[:12])[0]  # struct ucred: pid, uid, gid
        return dict(line.split("=", 1) for line in data.decode().split("\n"))

    def next_event(self, timeout: float = WAIT) -> dict[str, str]:
        """The next message that is not only a STATUS= update (those come on a timer)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.001, deadline - time.monotonic()))
            if set(message) != {"STATUS"}:
                return message

    def pending(self) -> list[dict[str, str]]:
        """Every message already queued, without waiting."""
        self.sock.setblocking(False)
        messages = []
        try:
            while True:
                data = self.sock.recv(4096).decode()
                messages.append(dict(line.split("=", 1) for line in data.split("\n")))
        except BlockingIOError:
            return messages

    def close(self) -> None:
        self.sock.close()


# The daemon under test: a Lines echo answering "PID WORKER_ID LINE".
DAEMON = """
import os
from daemonkit import Daemon, Lines


class Echo(Daemon):
    framing = Lines

    def on_read(self, conn, line):
        conn.send(b"%d %s %s" % (os.getpid(), str(self.worker_id).encode(), line))
"""

# Short connections the fairness test makes.
SPLIT_CONNECTIONS = 200
# The load during a kill or a reload: LOAD_THREADS clients, each making one
# short connection after another, bounded by LOAD_MAX each and by the test's stop.
LOAD_THREADS = 4
LOAD_MAX = 5000


class Served:
    """``python -m daemonkit SOURCE --workers N`` with its log in a file (SOURCE: DAEMON).

    ``env`` adds variables; ``port`` is the one to listen on (default: a free
    one); ``launcher`` replaces ``python -m daemonkit`` (systemd's stand-in,
    :data:`ACTIVATE`, with the descriptors in ``pass_fds``).
    """

    def __init__(
        self,
        tmp: Path,
        workers: int,
        *args: str,
        backend: str = "uvloop",
        source: str = DAEMON,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        launcher: Sequence[str] = (PYTHON, "-m", "daemonkit"),
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.path = tmp / "echo_workers.py"
        self.path.write_text(textwrap.dedent(source))
        self.log_path = tmp / "daemon.log"
        self.port = free_port() if port is None else port
        environ = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1", **(env or {}))
        environ.pop("PYTHONASYNCIODEBUG", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(*launcher, str(self.path), "--backend", backend),
                    *("--listen", f"tcp://127.0.0.1:{self.port}", "--workers", str(workers)),
                    *args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=environ,
                cwd=ROOT,
                pass_fds=pass_fds,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, count: int = 1, *, alive: bool = True) -> list[Any]:
        """Wait until ``pattern`` (a regex) occurs ``count`` times in the log; its matches.

        Fails early if the process started exits, unless ``alive=False`` (it
        handed over to a new supervisor, or detached).
        """
        deadline = time.monotonic() + WAIT
        while len(found := re.findall(pattern, self.log)) < count:
            if alive and self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} x{count} after {WAIT}s:\n{self.log}")
            time.sleep(0.02)
        return found

    def ask(self, line: bytes = b"hi") -> tuple[int, str]:
        """One short connection: (pid that answered, its worker id)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(line + b"\n")
            reply = recv_until(sock, b"\n")
        pid, wid, echoed = reply.rstrip(b"\n").split(b" ", 2)
        assert echoed == line, reply
        return int(pid), wid.decode()

    def workers(self, count: int = 2) -> dict[str, int]:
        """Worker id -> pid, asked until ``count`` ids answered (at most SPLIT_CONNECTIONS)."""
        found: dict[str, int] = {}
        for _ in range(SPLIT_CONNECTIONS):
            pid, wid = self.ask()
            found[wid] = pid
            if len(found) == count:
                break
        return found

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        for pid in re.findall(r"started (?:pid|new supervisor) (\d+)", self.log):
            try:
                os.kill(int(pid), signal.SIGKILL)  # a worker (or set) left over by a failed test
            except ProcessLookupError:
                pass


class Load:
    """Clients making short connections in threads until stopped; counts what happened.

    ``pace`` (seconds) is each client's pause between two connections: a
    lighter load leaves the CPU to processes starting meanwhile (a new set).
    """

    def __init__(self, served: Served, *, pace: float = 0.0) -> None:
        self.served = served
        self.pace = pace
        self.answered: Counter[int] = Counter()  # by pid
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client) for _ in range(LOAD_THREADS)]
        for t in self._threads:
            t.start()

    def _client(self) -> None:
        for _ in range(LOAD_MAX):
            if self._stop.is_set():
                return
            try:
                pid, _ = self.served.ask()
            except (OSError, ValueError) as exc:
                with self._lock:
                    self.failures.append(repr(exc))
                continue
            with self._lock:
                self.answered[pid] += 1
            if self.pace:
                self._stop.wait(self.pace)

    def total(self) -> int:
        with self._lock:
            return sum(self.answered.values())

    def wait_more(self, count: int) -> None:
        """Wait until ``count`` more requests were answered (bounded)."""
        target = self.total() + count
        deadline = time.monotonic() + WAIT
        while self.total() < target:
            assert time.monotonic() < deadline, f"the load stalled: {self.failures[:5]}"
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(WAIT)


# -- a supervisor in the test process, with tiny workers -----------------------------

# A worker that says it is ready (unless it is worker 1 and STALL is set), then waits.
TINY_WORKER = """
import os, sys, time
if os.environ.get("STALL") and os.environ["DAEMONKIT_WORKER"] == "1":
    time.sleep(60)
os.write(int(os.environ["DAEMONKIT_UPGRADE_FD"]), b"ready\\n")
time.sleep(60)
"""


def supervise_here(
    command: list[str],
    workers: int,
    *,
    seconds: float,
    then: Callable[[Supervisor], object] | None = None,
    **options: Any,
) -> tuple[int, list[str], Supervisor]:
    """Run a Supervisor here for at most ``seconds`` (then stop it); (exit, log lines, it).

    ``then(supervisor)`` runs on the loop's first turn (to upgrade it, say).
    """
    records: list[str] = []
    sock = socket.create_server(("127.0.0.1", 0))
    reactor = Reactor("asyncio")
    try:
        sup = Supervisor(reactor, {"tcp": sock}, workers, command=command, **options)
        reactor.call_later(seconds, sup.stop, "test deadline")
        if then is not None:
            reactor.call_soon(then, sup)
        with daemonkit_log_to(lambda r: records.append(r.getMessage())):
            code = sup.run()
    finally:
        reactor.close()
    return code, records, sup
