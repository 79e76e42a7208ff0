"""examples/jobqueue: the beanstalkd-protocol job queue, its framer, store and log.

* The framer (sans-IO): every case whole, one byte at a time, and with
  trailing data.
* The server in process (``DaemonRunner``, both backends) on a
  ``FakeClock``: delays, TTR expiry, DEADLINE_SOON, reserve-with-timeout and
  paused tubes without sleeping; malformed input over a raw socket; clients
  that leave while holding jobs or while waiting.
* Real processes: 10,000 reserves waiting at once, and ``kill -9`` of a
  server logging with fsync "always": every acknowledged job comes back.
* The write-ahead log: a damaged tail is dropped with a warning; compaction
  keeps exactly the live jobs.

(``test_beanstalk_compat.py`` compares the replies with real beanstalkd's.)
"""

from __future__ import annotations

import logging
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemonkit.testing import FakeClock
from tests.helpers import PYTHON, ROOT, free_port, wait_for_port

sys.path.insert(0, str(ROOT / "examples"))

from jobqueue import wal as wal_module
from jobqueue.protocol import ERROR, CommandFramer
from jobqueue.server import JobQueue
from jobqueue.wal import Wal, bury_record, delete_record, put_record

WAIT = 10.0  # real seconds any one wait in these tests may take
PROCESS_WAIT = 60.0  # a whole server process: start, work, stop


# -- the framer ---------------------------------------------------------------

BAD = (ERROR, b"BAD_FORMAT\r\n", None)
UNKNOWN = (ERROR, b"UNKNOWN_COMMAND\r\n", None)

FRAMER_CASES = [
    (b"put 1 2 3 5\r\nhello\r\n", [("put", 1, 2, 3, b"hello\r\n")]),
    (b"put 0 0 1 0\r\n\r\n", [("put", 0, 0, 1, b"\r\n")]),
    (b"put  4294967295 0 1 1\r\nx\r\n", [("put", 4294967295, 0, 1, b"x\r\n")]),
    (b"put 4294967296 0 1 1\r\n", [BAD]),
    (b"put -1 0 1 1\r\n", [BAD]),
    (b"put 1 2 3\r\n", [BAD]),
    (b"put 0 0 1 1 \r\nx\r\n", [(ERROR, b"BAD_FORMAT\r\n", "put"), UNKNOWN]),
    (b"put 0 0 1 3\r\nabcde\r\n", [(ERROR, b"EXPECTED_CRLF\r\n", "put"), UNKNOWN]),
    (
        b"put 0 0 1 11\r\n" + b"y" * 11 + b"\r\nuse a\r\n",
        [(ERROR, b"JOB_TOO_BIG\r\n", "put"), ("use", b"a")],
    ),
    (b"reserve\r\nreserve-with-timeout 5\r\n", [("reserve",), ("reserve-with-timeout", 5)]),
    (b"reserve-with-timeout -1\r\n", [("reserve-with-timeout", -1)]),
    (b"reserve-with-timeout abc\r\n", [("reserve-with-timeout", 0)]),
    (b"reservex\r\nreserve-with-timeout\r\n", [BAD, BAD]),
    (
        b"delete 7\r\ndelete  8\r\ndelete 9 \r\ndelete +1\r\n",
        [("delete", 7), ("delete", 8), BAD, BAD],
    ),
    (b"delete 18446744073709551616\r\n", [BAD]),
    (b"release 1 2 3\r\nrelease 1 2\r\n", [("release", 1, 2, 3), BAD]),
    (
        b"bury 1 2\r\ntouch 3\r\nkick-job 4\r\npeek 5\r\nstats-job 6\r\n",
        [("bury", 1, 2), ("touch", 3), ("kick-job", 4), ("peek", 5), ("stats-job", 6)],
    ),
    (
        b"kick 5abc\r\nkick \r\nkick -1\r\nkick\r\n",
        [("kick", 5), BAD, ("kick", 4294967295), UNKNOWN],
    ),
    (
        b"use foo\r\nwatch a-b_c\r\nignore x\r\nstats-tube y\r\n",
        [("use", b"foo"), ("watch", b"a-b_c"), ("ignore", b"x"), ("stats-tube", b"y")],
    ),
    (b"use -a\r\nuse  a\r\nuse a*b\r\nuse " + b"n" * 201 + b"\r\n", [BAD, BAD, BAD, BAD]),
    (b"use " + b"n" * 200 + b"\r\n", [("use", b"n" * 200)]),
    (
        b"pause-tube foo 10\r\npause-tube -x 1\r\npause-tube foo\r\n",
        [("pause-tube", b"foo", 10), (ERROR, b"BAD_FORMAT\r\n", "pause-tube"), BAD],
    ),
    (
        b"peek-ready\r\npeek-delayed\r\npeek-buried\r\npeek-readyx\r\n",
        [("peek-ready",), ("peek-delayed",), ("peek-buried",), BAD],
    ),
    (
        b"stats\r\nlist-tubes\r\nlist-tube-used\r\nlist-tubes-watched\r\nquit\r\n",
        [("stats",), ("list-tubes",), ("list-tube-used",), ("list-tubes-watched",), ("quit",)],
    ),
    (b"\r\nfoo\r\nuse\r\n", [UNKNOWN, UNKNOWN, UNKNOWN]),
    (b"use a\x00b\r\n", [BAD]),
    # The line limit: 224 bytes with the CRLF; a longer line is skipped to its end.
    (b"x" * 222 + b"\r\n", [UNKNOWN]),
    (b"x" * 300 + b"\r\nuse b\r\n", [BAD, ("use", b"b")]),
    # Only the first \r may end a line (beanstalkd's scan_line_end): this one runs on.
    (b"x" * 223 + b"\r\nuse q\r\nuse r\r\n", [BAD, ("use", b"r")]),
]


