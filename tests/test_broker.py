"""Groups across processes on Redis (daemonkit.framework.broker), against a real redis-server.

One redis-server per test module, on a free port of 127.0.0.1, started and
stopped (by pid) by the fixture; each test flushes it first. Two daemons
share it — in this process (two DaemonRunner threads, two ports) or as a
subprocess that is killed — and their clients exchange lines in one room:
every client gets every message exactly once, in each sender's order, and
``count()`` agrees on both sides. Redis is restarted mid-run, and what the
docs promise about messages sent meanwhile is checked by the counters.
Skipped when redis-server or the redis package is missing.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemonkit import Daemon, Lines
from daemonkit.daemon import StartError
from daemonkit.errors import ConfigError
from daemonkit.framework.groups import Member, Members
from daemonkit.testing import DaemonRunner
from tests.helpers import PYTHON, ROOT, daemonkit_log_to, free_port, wait_for_port
from tests.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)
redis = pytest.importorskip("redis", reason="the redis package is not installed")

WAIT = 10.0  # real seconds any wait in these tests may take at most
HEARTBEAT = 0.2  # the tests' broker_heartbeat: a dead process leaves within 3 of them
STREAM = "daemonkit:stream"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def broker(redis_server: RedisServer) -> RedisServer:
    """The module's redis-server, running and empty."""
    if redis_server.proc is None:
        redis_server.start()
    with redis_server.client() as client:
        client.flushdb()
    return redis_server


@pytest.fixture
def warnings_logged() -> Iterator[list[logging.LogRecord]]:
    found: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            found.append(record)

    with daemonkit_log_to(keep):
        yield found


class Chat(Daemon):
    """Everyone is in "room"; each line is broadcast to the room (its sender too)."""

    listen = "tcp://127.0.0.1:0"
    framing = Lines

    def on_accept(self, conn: Any) -> None:
        self.group("room").add(conn)

    def on_read(self, conn: Any, line: bytes) -> None:
        self.group("room").broadcast(line)


def chat(url: str, **settings: Any) -> Chat:
    return Chat(broker=url, broker_heartbeat=HEARTBEAT, **settings)


def read_lines(sock: socket.socket, n: int) -> list[bytes]:
    """Exactly ``n`` lines (fails on fewer within the socket's timeout, or on more)."""
    data = b""
    for _ in range(n + 1000):  # bounded: each recv waits at most the socket's timeout
        if data.count(b"\n") >= n:
            break
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}; wanted {n} lines"
        data += chunk
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == n + 1, f"wanted {n} lines, got {data!r}"
    return lines[:-1]


def nothing_more(sock: socket.socket) -> None:
    """No further line arrives within a short wait (a duplicate would)."""
    sock.settimeout(0.3)
    try:
        extra = sock.recv(65536)
    except TimeoutError:
        extra = b""
    finally:
        sock.settimeout(WAIT)
    assert extra == b"", f"unexpected extra data {extra!r}"


def count_on(runner: DaemonRunner) -> int:
    return runner.call(lambda: runner.daemon.group("room").count())


def status_of(runner: DaemonRunner) -> dict[str, Any]:
    link = runner.daemon.broker_link
    assert link is not None
    return runner.call(link.status)


