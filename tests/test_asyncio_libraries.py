"""asyncio client libraries inside a daemon: redis-py's asyncio client, examples/redis_counter.py.

The daemon's loop is an asyncio loop, so an asyncio library runs in it as is:
``on_read`` starts a coroutine with ``spawn()`` and the coroutine answers.
These tests run the example on both backends against a real redis-server,
started on a free port by each test and stopped by it: concurrent clients
get an exact count, a graceful stop waits for a Redis call in flight and
its answer is still written, Redis down gives the client an error line and
the daemon goes on, and a daemon can wait for Redis in ``on_start``.
Skipped when redis-server or the redis package is missing.

No asyncio database driver (asyncpg, aiosqlite...) is in the test
environment, so only Redis is shown; they work the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from daemonkit.daemon import StartError
from tests.helpers import (
    PYTHON,
    ROOT,
    daemonkit_log_to,
    free_port,
    load_example,
    recv_until,
    wait_for_port,
)
from tests.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)
redis = pytest.importorskip(
    "redis", reason="the redis package is not installed (pip install redis)"
)

WAIT = 10.0  # real seconds any blocking wait in these tests may take at most
CLIENTS = 50  # concurrent clients of the counting test
INCRS = 20  # INCR commands each of them pipelines

example = load_example("redis_counter")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def warnings_logged() -> Iterator[list[logging.LogRecord]]:
    """The daemonkit log records at WARNING and above, while the test runs."""
    found: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            found.append(record)

    with daemonkit_log_to(keep):
        yield found


def ask(sock: socket.socket, *commands: bytes) -> list[bytes]:
    """Send the command lines at once (pipelined); return the answer lines, in order."""
    sock.sendall(b"".join(c + b"\n" for c in commands))
    data = b""
    for _ in range(len(commands) * 4096):  # bounded: the socket's timeout ends a silence
        if data.count(b"\n") >= len(commands):
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    lines = data.split(b"\n")[:-1]
    assert len(lines) == len(commands), (commands, data)
    return lines


# -- the example, on both backends ----------------------------------------------------


@pytest.mark.slow  # about 3 s with PYTHONASYNCIODEBUG=1 (1,000 tasks, both backends)
def test_concurrent_clients_get_an_exact_count(
    run_daemon: Any, redis_server: RedisServer, warnings_logged: list[logging.LogRecord]
) -> None:
    daemon = example.RedisCounter(redis_server.url, listen="tcp://127.0.0.1:0")
    runner = run_daemon(daemon)

    def client(_: int) -> list[int]:
        with socket.create_connection(("127.0.0.1", runner.address.port), timeout=WAIT) as sock:
            return [int(v) for v in ask(sock, *[b"INCR hits"] * INCRS)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(client, range(CLIENTS)))
    # Every INCR got its own value, and each client's answers came in order.
    assert sorted(v for values in answers for v in values) == list(range(1, CLIENTS * INCRS + 1))
    assert all(values == sorted(values) for values in answers)
    with runner.connect() as sock:
        assert ask(sock, b"GET hits", b"get nothing", b"SET hits 0") == [
            str(CLIENTS * INCRS).encode(),
            b"(nil)",
            b"ERR say INCR key or GET key",
        ]
    runner.stop()
    assert daemon.redis is None and daemon.in_flight == set()  # on_stop closed the client
    assert redis_server.get("hits") == str(CLIENTS * INCRS).encode()
    assert warnings_logged == []


def test_a_graceful_stop_waits_for_the_redis_call_in_flight(
    run_daemon: Any, redis_server: RedisServer, warnings_logged: list[logging.LogRecord]
) -> None:
    stopping = threading.Event()

    class Counter(example.RedisCounter):  # type: ignore[misc, name-defined]
        def on_stop(self) -> None:
            stopping.set()
            super().on_stop()

    daemon = Counter(redis_server.url, listen="tcp://127.0.0.1:0")
    runner = run_daemon(daemon)
    with runner.connect() as sock:
        assert ask(sock, b"INCR n") == [b"1"]  # the pool has a connection now
        redis_server.pause()
        try:
            sock.sendall(b"INCR n\n")
            runner.wait_for(lambda: len(daemon.in_flight) == 1, WAIT)
            runner.call(daemon.stop)  # graceful; returns at once
            assert stopping.wait(WAIT), "on_stop was not called"
        finally:
            redis_server.resume()
        # The stop waited for the task: the answer is written, then the connection closes.
        assert recv_until(sock, b"\n") == b"2\n"
        runner.stop()
        assert sock.recv(1) == b""
    assert daemon.redis is None
    assert redis_server.get("n") == b"2"
    assert warnings_logged == []


def test_redis_down_is_an_error_line_and_the_daemon_goes_on(
    run_daemon: Any, redis_server: RedisServer, warnings_logged: list[logging.LogRecord]
) -> None:
    runner = run_daemon(example.RedisCounter(redis_server.url, listen="tcp://127.0.0.1:0"))
    with runner.connect() as sock:
        assert ask(sock, b"INCR k") == [b"1"]
        redis_server.stop()
        assert ask(sock, b"INCR k", b"GET k", b"HELLO") == [
            b"ERR redis unavailable",
            b"ERR redis unavailable",
            b"ERR say INCR key or GET key",
        ]
        redis_server.start()  # same port, empty (no persistence)
        assert ask(sock, b"INCR k", b"GET k") == [b"1", b"1"]
    assert any("redis INCR b'k' failed" in r.getMessage() for r in warnings_logged)
    runner.stop()


class CheckedAtStart(example.RedisCounter):  # type: ignore[misc, name-defined]
    """Refuses to start without Redis: waits for a PING in on_start."""

    def on_start(self) -> None:
        super().on_start()
        # on_start runs before the loop does (run(), the command line,
        # DaemonRunner), so it may run a coroutine to its end on that loop.
        try:
            self.reactor.run_until_complete(
                asyncio.wait_for(self.redis.ping(), example.REDIS_TIMEOUT)
            )
        except Exception:
            self.reactor.run_until_complete(self.redis.aclose())
            self.redis = None
            raise


def test_on_start_may_wait_for_redis(run_daemon: Any, redis_server: RedisServer) -> None:
    runner = run_daemon(CheckedAtStart(redis_server.url, listen="tcp://127.0.0.1:0"))
    with runner.connect() as sock:
        assert ask(sock, b"INCR started") == [b"1"]
    runner.stop()
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StartError, match="on_start failed: ConnectionError"):
        run_daemon(CheckedAtStart(nowhere, listen="tcp://127.0.0.1:0"))


# -- the example as a user runs it ----------------------------------------------------


def test_the_example_from_the_command_line(redis_server: RedisServer) -> None:
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_server.url, PYTHONUNBUFFERED="1", NO_COLOR="1")
    script = str(ROOT / "examples" / "redis_counter.py")
    proc = subprocess.Popen(
        [PYTHON, "-m", "daemonkit", script, "--listen", f"tcp://127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        wait_for_port(port, proc, WAIT)
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            assert ask(sock, b"INCR cli", b"INCR cli", b"GET cli") == [b"1", b"2", b"2"]
        proc.terminate()
        _, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    text = err.decode()
    assert proc.returncode == 0, text
    assert "Warning" not in text and "Traceback" not in text, text


def test_the_guide_shows_the_example_as_it_is() -> None:
    """docs/outbound.md quotes examples/redis_counter.py: every quoted line is in the file."""
    guide = (ROOT / "docs" / "outbound.md").read_text()
    section = guide.split("## Using asyncio libraries inside a daemon", 1)[1]
    quoted = section.split("```python\n", 1)[1].split("```", 1)[0]
    source = (ROOT / "examples" / "redis_counter.py").read_text().splitlines()
    missing = [line for line in quoted.splitlines() if line.strip() and line not in source]
    assert missing == [], "docs/outbound.md quotes lines that examples/redis_counter.py lacks"