@pytest.mark.parametrize(("data", "expected"), FRAMER_CASES)
def test_the_framer_whole_byte_by_byte_and_with_trailing_data(
    data: bytes, expected: list[Any]
) -> None:
    assert CommandFramer(10).feed(data) == expected
    framer = CommandFramer(10)
    frames: list[Any] = []
    for i in range(len(data)):
        frames += framer.feed(data[i : i + 1])
    assert frames == expected
    framer = CommandFramer(10)
    assert framer.feed(data + b"stats\r\nput 0 0 1 2\r\nx") == [*expected, ("stats",)]
    assert framer.buffered == 1  # the start of the body waits for the rest
    assert framer.feed(b"y\r\n") == [("put", 0, 0, 1, b"xy\r\n")]


# Pieces of commands, good and bad, that a stream is built from.
_PIECES = [
    b"reserve\r\n", b"delete 7\r\n", b"put 1 0 60 3\r\nabc\r\n", b"put 0 0 1 2\r\n",
    b"use tube-1\r\n", b"stats\r\n", b"x" * 230 + b"\r\n", b"\r\n", b"\n", b"\r",
    b"put 0 0 1 20\r\n" + b"b" * 22, b"bury 3 4\r\n", b"kick 2\r\n", b"\0\r\n",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(_PIECES), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_split_of_a_stream_gives_the_same_frames(pieces: list[bytes], cuts: list[int]) -> None:
    # The single-line fast path and the general loop must agree: the stream
    # fed whole, cut anywhere, and one read per line give the same frames.
    stream = b"".join(pieces)
    whole = CommandFramer(10).feed(stream)
    framer = CommandFramer(10)
    frames: list[Any] = []
    start = 0
    for cut in sorted({c for c in cuts if c < len(stream)}):
        frames += framer.feed(stream[start:cut])
        start = cut
    frames += framer.feed(stream[start:])
    assert frames == whole
    framer = CommandFramer(10)
    assert [f for piece in pieces for f in framer.feed(piece)] == whole


def test_a_big_body_arriving_in_pieces_is_buffered_once() -> None:
    framer = CommandFramer()
    body = b"z" * 65535
    assert framer.feed(b"put 0 0 1 65535\r\n") == []
    for i in range(0, len(body), 1000):
        assert framer.feed(body[i : i + 1000]) == []
    assert framer.feed(b"\r\n") == [("put", 0, 0, 1, body + b"\r\n")]
    assert framer.buffered == 0


# -- the server in process ------------------------------------------------------


class Client:
    """A blocking raw-socket client: send a command, read one reply."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; had {self.data!r}")
            self.data += chunk
        line, _, self.data = self.data.partition(b"\r\n")
        return line

    def body(self, size: int) -> bytes:
        while len(self.data) < size + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in a body")
            self.data += chunk
        body, self.data = self.data[:size], self.data[size + 2 :]
        return body

    def ask(self, command: bytes) -> bytes:
        self.send(command + b"\r\n")
        return self.reply()

    def reply(self) -> bytes:
        """One reply: its line, and for a job or YAML reply the body after a newline."""
        line = self.line()
        word, *rest = line.split()
        if word in (b"RESERVED", b"FOUND"):
            return line + b"\n" + self.body(int(rest[1]))
        if word == b"OK":
            return line + b"\n" + self.body(int(rest[0]))
        return line

    def yaml(self, command: bytes) -> dict[str, str]:
        head, _, body = self.ask(command).partition(b"\n")
        assert head.startswith(b"OK "), head
        return dict(line.split(": ", 1) for line in body.decode().splitlines()[1:] if ": " in line)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def queue(run_daemon: Any) -> Iterator[Any]:
    """Start a JobQueue (max_job_size 10) on a FakeClock; yields a ``connect()`` factory."""
    clock = FakeClock(1000.0)
    daemon = JobQueue(listen="tcp://127.0.0.1:0", max_job_size=10, wal=None)
    runner = run_daemon(daemon, clock=clock)
    clients: list[Client] = []

    def connect() -> Client:
        client = Client(runner.connect(WAIT))
        clients.append(client)
        return client

    connect.runner = runner  # type: ignore[attr-defined]
    connect.daemon = daemon  # type: ignore[attr-defined]
    yield connect
    for client in clients:
        client.close()


def test_put_reserve_delete(queue: Any) -> None:
    c = queue()
    assert c.ask(b"put 5 0 60 5\r\nhello") == b"INSERTED 1"
    assert c.ask(b"put 1 0 60 3\r\nabc") == b"INSERTED 2"
    assert c.ask(b"reserve") == b"RESERVED 2 3\nabc"  # priority first
    assert c.ask(b"delete 2") == b"DELETED"
    assert c.ask(b"delete 2") == b"NOT_FOUND"
    assert c.ask(b"reserve-with-timeout 0") == b"RESERVED 1 5\nhello"
    assert c.ask(b"release 1 7 0") == b"RELEASED"
    assert c.yaml(b"stats-job 1")["pri"] == "7"


def test_a_delayed_job_becomes_ready_when_the_clock_says(queue: Any) -> None:
    c = queue()
    assert c.ask(b"put 0 30 60 1\r\nd") == b"INSERTED 1"
    assert c.ask(b"peek-delayed") == b"FOUND 1 1\nd"
    assert c.ask(b"reserve-with-timeout 0") == b"TIMED_OUT"
    assert c.yaml(b"stats-job 1")["time-left"] == "30"
    queue.runner.advance(29.9)
    assert c.yaml(b"stats-job 1")["state"] == "delayed"
    queue.runner.advance(0.2)
    assert c.yaml(b"stats-job 1")["state"] == "ready"
    assert c.ask(b"reserve") == b"RESERVED 1 1\nd"


def test_ttr_expiry_returns_the_job_to_ready(queue: Any) -> None:
    c = queue()
    c.ask(b"put 0 0 5 1\r\nt")
    assert c.ask(b"reserve") == b"RESERVED 1 1\nt"
    queue.runner.advance(3)
    assert c.ask(b"touch 1") == b"TOUCHED"  # 5 s again from now
    queue.runner.advance(4.9)
    assert c.yaml(b"stats-job 1")["state"] == "reserved"
    queue.runner.advance(0.2)
    stats = c.yaml(b"stats-job 1")
    assert (stats["state"], stats["timeouts"], stats["reserves"]) == ("ready", "1", "1")
    assert c.yaml(b"stats")["job-timeouts"] == "1"
    assert c.ask(b"delete 1") == b"DELETED"  # ready now: anyone may delete it


def test_deadline_soon_while_waiting_and_at_once(queue: Any) -> None:
    c = queue()
    c.ask(b"put 0 0 3 1\r\nq")
    assert c.ask(b"reserve") == b"RESERVED 1 1\nq"
    c.send(b"reserve\r\n")  # nothing ready: waits, until a second before the TTR ends
    queue.runner.advance(1.9)
    queue.runner.wait_for(lambda: queue.daemon.store.stats["waiting"] == 1)
    queue.runner.advance(0.2)
    assert c.reply() == b"DEADLINE_SOON"
    assert c.ask(b"reserve") == b"DEADLINE_SOON"  # within the margin: at once
    assert c.ask(b"stats").startswith(b"OK ")  # the connection goes on
    queue.runner.advance(1.0)
    assert c.ask(b"reserve-with-timeout 0") == b"RESERVED 1 1\nq"  # expired, ready, again


def test_reserve_with_timeout(queue: Any) -> None:
    c = queue()
    assert c.ask(b"reserve-with-timeout 0") == b"TIMED_OUT"
    c.send(b"reserve-with-timeout 5\r\nlist-tube-used\r\n")  # the second waits its turn
    queue.runner.wait_for(lambda: queue.daemon.store.stats["waiting"] == 1)
    queue.runner.advance(4.9)
    assert queue.runner.call(lambda: queue.daemon.store.stats["waiting"]) == 1
    queue.runner.advance(0.2)
    assert c.reply() == b"TIMED_OUT"
    assert c.reply() == b"USING default"


def test_a_waiting_reserve_gets_the_next_put(queue: Any) -> None:
    worker, producer = queue(), queue()
    worker.ask(b"watch jobs")
    worker.send(b"reserve\r\n")
    queue.runner.wait_for(lambda: queue.daemon.store.stats["waiting"] == 1)
    producer.ask(b"use jobs")
    assert producer.ask(b"put 0 0 60 2\r\nhi") == b"INSERTED 1"
    assert worker.reply() == b"RESERVED 1 2\nhi"


def test_a_paused_tube_gives_no_job_until_the_pause_ends(queue: Any) -> None:
    c = queue()
    c.ask(b"put 0 0 60 1\r\np")
    assert c.ask(b"pause-tube default 10") == b"PAUSED"
    assert c.ask(b"pause-tube nope 10") == b"NOT_FOUND"
    assert c.ask(b"reserve-with-timeout 0") == b"TIMED_OUT"
    c.send(b"reserve\r\n")
    queue.runner.wait_for(lambda: queue.daemon.store.stats["waiting"] == 1)
    queue.runner.advance(10.1)
    assert c.reply() == b"RESERVED 1 1\np"


def test_bury_kick_and_peek(queue: Any) -> None:
    c = queue()
    for i in range(3):
        c.ask(b"put %d 0 60 1\r\n%d" % (i, i))
    for i in (1, 2):
        assert c.ask(b"reserve").startswith(b"RESERVED %d" % i)
        assert c.ask(b"bury %d 9" % i) == b"BURIED"
    assert c.ask(b"peek-buried") == b"FOUND 1 1\n0"
    assert c.ask(b"kick-job 2") == b"KICKED"
    assert c.ask(b"kick-job 2") == b"NOT_FOUND"
    assert c.ask(b"kick 10") == b"KICKED 1"
    assert c.ask(b"peek-buried") == b"NOT_FOUND"
    assert c.yaml(b"stats-tube default")["current-jobs-ready"] == "3"


def test_tubes_come_and_go(queue: Any) -> None:
    c = queue()
    assert c.ask(b"use a") == b"USING a"
    assert c.ask(b"watch b") == b"WATCHING 2"
    assert c.ask(b"ignore default") == b"WATCHING 1"
    assert c.ask(b"ignore b") == b"NOT_IGNORED"
    assert c.ask(b"list-tubes") == b"OK 22\n---\n- default\n- a\n- b\n"
    assert c.ask(b"use default") == b"USING default"  # nothing refers to "a" any more
    assert c.ask(b"list-tubes") == b"OK 18\n---\n- default\n- b\n"
    assert c.ask(b"stats-tube a") == b"NOT_FOUND"


MALFORMED = [
    (b"put 0 0 10 11\r\n" + b"x" * 11 + b"\r\n", b"JOB_TOO_BIG"),
    (b"put 0 0 10 3\r\nabcde", b"EXPECTED_CRLF"),  # 3 bytes, then "de", not CRLF
    (b"put 0 0 10\r\n", b"BAD_FORMAT"),
    (b"put 0 x 10 3\r\n", b"BAD_FORMAT"),
    (b"put 99999999999 0 10 3\r\n", b"BAD_FORMAT"),
    (b"delete abc\r\n", b"BAD_FORMAT"),
    (b"release 1\r\n", b"BAD_FORMAT"),
    (b"use " + b"t" * 201 + b"\r\n", b"BAD_FORMAT"),
    (b"watch -dash\r\n", b"BAD_FORMAT"),
    (b"q" * 1000 + b"\r\n", b"BAD_FORMAT"),
    (b"frobnicate\r\n", b"UNKNOWN_COMMAND"),
    (b"\r\n", b"UNKNOWN_COMMAND"),
]


@pytest.mark.parametrize(("data", "reply"), MALFORMED)
def test_malformed_input_gets_its_error_and_the_connection_goes_on(
    queue: Any, data: bytes, reply: bytes
) -> None:
    c = queue()
    c.send(data)
    assert c.line() == reply
    assert c.ask(b"list-tube-used") == b"USING default"


def test_a_client_that_leaves_gives_its_reserved_jobs_back(queue: Any) -> None:
    worker, other = queue(), queue()
    worker.ask(b"put 0 0 60 1\r\na")
    worker.ask(b"put 0 0 60 1\r\nb")
    worker.ask(b"reserve")
    worker.ask(b"reserve")
    assert other.ask(b"delete 1") == b"NOT_FOUND"  # reserved by someone else
    assert other.yaml(b"stats")["current-jobs-reserved"] == "2"
    worker.close()
    queue.runner.wait_for(lambda: queue.daemon.store.stats["reserved"] == 0)
    assert other.yaml(b"stats-job 1")["state"] == "ready"
    assert other.ask(b"delete 1") == b"DELETED"


def test_a_waiting_client_that_leaves_is_forgotten(queue: Any) -> None:
    gone, producer = queue(), queue()
    gone.send(b"reserve\r\n")
    queue.runner.wait_for(lambda: queue.daemon.store.stats["waiting"] == 1)
    gone.close()
    queue.runner.wait_for(lambda: queue.daemon.store.stats["waiting"] == 0)
    assert producer.ask(b"put 0 0 60 1\r\nz") == b"INSERTED 1"
    assert producer.yaml(b"stats-job 1")["state"] == "ready"
    assert producer.yaml(b"stats")["current-waiting"] == "0"


def test_quit_closes(queue: Any) -> None:
    c = queue()
    c.send(b"quit\r\nlist-tubes\r\n")
    assert c.sock.recv(100) == b""


# -- real processes ---------------------------------------------------------------


def _start(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    environ = dict(os.environ, NO_COLOR="1", **env)
    environ.pop("PYTHONASYNCIODEBUG", None)  # many times slower; replies are what is tested
    log = (tmp_path / f"server-{port}.log").open("ab")
    # The documented command: the loader imports server.py as part of its package.
    proc = subprocess.Popen(
        [PYTHON, "-m", "daemonkit", "examples/jobqueue/server.py",
         "--listen", f"tcp://127.0.0.1:{port}", *args],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=environ, cwd=ROOT,
    )  # fmt: skip
    log.close()
    try:
        wait_for_port(port, proc, timeout=PROCESS_WAIT)
    except BaseException:
        proc.kill()
        proc.wait(WAIT)
        raise
    return proc, port


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(WAIT)


def _dial(port: int) -> Client:
    return Client(socket.create_connection(("127.0.0.1", port), timeout=WAIT))


WAITERS = 10_000


@pytest.fixture
def open_files() -> Iterator[int]:
    """Raise this process's open-file limit for WAITERS sockets; put it back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = WAITERS + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the open-file limit ({hard}) is below the {need} this test needs")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    try:
        yield need
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# One backend (the default): the waiters are the store's and the server's logic,
# the same on both, and at about 9 s a run it is the module's slowest test.
@pytest.mark.slow
def test_ten_thousand_reserves_wait_at_once(tmp_path: Path, open_files: int) -> None:
    proc, port = _start(tmp_path, "--max-connections", str(open_files))
    waiters: list[socket.socket] = []
    try:
        for _ in range(WAITERS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            sock.sendall(b"reserve\r\n")
            waiters.append(sock)
        producer = _dial(port)
        deadline = time.monotonic() + PROCESS_WAIT
        while producer.yaml(b"stats")["current-waiting"] != str(WAITERS):
            assert time.monotonic() < deadline, "the reserves did not all wait"
            time.sleep(0.05)
        producer.send(b"".join(b"put 0 0 60 5\r\n%05d\r\n" % i for i in range(WAITERS)))
        for i in range(WAITERS):
            assert producer.line() == b"INSERTED %d" % (i + 1)
        # Every waiter gets exactly one job, and every job goes to one waiter.
        got: dict[socket.socket, bytes] = {}
        with selectors.DefaultSelector() as sel:
            for sock in waiters:
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ)
            deadline = time.monotonic() + PROCESS_WAIT
            while len(got) < WAITERS and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1.0):
                    sock = key.fileobj  # type: ignore[assignment]
                    data = got.get(sock, b"") + sock.recv(100)  # type: ignore[attr-defined]
                    got[sock] = data  # type: ignore[index]
                    if data.count(b"\r\n") >= 2:
                        sel.unregister(sock)
        bodies = sorted(data.split(b"\r\n")[1] for data in got.values())
        assert bodies == [b"%05d" % i for i in range(WAITERS)]
        assert producer.yaml(b"stats")["current-jobs-reserved"] == str(WAITERS)
        producer.close()
    finally:
        for sock in waiters:
            sock.close()
        _stop(proc)