def wait_until(what: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(100_000):  # bounded in count as in time
        if what():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    raise AssertionError(f"not true within {timeout}s: {what}")


# -- two daemons, one room --------------------------------------------------------------


def test_two_daemons_share_a_room_exactly_once_in_order(
    run_daemon: Any, broker: RedisServer, warnings_logged: list[logging.LogRecord]
) -> None:
    """Two clients on A, one on B: every line reaches all three once, in its sender's order."""
    a = run_daemon(chat(broker.url))
    b = run_daemon(chat(broker.url))
    clients = [a.connect(WAIT), a.connect(WAIT), b.connect(WAIT)]
    wait_until(lambda: count_on(a) == 3 and count_on(b) == 3)
    assert runner_counts(a) == runner_counts(b)
    per_client = 30
    for i, sock in enumerate(clients):
        sock.sendall(b"".join(b"c%d:%d\n" % (i, n) for n in range(per_client)))
    total = per_client * len(clients)
    for sock in clients:
        lines = read_lines(sock, total)
        for i in range(len(clients)):
            from_i = [line for line in lines if line.startswith(b"c%d:" % i)]
            assert from_i == [b"c%d:%d" % (i, n) for n in range(per_client)]
        nothing_more(sock)
    sa, sb = status_of(a), status_of(b)
    assert (sa["sent"], sb["sent"]) == (2 * per_client, per_client)
    assert (sa["received"], sb["received"]) == (per_client, 2 * per_client)
    assert sa["lost"] == sb["lost"] == sa["dropped"] == sa["malformed"] == 0
    assert sa["state"] == sb["state"] == "up" and sa["peers"] == sb["peers"] == 1
    # A client leaves B: both counts follow.
    clients.pop().close()
    wait_until(lambda: count_on(a) == 2 and count_on(b) == 2)
    for sock in clients:
        sock.close()
    assert not warnings_logged


def test_a_burst_from_another_process_does_not_make_members_slow(
    run_daemon: Any, broker: RedisServer
) -> None:
    """3,000 lines of 100 bytes in one go: the receiving side's member gets every one.

    The reader delivers one stream entry (up to 100 messages) per loop turn,
    so the member's output is flushed between them instead of piling up past
    its high-water mark (64 KiB), where the skip policy would leave it out.
    """
    a = run_daemon(chat(broker.url))
    b = run_daemon(chat(broker.url))
    sender, receiver = a.connect(WAIT), b.connect(WAIT)
    wait_until(lambda: count_on(a) == 2 and count_on(b) == 2)
    burst = [b"%04d " % n + b"x" * 95 for n in range(3000)]
    sender.sendall(b"".join(line + b"\n" for line in burst))
    assert read_lines(receiver, len(burst)) == burst
    assert b.call(lambda: b.daemon.group("room").skipped) == 0
    sender.close()
    receiver.close()


def runner_counts(runner: DaemonRunner) -> dict[str, int]:
    return runner.call(lambda: runner.daemon.group("room").counts())


def test_status_and_metrics_show_the_broker(run_daemon: Any, broker: RedisServer) -> None:
    from daemonkit.ops.metrics import families, sample

    pytest.importorskip("prometheus_client")
    a = run_daemon(chat(broker.url))
    status = a.call(lambda: sample(a.daemon).to_dict())["broker"]
    assert status["url"] == broker.url and status["state"] == "up"
    names = {m.name for m in a.call(lambda: families(sample(a.daemon)))}
    assert {"daemonkit_broker_up", "daemonkit_broker_lost", "daemonkit_broker_sent"} <= names
    plain = Chat()
    assert sample(plain).broker is None and "daemonkit_broker_up" not in {
        m.name for m in families(sample(plain))
    }


# -- Redis goes away ----------------------------------------------------------------------


def test_redis_restarted_delivery_resumes_and_nothing_sent_meanwhile_is_lost(
    run_daemon: Any, broker: RedisServer
) -> None:
    """The docs' promise: lines sent while Redis is away wait in the outbox, then arrive.

    Local members get them at once; the other daemon gets every one of
    them, in order, once Redis is back (``delayed`` on the sender); none
    is lost or dropped. Redis restarts empty (no persistence).
    """
    a = run_daemon(chat(broker.url))
    b = run_daemon(chat(broker.url))
    on_a, on_b = a.connect(WAIT), b.connect(WAIT)
    wait_until(lambda: count_on(a) == 2 and count_on(b) == 2)
    on_a.sendall(b"before\n")
    assert read_lines(on_a, 1) == read_lines(on_b, 1) == [b"before"]

    broker.kill()
    wait_until(lambda: status_of(a)["state"] == status_of(b)["state"] == "down")
    sent = 20
    on_a.sendall(b"".join(b"during:%d\n" % n for n in range(sent)))
    during = [b"during:%d" % n for n in range(sent)]
    assert read_lines(on_a, sent) == during  # local delivery goes on
    assert status_of(a)["outbox"] == sent

    broker.start()
    assert read_lines(on_b, sent) == during  # delivery resumes by itself, in order
    wait_until(lambda: status_of(a)["state"] == status_of(b)["state"] == "up")
    sa, sb = status_of(a), status_of(b)
    assert sa["delayed"] == sent and sa["outbox"] == 0 and sa["dropped"] == 0
    assert sb["lost"] == 0 and sb["duplicates"] == 0 and sb["received"] == 1 + sent
    assert sa["reconnects"] >= 1 and sb["reconnects"] >= 1
    # Presence comes back too (a restarted Redis forgot it): the counts agree again.
    wait_until(lambda: count_on(a) == 2 and count_on(b) == 2)
    on_b.sendall(b"after\n")
    assert read_lines(on_a, 1) == read_lines(on_b, 1) == [b"after"]
    nothing_more(on_a)
    on_a.close()
    on_b.close()


def test_a_stream_made_anew_with_older_ids_is_read_from_its_start(
    run_daemon: Any, broker: RedisServer
) -> None:
    """After a restart the new stream's ids may be below the last one seen: not skipped."""
    a = run_daemon(chat(broker.url))
    b = run_daemon(chat(broker.url))
    on_a, on_b = a.connect(WAIT), b.connect(WAIT)
    wait_until(lambda: count_on(a) == 2 and count_on(b) == 2)
    with broker.client() as client:  # an entry from far in the future: the last id seen
        client.xadd(STREAM, {b"junk": b"1"}, id="99999999999999-0")
    wait_until(lambda: status_of(b)["malformed"] == 1 and status_of(a)["malformed"] == 1)
    broker.kill()
    wait_until(lambda: status_of(a)["state"] == status_of(b)["state"] == "down")
    broker.start()
    wait_until(lambda: status_of(a)["state"] == status_of(b)["state"] == "up")
    on_a.sendall(b"hello again\n")
    assert read_lines(on_b, 1) == read_lines(on_a, 1) == [b"hello again"]
    on_a.close()
    on_b.close()


# -- bad input and faults -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/zero",
        "redis://127.0.0.1:port/0",
        "redis:///0",
        "",
    ],
)
def test_a_malformed_broker_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="broker"):
        Chat(broker=url)


