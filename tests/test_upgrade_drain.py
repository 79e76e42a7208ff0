"""Upgrades keep long-lived clients: the old process drains its connections.

Real processes first (200 line clients through a SIGUSR2 upgrade, the drain
deadline, SIGTERM while draining, ``upgrade_drain = 0``), then the daemon's
draining stop in-process on a FakeClock (timers, links, WebSocket 1001, the
log lines, the settings).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from daemonkit import CloseReason, ConfigError, Connection, Daemon, Endpoint, FakeClock, Lines
from daemonkit.cli.config import SETTINGS, SourceError, gather
from daemonkit.cli.ctl import format_status
from daemonkit.daemon import DEFAULT_UPGRADE_DRAIN, DRAIN_REPORT_INTERVAL
from daemonkit.ops.metrics import sample
from daemonkit.ops.upgrade import UpgradeError
from daemonkit.testing import DaemonRunner
from tests.helpers import PYTHON, ROOT, daemonkit_log_to, free_port, recv_until, wait_for_port

# A Lines daemon that answers "PID LINE", and "PID TICKS" to "ticks": the
# count of a timer firing every TICK seconds (timers run while draining).
DAEMON = """
import os
from daemonkit import Daemon, Lines


class Echo(Daemon):
    framing = Lines

    def on_start(self):
        self.ticks = 0
        self.every({tick}, self.tick)

    def tick(self):
        self.ticks += 1

    def on_read(self, conn, line):
        if line == b"ticks":
            conn.send(b"%d %d" % (os.getpid(), self.ticks))
        else:
            conn.send(b"%d %s" % (os.getpid(), line))
"""
TICK = 0.02
# The number of long-lived clients.
CLIENTS = 200
# Seconds of drain in the deadline test: far more than answering 200 clients
# twice takes (tens of milliseconds), little enough to keep the test short.
SHORT_DRAIN = 5.0
# A drain no test waits for: the process must end for another reason.
LONG_DRAIN = 300.0
# Seconds a subprocess (or a socket) gets to do what the test waits for.
WAIT = 20.0


class Served:
    """The daemon as a subprocess; its stderr (shared by the new process) goes to a file."""

    def __init__(self, tmp: Path, *args: str, backend: str = "uvloop") -> None:
        self.path = tmp / "drain_daemon.py"
        self.path.write_text(textwrap.dedent(DAEMON.format(tick=TICK)))
        self.log_path = tmp / "daemon.log"
        self.port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
        env.pop("PYTHONASYNCIODEBUG", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(PYTHON, "-m", "daemonkit", str(self.path), "--backend", backend),
                    *("--listen", f"tcp://127.0.0.1:{self.port}", *args),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
                cwd=ROOT,
            )
        try:
            wait_for_port(self.port, self.proc)
            self.wait_log("listening on")  # the signal handlers exist from here on
        except BaseException:
            self.close()
            raise

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while text not in self.log:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {WAIT}s:\n{self.log}")
            time.sleep(0.02)
        return self.log

    def upgrade(self) -> int:
        """SIGUSR2, then wait until the new process is ready; its pid."""
        self.proc.send_signal(signal.SIGUSR2)
        self.wait_log("upgrade: new process ")
        return self.new_pid()

    def new_pid(self) -> int:
        (line,) = [ln for ln in self.log.splitlines() if "upgrade: new process " in ln]
        return int(line.split("upgrade: new process ")[1].split()[0])

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)

    def close(self) -> None:
        """Kill the old process, and the new one by pid (it is not our child)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        with contextlib.suppress(AssertionError, ValueError):
            _stop_pid(self.new_pid())


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def _stop_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL, a process the test caused; wait (bounded) until it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if _gone(pid):
                return
            time.sleep(0.02)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    made: list[Served] = []

    def make(*args: str, backend: str = "uvloop") -> Served:
        s = Served(tmp_path, *args, backend=backend)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _ask_all(socks: list[socket.socket], line: bytes) -> list[tuple[int, bytes]]:
    """Send ``line`` on every socket, then read every answer: [(pid, echoed)]."""
    for sock in socks:
        sock.sendall(line + b"\n")
    answers = []
    for sock in socks:
        pid, _, echoed = recv_until(sock, b"\n").rstrip(b"\n").partition(b" ")
        answers.append((int(pid) if pid.isdigit() else -1, echoed))
    return answers