@pytest.mark.slow
def test_no_acknowledged_job_is_lost_to_kill_9(tmp_path: Path) -> None:
    wal_dir = tmp_path / "wal"
    env = {"JOBQUEUE_WAL": str(wal_dir), "JOBQUEUE_FSYNC": "always"}
    proc, port = _start(tmp_path, **env)
    acknowledged: dict[int, tuple[int, bytes, str]] = {}
    c = _dial(port)
    try:
        c.ask(b"use durable")
        # Pipelined, so that many puts share a loop turn (and an fsync).
        puts = [(i % 7, b"job-%d" % i) for i in range(300)]
        c.send(b"".join(b"put %d 0 60 %d\r\n%s\r\n" % (p, len(b), b) for p, b in puts))
        for pri, body in puts:
            reply = c.line()
            assert reply.startswith(b"INSERTED "), reply
            acknowledged[int(reply.split()[1])] = (pri, body, "ready")
        for job_id in list(acknowledged)[:20]:  # some deleted
            assert c.ask(b"delete %d" % job_id) == b"DELETED"
            del acknowledged[job_id]
        c.ask(b"watch durable")
        held = c.ask(b"reserve").split()[1]  # some reserved, some buried
        buried = c.ask(b"reserve").split()[1]
        assert c.ask(b"bury %s 3" % buried) == b"BURIED"
        pri, body, _ = acknowledged[int(buried)]
        acknowledged[int(buried)] = (3, body, "buried")
        assert held  # reserved when killed: ready after the restart
    finally:
        _stop(proc, signal.SIGKILL)
        c.close()
    proc, port = _start(tmp_path, **env)
    c = _dial(port)
    try:
        for job_id, (pri, body, state) in acknowledged.items():
            assert c.ask(b"peek %d" % job_id) == b"FOUND %d %d\n%s" % (job_id, len(body), body)
            stats = c.yaml(b"stats-job %d" % job_id)
            assert (stats["pri"], stats["state"], stats["tube"]) == (str(pri), state, "durable")
        assert c.ask(b"peek %d" % (min(acknowledged) - 1)) == b"NOT_FOUND"  # deleted
        assert c.yaml(b"stats")["current-jobs-ready"] == str(len(acknowledged) - 1)
        c.ask(b"use durable")
        assert c.ask(b"put 0 0 60 1\r\nn") == b"INSERTED %d" % (max(acknowledged) + 1)
    finally:
        c.close()
        _stop(proc)