def test_an_unreachable_broker_stops_the_start(run_daemon: Any) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(StartError, match=r"cannot use the broker redis://127\.0\.0\.1"):
        run_daemon(chat(url))


def test_the_command_line_says_why_and_exits_7(tmp_path: Path) -> None:
    path = write_chat(tmp_path)
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = subprocess.run(
        [PYTHON, "-m", "daemonkit", "run", str(path), "--broker", url],
        capture_output=True,
        timeout=WAIT * 3,
        cwd=ROOT,
        env=dict(os.environ, NO_COLOR="1"),
        check=False,
    )
    assert done.returncode == 7, done.stderr
    assert b"cannot use the broker" in done.stderr and b"Traceback" not in done.stderr
    done = subprocess.run(
        [PYTHON, "-m", "daemonkit", "run", str(path), "--broker", "redis://h/zero"],
        capture_output=True,
        timeout=WAIT * 3,
        cwd=ROOT,
        env=dict(os.environ, NO_COLOR="1"),
        check=False,
    )
    assert done.returncode == 4, done.stderr
    assert b"database must be a number" in done.stderr


def test_malformed_entries_are_dropped_counted_and_logged_once(
    run_daemon: Any, broker: RedisServer, warnings_logged: list[logging.LogRecord]
) -> None:
    """Junk on the stream is dropped; numbered messages count gaps and never deliver twice."""
    a = run_daemon(chat(broker.url))
    sock = a.connect(WAIT)
    wait_until(lambda: count_on(a) == 1)

    def record(data: bytes, flags: int = 0, group: bytes = b"room") -> bytes:
        return struct.pack(">HIB", len(group), len(data), flags) + group + data

    def message(seq: int, *records: bytes) -> dict[bytes, bytes]:
        head = {b"v": b"1", b"p": b"other:1:x", b"k": b"m", b"s": b"%d" % seq}
        return {**head, b"d": b"".join(records)}

    junk = [
        {b"hello": b"world"},
        {b"v": b"1", b"p": b"other:1:x", b"k": b"m"},  # no number, no data
        message(1, record(b"x", flags=4)),  # an unknown flag
        message(1, record(b"x")[:-1]),  # cut short
        message(1, record(b"ok"), record(b"x")[:3]),  # the second is cut short: none delivered
        message(1, record(b"\xff", flags=1)),  # "text" that is not UTF-8
        {b"v": b"1", b"p": b"other:1:x", b"k": b"p", b"d": b"[1, 2]"},
        {b"v": b"9", b"p": b"other:1:x", b"k": b"m"},
    ]
    with broker.client() as client:
        for fields in junk:
            client.xadd(STREAM, fields)
        client.xadd(STREAM, message(1, record(b"one")))
        client.xadd(STREAM, message(5, record(b"five"), record(b"six", flags=1)))  # 2-4 lost
        client.xadd(STREAM, message(5, record(b"five again")))  # a retried write
    assert read_lines(sock, 3) == [b"one", b"five", b"six"]
    nothing_more(sock)
    status = status_of(a)
    assert status["malformed"] == len(junk)
    assert (status["lost"], status["duplicates"], status["received"]) == (3, 1, 3)
    malformed = [r for r in warnings_logged if "malformed" in r.getMessage()]
    assert len(malformed) == 1
    sock.close()