def _ticks(sock: socket.socket) -> int:
    sock.sendall(b"ticks\n")
    return int(recv_until(sock, b"\n").split()[1])


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the daemon closed ``sock`` (EOF or reset) within the socket's timeout."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


# -- real processes ---------------------------------------------------------------------


def test_200_clients_are_served_by_the_old_process_until_the_drain_deadline(
    served: Any,
) -> None:
    d = served("--upgrade-drain", f"{SHORT_DRAIN:g}s")
    old = d.proc.pid
    socks = [d.connect() for _ in range(CLIENTS)]
    try:
        assert _ask_all(socks, b"before") == [(old, b"before")] * CLIENTS
        new = d.upgrade()
        d.wait_log(f"draining: accepting nothing, serving the {CLIENTS} connection(s) left")
        # Every client goes on talking to the old process after the hand-over...
        started = time.monotonic()
        assert _ask_all(socks, b"during") == [(old, b"during")] * CLIENTS
        answered = time.monotonic() - started
        # ...whose timers keep running (bounded poll: TICK is 20 ms)...
        first, deadline = _ticks(socks[0]), time.monotonic() + WAIT
        while _ticks(socks[0]) <= first:
            assert time.monotonic() < deadline, "the old process's timer stopped"
            time.sleep(TICK)
        # ...while new clients reach the new process.
        for n in range(3):
            with d.connect() as fresh:
                assert _ask_all([fresh], b"new%d" % n) == [(new, b"new%d" % n)]
        assert d.proc.poll() is None  # still draining: every client is still connected
        # At the deadline every one of them is closed, and the old process exits 0.
        assert all(_closed_by_peer(sock) for sock in socks)
        closed = time.monotonic() - started
        assert d.proc.wait(WAIT) == 0, d.log
    finally:
        for sock in socks:
            sock.close()
    print(
        f"\n{CLIENTS} clients: all answered by the old process {answered * 1000:.0f} ms "
        f"into the drain; all closed by it {closed:.2f} s in (deadline {SHORT_DRAIN:g} s)"
    )
    log = d.log
    # None was dropped before the deadline: all 200 were still there when it passed.
    assert f"drain deadline ({SHORT_DRAIN:g}s) passed: closing the {CLIENTS} connection(s)" in log
    assert "drained: the last connection closed" not in log
    with d.connect() as after:
        assert _ask_all([after], b"after") == [(new, b"after")]


def test_the_old_process_exits_when_its_last_client_leaves(served: Any) -> None:
    d = served("--upgrade-drain", f"{LONG_DRAIN:g}s")
    old = d.proc.pid
    socks = [d.connect() for _ in range(20)]
    try:
        assert _ask_all(socks, b"hi") == [(old, b"hi")] * 20
        d.upgrade()
        d.wait_log("draining: accepting nothing, serving the 20 connection(s) left")
        assert _ask_all(socks, b"still") == [(old, b"still")] * 20
    finally:
        for sock in socks:
            sock.close()
    # Long before the 300 s deadline: WAIT bounds it.
    assert d.proc.wait(WAIT) == 0, d.log
    assert "drained: the last connection closed after" in d.log


