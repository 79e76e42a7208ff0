"""A graceful stop answers every request already sent: none is reset in the listen backlog.

Closing a listening socket resets every connection still in its accept
queue, and closing a connection with unread input resets it too. A graceful
stop must first accept what is queued and read what was sent, answer it,
then close. Both backends, a ``Lines`` echo and an HTTP daemon, TCP and unix.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from daemonkit import Connection, Daemon, Lines
from daemonkit.testing import DaemonRunner
from tests.helpers import recv_until

QUEUED = 50  # clients waiting in the backlog with their request sent
TIMEOUT = 10.0  # per blocking socket operation; a passing test never waits this long
# The load test: LOAD_CLIENTS threads making short connections for LOAD_BEFORE
# seconds, then the stop; every thread ends by LOAD_DEADLINE.
LOAD_CLIENTS = 100
LOAD_BEFORE = 0.3
LOAD_DEADLINE = 30.0

HTTP_REQUEST = b"GET /%d HTTP/1.1\r\nHost: test\r\n\r\n"


class LineEcho(Daemon):
    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line)


class Hello(Daemon):
    def on_request(self, conn: Any, request: Any) -> None:
        conn.respond(200, (), request.path.encode())


def _daemon(protocol: str, family: str, tmp_path: Path) -> Daemon:
    if family == "unix":
        return LineEcho(listen=f"unix://{tmp_path / 'echo.sock'}")
    if protocol == "http":
        return Hello(listen="http://127.0.0.1:0")
    return LineEcho(listen="tcp://127.0.0.1:0")


def _connect(runner: DaemonRunner) -> socket.socket:
    address = runner.address
    if address.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(address.path)
        return sock
    return socket.create_connection((address.host, address.port), timeout=TIMEOUT)


def _request(protocol: str, n: int) -> bytes:
    return HTTP_REQUEST % n if protocol == "http" else b"line %d\n" % n


def _reply(sock: socket.socket, protocol: str, n: int) -> bytes:
    """Read the reply to request ``n`` (or what came before the end or a reset)."""
    try:
        return recv_until(sock, b"\r\n\r\n/%d" % n if protocol == "http" else b"\n")
    except OSError as exc:
        return repr(exc).encode()


def _answered(protocol: str, n: int, reply: bytes) -> bool:
    if protocol == "http":
        return reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\n/%d" % n)
    return reply == b"line %d\n" % n


def _stop(runner: DaemonRunner, failed: list[BaseException]) -> None:
    try:
        runner.stop()
    except BaseException as exc:  # reported by the test's thread
        failed.append(exc)


@pytest.mark.parametrize(
    ("protocol", "family"), [("echo", "tcp"), ("echo", "unix"), ("http", "tcp")]
)
def test_a_stop_answers_every_client_waiting_in_the_backlog(
    backend: str, protocol: str, family: str, tmp_path: Path
) -> None:
    daemon = _daemon(protocol, family, tmp_path)
    runner = DaemonRunner(daemon, backend=backend).start()
    # The stop runs while the clients read: each closes once answered, as a
    # client does (an HTTP connection told "close" lingers until its peer
    # closes, up to LINGER_TIMEOUT, so reading only after the stop would wait).
    failed: list[BaseException] = []
    stopper = threading.Thread(target=_stop, args=(runner, failed))
    try:
        runner.call(lambda: [host.pause() for host in daemon.endpoint_hosts])
        clients = [_connect(runner) for _ in range(QUEUED)]
        for n, sock in enumerate(clients):
            sock.sendall(_request(protocol, n))
        assert runner.call(lambda: daemon.stats["accepted"]) == 0  # all in the backlog
    finally:
        stopper.start()  # graceful: what Daemon.stop() and SIGTERM do
    replies = []
    for n, sock in enumerate(clients):
        with sock:
            replies.append(_reply(sock, protocol, n))
    stopper.join(LOAD_DEADLINE)
    assert not stopper.is_alive() and failed == []
    lost = [(n, r) for n, r in enumerate(replies) if not _answered(protocol, n, r)]
    assert lost == []
    assert daemon.stats["accepted"] == QUEUED and daemon.stats["rejected"] == 0
    if protocol == "http":
        # Answered while the daemon stops: the client must not reuse the connection.
        kept = [n for n, r in enumerate(replies) if b"\r\nconnection: close\r\n" not in r.lower()]
        assert kept == []


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["echo", "http"])
def test_no_request_sent_before_a_stop_is_lost_under_load(
    backend: str, protocol: str, tmp_path: Path
) -> None:
    daemon = _daemon(protocol, "tcp", tmp_path)
    runner = DaemonRunner(daemon, backend=backend).start()
    stopped = threading.Event()
    deadline = time.monotonic() + LOAD_DEADLINE
    lock = threading.Lock()
    answered: list[int] = []
    lost: list[str] = []

    def client(k: int) -> None:
        n = k * 1_000_000
        while time.monotonic() < deadline:
            n += 1
            try:
                sock = _connect(runner)
            except OSError:
                if stopped.is_set():
                    return  # refused after the stop: fine
                continue
            with sock:
                try:
                    sock.sendall(_request(protocol, n))
                except OSError:
                    continue  # not fully sent: no promise was made
                sent_before_stop = not stopped.is_set()
                reply = _reply(sock, protocol, n)
            with lock:
                if _answered(protocol, n, reply):
                    answered.append(n)
                elif sent_before_stop:
                    lost.append(f"{n}: {reply[:80]!r}")
            if stopped.is_set():
                return

    threads = [threading.Thread(target=client, args=(k,)) for k in range(LOAD_CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(LOAD_BEFORE)
        stopped.set()  # first: a request sent after this line promises nothing
        runner.stop()
    finally:
        stopped.set()
        for thread in threads:
            thread.join(LOAD_DEADLINE)
        runner.stop(now=True)
    assert lost == []
    assert len(answered) >= LOAD_CLIENTS  # the load really ran