def test_a_message_that_cannot_cross_fails_before_anyone_gets_it(
    run_daemon: Any, broker: RedisServer
) -> None:
    a = run_daemon(chat(broker.url))
    sock = a.connect(WAIT)
    wait_until(lambda: count_on(a) == 1)
    room = a.call(lambda: a.daemon.group("room"))
    with pytest.raises(TypeError, match="bytes or str"):
        a.call(room.broadcast, 42)
    assert a.call(room.broadcast, "text") == 1
    assert read_lines(sock, 1) == [b"text"]
    sock.close()


# -- presence ------------------------------------------------------------------------------


def write_chat(tmp_path: Path) -> Path:
    path = tmp_path / "chat.py"
    path.write_text(
        textwrap.dedent(
            """\
            from daemonkit import Daemon, Lines

            class Chat(Daemon):
                listen = "tcp://127.0.0.1:0"
                framing = Lines

                def on_accept(self, conn):
                    self.group("room").add(conn)

                def on_read(self, conn, line):
                    self.group("room").broadcast(line)
            """
        )
    )
    return path


def test_the_members_of_a_killed_process_leave_the_count(
    run_daemon: Any, broker: RedisServer, tmp_path: Path
) -> None:
    """kill -9 of a daemon: its members leave the others' counts after missed heartbeats."""
    port = free_port()
    argv = [PYTHON, "-m", "daemonkit", "run", str(write_chat(tmp_path))]
    argv += ["--listen", f"tcp://127.0.0.1:{port}", "--broker", broker.url]
    argv += ["--broker-heartbeat", str(HEARTBEAT), "--log-level", "warning"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=dict(os.environ, NO_COLOR="1"),
    )
    remote: list[socket.socket] = []
    try:
        wait_for_port(port, proc, WAIT)
        a = run_daemon(chat(broker.url))
        local = a.connect(WAIT)
        remote = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(3)]
        wait_until(lambda: count_on(a) == 4)
        remote[0].sendall(b"hi\n")
        assert read_lines(local, 1) == [b"hi"]
        gone: list[logging.LogRecord] = []

        def keep(record: logging.LogRecord) -> None:
            if "left the cluster" in record.getMessage():
                gone.append(record)

        with daemonkit_log_to(keep):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(WAIT)
            wait_until(lambda: count_on(a) == 1)
        assert len(gone) == 1  # by the expiry, not by a goodbye
        assert f"not heard from for {2 * HEARTBEAT:g}s" in gone[0].getMessage()
        local.close()
    finally:
        for sock in remote:
            sock.close()
        end(proc)