# -- the write-ahead log ----------------------------------------------------------


def test_a_damaged_tail_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = Wal(tmp_path)
    assert wal.open() == []
    for i in range(1, 4):
        wal.append(put_record(i, b"t", i, 0, 60, b"body%d\r\n" % i), job_id=i, live=True)
    wal.append(bury_record(2, 9))
    wal.write()
    wal.close()
    good = (tmp_path / "jobqueue.wal").stat().st_size
    with (tmp_path / "jobqueue.wal").open("ab") as f:
        f.write(delete_record(1)[:-3])  # a write cut short by kill -9
    with caplog.at_level(logging.WARNING, logger="daemonkit.jobqueue.wal"):
        jobs = Wal(tmp_path).open()
    assert [(j.id, j.state, j.pri) for j in jobs] == [
        (1, "ready", 1),
        (3, "ready", 3),
        (2, "buried", 9),
    ]
    assert "damaged tail" in caplog.text
    assert (tmp_path / "jobqueue.wal").stat().st_size == good


def test_garbage_in_the_log_ends_the_replay_without_a_crash(tmp_path: Path) -> None:
    (tmp_path / "jobqueue.wal").write_bytes(put_record(1, b"t", 0, 0, 60, b"x\r\n") + b"\xff" * 50)
    jobs = Wal(tmp_path).open()
    assert [j.body for j in jobs] == [b"x\r\n"]