def test_sigterm_while_draining_closes_the_clients_now(served: Any) -> None:
    d = served("--upgrade-drain", f"{LONG_DRAIN:g}s", backend="asyncio")
    socks = [d.connect() for _ in range(5)]
    try:
        assert {pid for pid, _ in _ask_all(socks, b"hi")} == {d.proc.pid}
        d.upgrade()
        d.wait_log("draining: accepting nothing")
        d.proc.send_signal(signal.SIGTERM)
        assert all(_closed_by_peer(sock) for sock in socks)
        assert d.proc.wait(WAIT) == 0, d.log
    finally:
        for sock in socks:
            sock.close()
    log = d.log
    assert "SIGTERM while draining: closing the 5 connection(s) left now" in log
    assert "drain ended by a stop: closing the 5 connection(s) left" in log


def test_upgrade_drain_0_closes_at_once_as_before(served: Any) -> None:
    d = served("--upgrade-drain", "0", backend="asyncio")
    socks = [d.connect() for _ in range(10)]
    try:
        assert {pid for pid, _ in _ask_all(socks, b"hi")} == {d.proc.pid}
        d.upgrade()
        assert all(_closed_by_peer(sock) for sock in socks)
        assert d.proc.wait(WAIT) == 0, d.log
    finally:
        for sock in socks:
            sock.close()
    log = d.log
    assert "upgrade_drain=0s" in log
    assert "draining" not in log


# -- in-process: the draining stop --------------------------------------------------------


class Echo(Daemon):
    """Echoes lines; counts the ticks of a one-second timer and its on_close reasons."""

    listen = "tcp://127.0.0.1:0"
    framing = Lines

    def on_start(self) -> None:
        self.ticks = 0
        self.reasons: list[CloseReason] = []
        self.stops = 0
        self.every(1.0, self.tick)

    def tick(self) -> None:
        self.ticks += 1

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line)

    def on_close(self, conn: Connection, reason: CloseReason) -> None:
        self.reasons.append(reason)

    def on_stop(self) -> None:
        self.stops += 1


@pytest.fixture
def log_records() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    with daemonkit_log_to(records.append):
        yield records


def _messages(records: list[logging.LogRecord], start: str) -> list[str]:
    return [r.getMessage() for r in records if r.getMessage().startswith(start)]