def end(proc: subprocess.Popen[bytes]) -> None:
    """Kill a daemon this test started (by its pid) if it still runs, and reap it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(WAIT)
    if proc.stderr is not None:
        proc.stderr.close()


def test_a_stopping_daemon_leaves_at_once(run_daemon: Any, broker: RedisServer) -> None:
    """A clean stop says goodbye: the others drop its members without waiting for expiry."""
    a = run_daemon(Chat(broker=broker.url))
    b = run_daemon(Chat(broker=broker.url))  # default heartbeat (5 s): expiry would take 10 s
    on_b = b.connect(WAIT)
    wait_until(lambda: count_on(a) == 1)
    on_b.close()
    wait_until(lambda: count_on(a) == 0)
    on_b = b.connect(WAIT)
    wait_until(lambda: count_on(a) == 1)
    on_b.close()
    b.stop()
    # Expiry would take 10 s (two 5 s heartbeats). With the compiled core this
    # failed every time on the stdlib loop: a presence note b wrote before its
    # goodbye reached the stream after it and brought b back (now ignored).
    wait_until(lambda: count_on(a) == 0 and status_of(a)["peers"] == 0, timeout=3.0)


# -- nothing of this without a broker -----------------------------------------------------------


def test_a_daemon_without_a_broker_never_imports_redis() -> None:
    code = textwrap.dedent(
        """\
        import sys
        from daemonkit import Daemon, Lines
        from daemonkit.testing import DaemonRunner

        class Chat(Daemon):
            listen = "tcp://127.0.0.1:0"
            framing = Lines
            def on_accept(self, conn):
                self.group("room").add(conn)
            def on_read(self, conn, line):
                self.group("room").broadcast(line)

        with DaemonRunner(Chat()) as runner:
            sock = runner.connect()
            sock.sendall(b"hi\\n")
            assert sock.recv(100) == b"hi\\n"
            assert runner.call(lambda: runner.daemon.group("room").count()) == 1
            sock.close()
        print("redis" in sys.modules, any(m.startswith("redis") for m in sys.modules))
        """
    )
    done = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, timeout=WAIT * 3, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [b"False", b"False"]
    assert "redis" in sys.modules  # this process did import it: the check above is real


# -- a WebSocket client on one daemon, a line client on the other ----------------------------


class WsChat(Daemon):
    """The same room over WebSocket: each message goes to the room as it came (str or bytes)."""

    listen = "ws://127.0.0.1:0"

    def on_open(self, conn: Any) -> None:
        self.group("room").add(conn)

    def on_message(self, conn: Any, message: str | bytes) -> None:
        self.group("room").broadcast(message)


def test_a_websocket_client_and_a_line_client_share_a_room(
    run_daemon: Any, broker: RedisServer
) -> None:
    from websockets.sync.client import connect

    lines = run_daemon(chat(broker.url))
    ws = run_daemon(WsChat(broker=broker.url, broker_heartbeat=HEARTBEAT))
    line_client = lines.connect(WAIT)
    with connect(f"ws://127.0.0.1:{ws.address.port}/", open_timeout=WAIT) as ws_client:
        wait_until(lambda: count_on(lines) == 2 and count_on(ws) == 2)
        ws_client.send("from the browser")  # text: a str in the room
        line_client.sendall(b"from the terminal\n")  # a line: bytes in the room
        got = [ws_client.recv(timeout=WAIT), ws_client.recv(timeout=WAIT)]
        assert sorted(got, key=str) == sorted(["from the browser", b"from the terminal"], key=str)
        assert sorted(read_lines(line_client, 2)) == [b"from the browser", b"from the terminal"]
    wait_until(lambda: count_on(lines) == 1 and count_on(ws) == 1)
    line_client.close()


# -- membership listings ---------------------------------------------------------------------


class Who(Chat):
    """Chat where each member shows a nick, and the line "who" answers with the room's listing."""

    who_timeout = WAIT

    def on_accept(self, conn: Any) -> None:
        self.group("room").add(conn, meta={"nick": f"n{conn.id}"})

    def on_read(self, conn: Any, line: bytes) -> None:
        if line != b"who":
            return super().on_read(conn, line)

        def answer(found: Members) -> None:
            members = [[m.process, m.id, m.peer, m.meta] for m in found.members]
            conn.send(json.dumps({"members": members, "missing": found.missing}).encode())

        self.group("room").members(answer, timeout=self.who_timeout)
        return None