def test_a_server_replays_a_damaged_log(run_daemon: Any, tmp_path: Path) -> None:
    path = tmp_path / "jobqueue.wal"
    path.write_bytes(
        put_record(4, b"default", 1, 0, 60, b"kept\r\n")
        + put_record(5, b"default", 1, 0, 60, b"half\r\n")[:-1]
    )
    runner = run_daemon(JobQueue(listen="tcp://127.0.0.1:0", wal=tmp_path, fsync="always"))
    c = Client(runner.connect(WAIT))
    assert c.ask(b"peek 4") == b"FOUND 4 4\nkept"
    assert c.ask(b"peek 5") == b"NOT_FOUND"
    assert c.ask(b"put 0 0 60 3\r\nnew") == b"INSERTED 5"
    c.close()


def test_interval_fsyncs_run_off_the_loop_and_cover_what_was_acknowledged(
    run_daemon: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With JOBQUEUE_FSYNC=N ms the loop never waits for the disk: the fsync is a worker's."""
    import threading

    synced_in: list[str] = []
    real_sync = Wal.sync

    def sync(self: Wal) -> None:
        synced_in.append(threading.current_thread().name)
        real_sync(self)

    monkeypatch.setattr(Wal, "sync", sync)
    runner = run_daemon(JobQueue(listen="tcp://127.0.0.1:0", wal=tmp_path, fsync=5))
    c = Client(runner.connect(WAIT))
    for i in range(20):
        assert c.ask(b"put 0 0 60 2\r\nj%d" % (i % 10)).startswith(b"INSERTED")
    deadline = time.monotonic() + WAIT
    while not synced_in:
        assert time.monotonic() < deadline, "no fsync within the interval"
        time.sleep(0.01)
    c.close()
    runner.stop()
    loop_thread = "daemonkit-runner"  # DaemonRunner's loop thread
    assert synced_in and loop_thread not in synced_in[:-1]  # the last: the close's own
    assert len(Wal(tmp_path).open()) == 20


def test_with_fsync_always_a_put_waits_for_the_disk_and_nobody_else_does(
    run_daemon: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group's fsync runs in a worker: other clients are served meanwhile."""
    import threading

    disk = threading.Event()  # the test decides when the disk is done
    real_sync = Wal.sync

    def slow_sync(self: Wal) -> None:
        disk.wait(WAIT)
        real_sync(self)

    monkeypatch.setattr(Wal, "sync", slow_sync)
    runner = run_daemon(JobQueue(listen="tcp://127.0.0.1:0", wal=tmp_path, fsync="always"))
    writer = Client(runner.connect(WAIT))
    other = Client(runner.connect(WAIT))
    try:
        writer.send(b"put 0 0 60 2\r\nhi\r\n")
        assert other.ask(b"list-tubes").startswith(b"OK ")  # the loop is not waiting
        assert other.ask(b"peek-ready").startswith(b"FOUND")  # the job is in, not acknowledged
        with selectors.DefaultSelector() as sel:
            sel.register(writer.sock, selectors.EVENT_READ)
            assert sel.select(0) == [], "INSERTED came before the fsync"
        disk.set()
        assert writer.reply() == b"INSERTED 1"
    finally:
        disk.set()
        writer.close()
        other.close()


def test_a_failed_fsync_acknowledges_nothing_and_the_queue_serves_on(
    run_daemon: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = [OSError(5, "Input/output error")]  # the first fsync fails, then the disk is fine
    real_sync = Wal.sync

    def sync(self: Wal) -> None:
        if failures:
            raise failures.pop()
        real_sync(self)

    monkeypatch.setattr(Wal, "sync", sync)
    daemon = JobQueue(listen="tcp://127.0.0.1:0", wal=tmp_path, fsync="always")
    runner = run_daemon(daemon)
    writer = Client(runner.connect(WAIT))
    writer.send(b"put 0 0 60 2\r\nhi\r\n")
    with pytest.raises(ConnectionError):
        writer.reply()  # closed, not INSERTED
    writer.close()
    again = Client(runner.connect(WAIT))
    assert again.ask(b"put 0 0 60 2\r\nok") == b"INSERTED 2"
    again.close()
    assert runner.call(lambda: daemon.stats["errors"]) == 1


def test_the_log_is_compacted_to_the_live_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_module, "COMPACT_MIN_BYTES", 4096)
    wal = Wal(tmp_path)
    wal.open()
    live = {}
    for i in range(1, 401):
        record = put_record(i, b"t", 0, 0, 60, b"%d\r\n" % i)
        wal.append(record, job_id=i, live=True)
        if i % 10:
            wal.append(delete_record(i), job_id=i, live=False)
        else:
            live[i] = record
        wal.write()
        if wal.should_compact():
            wal.compact(iter(live.values()))
    assert wal.size < 4 * 4096
    wal.close()
    assert [j.id for j in Wal(tmp_path).open()] == sorted(live)