def _echo(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\n")
    return recv_until(sock, b"\n")


def _wait_stopped(d: Daemon) -> None:
    """Wait (bounded) for the stop to finish; read from here: the loop may be gone."""
    deadline = time.monotonic() + WAIT
    while not d.is_stopped():
        assert time.monotonic() < deadline, "the daemon did not stop"
        time.sleep(0.005)


def _draining_runner(run_daemon: Any, clients: int) -> tuple[Echo, DaemonRunner, list[Any]]:
    d = Echo()
    runner = run_daemon(d, clock=FakeClock())
    socks = [runner.connect() for _ in range(clients)]
    runner.call(lambda: d.stop(drain=30))
    return d, runner, socks


def test_a_draining_stop_serves_runs_timers_then_closes_at_the_deadline(
    run_daemon: Any, log_records: list[logging.LogRecord]
) -> None:
    d, runner, socks = _draining_runner(run_daemon, 3)
    with contextlib.ExitStack() as stack:
        for sock in socks:
            stack.enter_context(sock)
        assert runner.call(d.is_draining) and runner.call(d.is_stopping)
        assert [_echo(s, b"served") for s in socks] == [b"served\n"] * 3
        runner.advance(DRAIN_REPORT_INTERVAL)
        assert runner.call(lambda: d.ticks) == DRAIN_REPORT_INTERVAL  # timers run on
        assert _messages(log_records, "draining: 3 connection(s) left, 20s to the deadline")
        assert runner.call(lambda: (d.stops, d.reasons)) == (0, [])  # nothing closed yet
        runner.advance(30 - DRAIN_REPORT_INTERVAL)
        assert all(_closed_by_peer(s) for s in socks)
        _wait_stopped(d)
    assert d.reasons == [CloseReason.SHUTDOWN] * 3 and d.stops == 1
    assert _messages(log_records, "drain deadline (30s) passed: closing the 3 connection(s) left")


def test_status_says_draining_with_what_is_left_then_stopping(run_daemon: Any) -> None:
    d, runner, socks = _draining_runner(run_daemon, 2)
    with socks[0], socks[1]:
        status = runner.call(lambda: sample(d, process=False).to_dict())
        assert status["state"] == "draining"
        assert status["drain"] == {"connections": 2, "seconds_left": 30.0}
        runner.advance(DRAIN_REPORT_INTERVAL)
        status = runner.call(lambda: sample(d, process=False).to_dict())
        assert status["drain"] == {"connections": 2, "seconds_left": 20.0}
        assert ("state", "draining: 2 connection(s) left, 20.0s to the deadline") in [
            tuple(line.split(None, 1)) for line in format_status(status).splitlines()
        ]
        # The drain ends: the graceful close begins (in the same loop turn).
        status = runner.call(lambda: (d.stop(), sample(d, process=False).to_dict())[1])
        assert status["state"] == "stopping" and status["drain"] is None
        _wait_stopped(d)
    assert d.drain_left() is None
    idle = sample(Echo()).to_dict()  # never started: running, no drain
    assert idle["state"] == "running" and idle["drain"] is None


def test_a_drain_ends_with_the_last_connection(
    run_daemon: Any, log_records: list[logging.LogRecord]
) -> None:
    d, runner, socks = _draining_runner(run_daemon, 2)
    socks[0].close()
    runner.wait_for(lambda: len(d.connections) == 1)
    assert runner.call(d.is_draining)
    socks[1].close()
    _wait_stopped(d)  # the clock never moved: no deadline involved
    assert d.stops == 1
    assert _messages(log_records, "drained: the last connection closed after 0s")


def test_stop_or_sigterm_while_draining_ends_the_drain(
    run_daemon: Any, log_records: list[logging.LogRecord]
) -> None:
    d, runner, socks = _draining_runner(run_daemon, 2)
    with socks[0], socks[1]:
        runner.call(d._on_stop_signal, signal.SIGTERM)
        assert all(_closed_by_peer(s) for s in socks)
        _wait_stopped(d)
    assert d.reasons == [CloseReason.SHUTDOWN] * 2
    assert _messages(log_records, "SIGTERM while draining: closing the 2 connection(s) left now")
    assert _messages(log_records, "drain ended by a stop: closing the 2 connection(s) left")


def test_stop_now_while_draining_aborts(run_daemon: Any) -> None:
    d, runner, socks = _draining_runner(run_daemon, 1)
    with socks[0]:
        runner.call(lambda: d.stop(now=True))
        _wait_stopped(d)
        assert _closed_by_peer(socks[0])
    assert not d.is_draining() and d.reasons == [CloseReason.SHUTDOWN]


def test_links_can_be_opened_while_draining_not_after(run_daemon: Any) -> None:
    d, runner, socks = _draining_runner(run_daemon, 1)
    with socks[0], socket.create_server(("127.0.0.1", 0)) as upstream:
        url = f"tcp://127.0.0.1:{upstream.getsockname()[1]}"
        link = runner.call(lambda: d.connect(url, reconnect=False))
        assert link in runner.call(lambda: d.links)

        def end_drain_then_connect() -> str:
            d.stop()  # the drain ends: the graceful close begins
            try:
                d.connect(url)
            except ConfigError as exc:
                return str(exc)
            return "connected"

        assert "not running" in runner.call(end_drain_then_connect)


def test_a_link_whose_upstream_drops_while_draining_redials_not_once_the_stop_is_final(
    run_daemon: Any,
) -> None:
    # The clients a drain serves may need their upstream: the link redials
    # while draining; once the drain ended, the attempt it had planned is dropped
    # and the link closes with the stop.
    d, runner, socks = _draining_runner(run_daemon, 1)
    with socks[0], socket.create_server(("127.0.0.1", 0)) as upstream:
        upstream.settimeout(WAIT)
        url = f"tcp://127.0.0.1:{upstream.getsockname()[1]}"
        link = runner.call(lambda: d.connect(url, max_delay=1.0))
        first, _ = upstream.accept()
        runner.wait_for(lambda: link.up)
        first.close()  # the upstream drops the link in the middle of the drain
        runner.wait_for(lambda: link.state == "down")
        runner.advance(1.0)  # the backoff (at most max_delay) on the daemon's clock
        second, _ = upstream.accept()
        runner.wait_for(lambda: link.up)
        assert runner.call(lambda: (link.connects, link.reconnects)) == (2, 1)
        assert _echo(socks[0], b"still served") == b"still served\n"
        second.close()
        runner.wait_for(lambda: link.state == "down")  # a redial is planned...
        # ...the drain ends (the stop is final) before it is due: when it comes
        # due (its timer's callback, called here), the link closes instead.
        assert runner.call(lambda: (d.stop(), link._dial(), link.state)[-1]) == "closed"
        _wait_stopped(d)
        upstream.settimeout(0.2)
        with pytest.raises(TimeoutError):
            upstream.accept()  # no attempt was made
    assert link.state == "closed" and link.connects == 2


def test_no_upgrade_starts_from_a_draining_process(run_daemon: Any) -> None:
    d, runner, socks = _draining_runner(run_daemon, 1)
    with socks[0]:
        with pytest.raises(UpgradeError, match="draining its 1 connection"):
            runner.call(d.upgrade)
        assert _echo(socks[0], b"still served") == b"still served\n"


def test_a_drain_without_connections_stops_at_once(run_daemon: Any) -> None:
    d = Echo()
    runner = run_daemon(d, clock=FakeClock())
    runner.call(lambda: d.stop(drain=30))
    _wait_stopped(d)
    assert not d.is_draining()


class WsEcho(Daemon):
    listen = Endpoint("http://127.0.0.1:0", websocket="/ws")

    def on_message(self, conn: Connection, message: str | bytes) -> None:
        conn.send(message)


def test_websocket_clients_get_1001_at_the_drain_deadline(run_daemon: Any) -> None:
    d = WsEcho()
    runner = run_daemon(d, clock=FakeClock())
    url = f"ws://127.0.0.1:{runner.address.port}/ws"
    with ws_connect(url, open_timeout=WAIT, close_timeout=WAIT, ping_interval=None) as ws:
        runner.wait_for(lambda: len(d.connections) == 1)
        runner.call(lambda: d.stop(drain=30))
        ws.send("during the drain")
        assert ws.recv(timeout=WAIT) == "during the drain"
        runner.advance(30)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    _wait_stopped(d)


# -- the setting ---------------------------------------------------------------------------


def test_upgrade_drain_setting() -> None:
    assert Echo().upgrade_drain == DEFAULT_UPGRADE_DRAIN == 60.0
    assert Echo(upgrade_drain=0).upgrade_drain == 0
    for bad in (-1, float("inf"), float("nan"), "10s"):
        with pytest.raises(ConfigError, match="upgrade_drain"):
            Echo(upgrade_drain=bad)
    (setting,) = [s for s in SETTINGS if s.name == "upgrade_drain"]
    assert setting.option == "--upgrade-drain" and setting.env == "DAEMONKIT_UPGRADE_DRAIN"
    assert setting.from_text("2m") == 120.0 and setting.from_text("0") == 0.0
    layers = gather(_no_args(), {"DAEMONKIT_UPGRADE_DRAIN": "90s"})
    assert layers.values["upgrade_drain"] == 90.0
    with pytest.raises(SourceError, match="DAEMONKIT_UPGRADE_DRAIN"):
        gather(_no_args(), {"DAEMONKIT_UPGRADE_DRAIN": "soon"})


def _no_args() -> Any:
    import argparse

    return argparse.Namespace()
