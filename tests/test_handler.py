"""Handler's actions that go to its daemon: offload (connect is in test_links, cron in test_cron).

A handler serving an endpoint of its own reaches the daemon's pool through
``self.offload``, exactly as the daemon does; both backends, real sockets.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from daemonkit import ConfigError, Connection, Daemon, Endpoint, Handler, Lines
from tests.helpers import recv_until

WAIT = 10.0  # real seconds any blocking wait in these tests may take at most


def blocking_upper(line: bytes, gate: threading.Event) -> bytes:
    """A blocking call: waits (up to WAIT) for ``gate``, then answers."""
    if not gate.wait(WAIT):
        raise TimeoutError("the test never opened the gate")
    return line.upper()


class Shouter(Handler):
    """Serves its own endpoint; upper-cases each line in the daemon's thread pool."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.threads: dict[str, int] = {}

    def on_read(self, conn: Connection, line: bytes) -> None:
        self.threads["loop"] = threading.get_ident()
        self.offload(blocking_upper, line, self.gate, callback=lambda up: self.reply(conn, up))

    def reply(self, conn: Connection, up: bytes) -> None:
        self.threads["callback"] = threading.get_ident()
        conn.send(up)


def test_a_handler_offloads_a_blocking_call_and_replies_from_the_callback(
    run_daemon: Any,
) -> None:
    shouter = Shouter()
    daemon = Daemon(listen=Endpoint("tcp://127.0.0.1:0", framing=Lines, handler=shouter))
    runner = run_daemon(daemon)
    with runner.connect() as sock:
        sock.sendall(b"abc\n")
        # The call is blocked in a worker thread and the loop is free: it
        # counts the call in flight, which it could not do were it blocked.
        runner.wait_for(lambda: daemon.offload_in_flight() == 1, WAIT)
        shouter.gate.set()
        assert recv_until(sock, b"\n") == b"ABC\n"
    assert shouter.threads["callback"] == shouter.threads["loop"]
    runner.wait_for(lambda: daemon.offload_in_flight() == 0, WAIT)


def test_offload_from_a_handler_that_serves_no_daemon_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"Shouter\.offload\(\): this handler serves no daemon"):
        Shouter().offload(bytes.upper, b"x")