def who(sock: socket.socket) -> dict[str, Any]:
    """Ask a Who daemon for the room's listing through a client of it."""
    sock.sendall(b"who\n")
    listing: dict[str, Any] = json.loads(read_lines(sock, 1)[0])
    return listing


def sockname(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_two_daemons_list_each_others_members(run_daemon: Any, broker: RedisServer) -> None:
    """Each side's listing has every member: process, connection id, peer and meta."""
    a = run_daemon(Who(broker=broker.url, broker_heartbeat=HEARTBEAT))
    b = run_daemon(Who(broker=broker.url, broker_heartbeat=HEARTBEAT))
    on_a, also_on_a, on_b = a.connect(WAIT), a.connect(WAIT), b.connect(WAIT)
    wait_until(lambda: count_on(a) == 3 and count_on(b) == 3)
    pa, pb = status_of(a)["process"], status_of(b)["process"]
    expected = sorted(
        [
            [pa, sockname(on_a)],
            [pa, sockname(also_on_a)],
            [pb, sockname(on_b)],
        ]
    )
    for sock in (on_a, on_b):
        listing = who(sock)
        assert listing["missing"] == []
        assert sorted([p, peer] for p, _, peer, _ in listing["members"]) == expected
        assert all(meta == {"nick": f"n{cid}"} for _, cid, _, meta in listing["members"])
    assert status_of(a)["listings"] == status_of(b)["listings"] == 0
    for sock in (on_a, also_on_a, on_b):
        sock.close()


def test_a_paused_daemon_is_missing_after_the_deadline(broker: RedisServer, tmp_path: Path) -> None:
    """SIGSTOP a daemon: a listing completes at its deadline and names it as missing."""
    port = free_port()
    argv = [PYTHON, "-m", "daemonkit", "run", str(write_chat(tmp_path))]
    argv += ["--listen", f"tcp://127.0.0.1:{port}"]
    argv += ["--broker", broker.url, "--broker-heartbeat", "5", "--log-level", "warning"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=dict(os.environ)
    )
    daemon = Who(broker=broker.url, broker_heartbeat=HEARTBEAT)
    daemon.who_timeout = 0.3
    remote: socket.socket | None = None
    try:
        wait_for_port(port, proc, WAIT)
        with DaemonRunner(daemon) as a:
            local = a.connect(WAIT)
            remote = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            wait_until(lambda: count_on(a) == 2)
            [other] = runner_counts(a).keys() - {status_of(a)["process"]}
            listing = who(local)
            assert listing["missing"] == [] and len(listing["members"]) == 2
            assert [m[0] for m in listing["members"]] == [status_of(a)["process"], other]
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                listing = who(local)
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            assert listing["missing"] == [other]
            assert [m[2] for m in listing["members"]] == [sockname(local)]
            local.close()
    finally:
        if remote is not None:
            remote.close()
        end(proc)


def test_a_silent_process_is_missing_and_malformed_answers_are_dropped(
    broker: RedisServer,
) -> None:
    """Two processes written by hand: one never answers, the other answers badly, then well."""
    daemon = Who(broker=broker.url, broker_heartbeat=HEARTBEAT)
    got: list[Members] = []
    with DaemonRunner(daemon) as a, broker.client() as client:
        local = a.connect(WAIT)
        me = status_of(a)["process"]

        def note(proc: str, entries: dict[str, Any]) -> None:
            fields = {b"v": b"1", b"p": proc.encode(), b"k": b"p", b"f": b"1"}
            client.xadd(STREAM, {**fields, b"d": json.dumps(entries).encode()})

        note("ghost:1:a", {"room": 2})
        note("fake:2:b", {"room": 1})
        wait_until(lambda: count_on(a) == 4)
        a.call(lambda: daemon.group("room").members(got.append, timeout=0.5))
        questions: list[Any] = []
        wait_until(
            lambda: (
                questions.extend(
                    f
                    for _, f in client.xrange(STREAM)
                    if f[b"k"] == b"q" and f[b"p"] == me.encode()
                )
                or questions
            )
        )
        [question] = questions
        assert question[b"g"] == b"room" and question[b"n"] == b"1000"

        def answer(data: bytes, to: str = me, key: bytes = question[b"i"]) -> None:
            fields = {b"v": b"1", b"p": b"fake:2:b", b"k": b"a", b"t": to.encode(), b"i": key}
            client.xadd(STREAM, {**fields, b"d": data})

        bad = [
            b"not json",
            b'{"m": {}, "n": 0}',  # members not a list
            b'{"m": [[true, "1.2.3.4:5", null]], "n": 1}',  # an id that is a bool
            b'{"m": [[1, "1.2.3.4:5", {"bio": "%s"}]], "n": 1}' % (b"x" * 300),  # meta too big
            b'{"m": [[1, "1.2.3.4:5", null]], "n": 0}',  # fewer in total than listed
            b'{"m": [[1, "1.2.3.4:5"]], "n": 1}',  # no meta
        ]
        for data in bad:
            answer(data)
        good = b'{"m": [[7, "10.0.0.9:5555", {"nick": "f"}]], "n": 1}'
        answer(good, to="someone:3:c")  # to another asker: not ours, not malformed
        answer(good, key=b"0123456789abcdef")  # to no listing of ours: ignored
        answer(good)
        answer(b'{"m": [], "n": 0}')  # a second answer: the first counts
        wait_until(lambda: bool(got))
    [found] = got
    assert found.missing == ("ghost:1:a",) and found.malformed == len(bad)
    assert not found.complete and not found.truncated
    assert [(m.process, m.peer) for m in found.members] == [
        (me, sockname(local)),
        ("fake:2:b", "10.0.0.9:5555"),
    ]
    assert found.members[1] == Member("fake:2:b", 7, "10.0.0.9:5555", {"nick": "f"})
    local.close()


def test_a_listing_while_redis_is_away_completes_and_its_question_is_not_sent_late(
    broker: RedisServer,
) -> None:
    """The asker's own link cut: the listing completes at its deadline, the others missing."""
    a_daemon, b_daemon = (Who(broker=broker.url, broker_heartbeat=HEARTBEAT) for _ in range(2))
    got: list[Members] = []
    with DaemonRunner(a_daemon) as a, DaemonRunner(b_daemon) as b:
        on_a, on_b = a.connect(WAIT), b.connect(WAIT)
        wait_until(lambda: count_on(a) == 2 and count_on(b) == 2)
        pb = status_of(b)["process"]
        broker.kill()
        wait_until(lambda: status_of(a)["state"] == "down")
        a.call(lambda: a_daemon.group("room").members(got.append, timeout=0.3))
        wait_until(lambda: bool(got))
        assert got[0].missing == (pb,) and [m.peer for m in got[0].members] == [sockname(on_a)]
        broker.start()
        wait_until(lambda: status_of(a)["state"] == status_of(b)["state"] == "up")
        wait_until(lambda: count_on(a) == 2)
        listing = who(on_a)  # works again, and the stale question never reached Redis
        assert listing["missing"] == [] and len(listing["members"]) == 2
        with broker.client() as client:
            questions = [f for _, f in client.xrange(STREAM) if f[b"k"] == b"q"]
        assert len(questions) == 1
        # A stopping daemon's broker asks no one: the others are missing at once.
        link = a_daemon.broker_link
        assert link is not None
        got.clear()
        a.call(lambda: (link.close(), a_daemon.group("room").members(got.append)))
        wait_until(lambda: bool(got))
        assert got[0].missing == (pb,) and len(got[0].members) == 1
        on_a.close()
        on_b.close()
