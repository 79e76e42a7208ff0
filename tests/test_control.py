"""The control socket: real unix sockets in tmp dirs, both backends, hostile clients, ctl."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemonkit import ConfigError, Connection, Daemon, FakeClock, Lines, StartError
from daemonkit import cli as daemon_cli
from daemonkit.cli import ctl
from daemonkit.ops.control import (
    COMMANDS,
    CONTROL_IDLE_TIMEOUT,
    CONTROL_MAX_CLIENTS,
    CONTROL_MAX_LINE,
    Operations,
    RequestError,
    check_socket_dir,
    parse_request,
)
from daemonkit.testing import DaemonRunner
from tests.helpers import (
    PYTHON,
    ROOT,
    free_port,
    operations_of,
    recv_all,
    recv_until,
    wait_for_port,
)

LOCAL = "tcp://127.0.0.1:0"


class Echo(Daemon):
    """Line echo with a reload counter; ``fail-reload`` makes the next on_reload raise."""

    listen = LOCAL
    framing = Lines

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.reloads = 0
        self.fail_reload = False

    def on_read(self, conn: Connection, data: Any) -> None:
        conn.send(data)

    def on_reload(self) -> None:
        if self.fail_reload:
            raise ValueError("bad config line 3")
        self.reloads += 1


class Client:
    """A blocking control-socket client for tests."""

    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> Any:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed; buffered {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def ask(self, request: dict[str, Any]) -> Any:
        self.send(json.dumps(request).encode() + b"\n")
        return self.reply()

    def at_eof(self) -> bool:
        return recv_all(self.sock) == b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "ctl.sock"


@pytest.fixture
def daemon_log() -> Iterator[list[logging.LogRecord]]:
    """Every record of the daemonkit loggers during the test (propagation may be off)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("daemonkit")
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)
    logger.propagate = old_propagate


def start(run_daemon: Any, sock_path: Path, **settings: Any) -> tuple[Echo, DaemonRunner]:
    d = Echo(control=str(sock_path), **settings)
    return d, run_daemon(d)


def ops_of(d: Daemon) -> Operations:
    ops = operations_of(d)
    assert isinstance(ops, Operations)
    return ops


# -- parsing, without sockets ------------------------------------------------------


def test_parse_request_accepts_an_object_with_a_command() -> None:
    assert parse_request(b'{"cmd": "stop", "timeout": 5}') == {"cmd": "stop", "timeout": 5}
    assert parse_request(b' {"cmd":"status"} \r') == {"cmd": "status"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"", "malformed request: Expecting value"),
        (b"status", "malformed request"),
        (b'{"cmd": "status"', "malformed request"),
        (b"\xff\xfe\x00junk", "malformed request"),
        (b"\x80\x81\x82", "not UTF-8"),
        # Too deep for 3.10-3.12's parser; 3.13's parses it, into a list.
        (b"[" * 3000 + b"]" * 3000, "malformed request|must be a JSON object"),
        (b'["status"]', "must be a JSON object"),
        (b'"status"', "must be a JSON object"),
        (b"{}", 'needs "cmd"'),
        (b'{"cmd": 5}', 'needs "cmd"'),
    ],
)
def test_parse_request_refuses_everything_else(line: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_request(line)


def test_every_command_has_a_help_line() -> None:
    assert set(COMMANDS) == {
        "status",
        "connections",
        "reload",
        "stop",
        "log-level",
        "metrics",
        "upgrade",
    }
    assert all(COMMANDS.values())


# -- the directory and the socket file ----------------------------------------------


def test_socket_dir_must_not_be_world_writable(tmp_path: Path) -> None:
    check_socket_dir(str(tmp_path / "ctl.sock"))  # 0700, ours: fine
    tmp_path.chmod(0o777)
    with pytest.raises(ConfigError, match=r"world-writable \(mode 0777\)"):
        check_socket_dir(str(tmp_path / "ctl.sock"))
    tmp_path.chmod(0o1777)  # sticky, like /tmp: still refused
    with pytest.raises(ConfigError, match="world-writable"):
        check_socket_dir(str(tmp_path / "ctl.sock"))
    tmp_path.chmod(0o700)


def test_socket_dir_must_exist_and_be_ours_or_roots(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        check_socket_dir(str(tmp_path / "missing" / "ctl.sock"))
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory away")
    other = tmp_path / "other"
    other.mkdir(mode=0o755)
    os.chown(other, 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to uid 65534"):
        check_socket_dir(str(other / "ctl.sock"))


def test_daemon_refuses_to_start_in_a_world_writable_dir(tmp_path: Path, backend: str) -> None:
    tmp_path.chmod(0o777)
    d = Echo(control=str(tmp_path / "ctl.sock"))
    with pytest.raises(ConfigError, match="world-writable"):
        DaemonRunner(d, backend=backend).start()
    assert not (tmp_path / "ctl.sock").exists()
    tmp_path.chmod(0o700)


def test_cli_exit_code_for_a_world_writable_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.chmod(0o777)
    echo = str(ROOT / "examples" / "echo_daemon.py")
    argv = [echo, "--listen", LOCAL, "--control", str(tmp_path / "c.sock")]
    try:
        assert daemon_cli.main(argv) == daemon_cli.EXIT_CONFIG
    finally:
        tmp_path.chmod(0o700)
    err = capsys.readouterr().err
    assert "world-writable" in err and "Traceback" not in err


def test_socket_is_0600_and_removed_at_stop(run_daemon: Any, sock_path: Path) -> None:
    _, runner = start(run_daemon, sock_path)
    info = os.stat(sock_path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    runner.stop()
    assert not sock_path.exists()


def test_a_live_control_socket_is_not_taken_over(run_daemon: Any, sock_path: Path) -> None:
    start(run_daemon, sock_path)
    with pytest.raises(StartError, match="cannot open the control socket"):
        DaemonRunner(Echo(control=str(sock_path))).start()
    with Client(sock_path) as c:  # the first daemon still answers
        assert c.ask({"cmd": "status"})["ok"] is True


# -- the commands ----------------------------------------------------------------


def test_status(run_daemon: Any, sock_path: Path, backend: str) -> None:
    _, runner = start(run_daemon, sock_path)
    with runner.connect() as user:
        user.sendall(b"hello\n")
        assert recv_until(user, b"\n") == b"hello\n"
        with Client(sock_path) as c:
            reply = c.ask({"cmd": "status"})
    assert reply["ok"] is True
    s = reply["status"]
    assert s["pid"] == os.getpid()
    assert s["backend"] == backend
    assert s["name"] == "Echo"
    assert s["state"] == "running"
    assert s["endpoints"] == [
        {
            "name": "tcp",
            "address": str(runner.address),
            "connections": 1,
            "fd_exhausted": 0,
        }
    ]
    assert (s["connections"], s["accepted"], s["closed"], s["rejected"]) == (1, 1, 0, 0)
    assert s["errors"] == 0
    assert (s["bytes_in"], s["bytes_out"]) == (6, 6)
    assert s["write_buffer"] == 0
    assert s["open_fds"] > 3 and s["rss"] > 1_000_000
    assert set(s["loop_lag"]) == {"p50", "p99", "max", "samples"}
    assert s["log_level"] in ("debug", "info", "warning", "error", "critical", "trace")
    assert s["control"] == str(sock_path)
    assert s["uptime"] >= 0
    assert s["timers"] >= 0 and s["tasks"] >= 0


def test_bytes_totals_include_closed_connections(run_daemon: Any, sock_path: Path) -> None:
    d, runner = start(run_daemon, sock_path)
    for word in (b"one\n", b"three\n"):
        with runner.connect() as user:
            user.sendall(word)
            assert recv_until(user, b"\n") == word
    runner.wait_for(lambda: d.stats["closed"] == 2)
    with Client(sock_path) as c:
        s = c.ask({"cmd": "status"})["status"]
    assert (s["bytes_in"], s["bytes_out"], s["closed"], s["connections"]) == (10, 10, 2, 0)


def test_control_clients_are_not_the_daemons(run_daemon: Any, sock_path: Path) -> None:
    d, runner = start(run_daemon, sock_path, max_connections=1)
    with runner.connect() as user:
        # The one allowed connection is taken; the control socket still works
        # and its clients count nowhere in the daemon's books.
        with Client(sock_path) as a, Client(sock_path) as b:
            assert a.ask({"cmd": "status"})["status"]["connections"] == 1
            assert b.ask({"cmd": "connections"})["total"] == 1
        user.sendall(b"x\n")
        assert recv_until(user, b"\n") == b"x\n"
    runner.wait_for(lambda: d.stats["closed"] == 1)
    assert runner.call(lambda: dict(d.stats)) == {
        "accepted": 1,
        "closed": 1,
        "rejected": 0,
        "errors": 0,
    }


def test_connections_with_age_and_idle(run_daemon: Any, sock_path: Path, backend: str) -> None:
    clock = FakeClock()
    d = Echo(control=str(sock_path), idle_timeout=60)
    runner = DaemonRunner(d, backend=backend, clock=clock)
    with runner, runner.connect() as user:
        peer = "{}:{}".format(*user.getsockname())
        runner.advance(5)
        user.sendall(b"hi\n")
        assert recv_until(user, b"\n") == b"hi\n"
        runner.advance(2)
        with Client(sock_path) as c:
            reply = c.ask({"cmd": "connections"})
            assert c.ask({"cmd": "connections", "limit": 0})["connections"] == []
    assert reply["ok"] is True and reply["total"] == 1
    (entry,) = reply["connections"]
    assert entry["endpoint"] == "tcp"
    assert entry["peer"] == peer
    assert (entry["age"], entry["idle"]) == (7.0, 2.0)
    assert (entry["bytes_in"], entry["bytes_out"], entry["write_buffer"]) == (3, 3, 0)


def test_reload_calls_on_reload_and_reports_its_failure(
    run_daemon: Any, sock_path: Path, daemon_log: list[logging.LogRecord]
) -> None:
    d, runner = start(run_daemon, sock_path)
    with Client(sock_path) as c:
        assert c.ask({"cmd": "reload"}) == {"ok": True}
        assert runner.call(lambda: d.reloads) == 1
        d.fail_reload = True
        reply = c.ask({"cmd": "reload"})
        assert reply == {"ok": False, "error": "on_reload failed: ValueError: bad config line 3"}
        assert c.ask({"cmd": "status"})["ok"] is True  # still serving
    assert any(r.getMessage() == "on_reload failed" and r.exc_info for r in daemon_log)


def test_stop_is_graceful_and_takes_a_timeout(run_daemon: Any, sock_path: Path) -> None:
    d, runner = start(run_daemon, sock_path)
    user = runner.connect()
    with user, Client(sock_path) as c:
        reply = c.ask({"cmd": "stop", "timeout": 2.5})
        assert reply == {"ok": True, "stopping": True, "connections": 1, "timeout": 2.5}
        assert user.recv(1) == b""  # the graceful stop closed the user's connection
        assert c.at_eof()  # and then the control connection
    runner.stop()
    assert d.shutdown_timeout == 2.5
    assert not sock_path.exists()


def test_stop_with_a_timeout_too_long_is_refused_and_the_daemon_serves_on(
    run_daemon: Any, sock_path: Path
) -> None:
    """1e308 passed the old check; stop() then raised half-way and the daemon never exited."""
    d, runner = start(run_daemon, sock_path)
    with runner.connect() as user, Client(sock_path) as c:
        reply = c.ask({"cmd": "stop", "timeout": 1e308})
        assert reply["ok"] is False
        assert reply["error"].startswith("timeout=1e+308 is longer than"), reply
        user.sendall(b"still there\n")
        assert recv_until(user, b"\n") == b"still there\n"
        assert c.ask({"cmd": "status"})["status"]["state"] == "running"
    assert runner.call(lambda: (d._stopping, d.shutdown_timeout)) == (False, 10.0)
    # A good stop still works afterwards.
    with Client(sock_path) as c:
        assert c.ask({"cmd": "stop", "timeout": 1})["ok"] is True
    runner.stop()


class Flooder(Echo):
    """Answers ``go`` with 16 MiB: more than loopback's buffers take for a client not reading."""

    max_write_buffer = 64 << 20

    def on_read(self, conn: Connection, data: Any) -> None:
        for _ in range(16):
            conn.write(b"f" * (1 << 20))


def test_stop_twice_stops_at_once_and_status_shows_stopping(
    run_daemon: Any, sock_path: Path
) -> None:
    d = Flooder(control=str(sock_path), shutdown_timeout=600, close_timeout=600)
    runner = run_daemon(d)
    user = socket.socket()
    user.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    user.settimeout(10)
    user.connect((runner.address.host, runner.address.port))
    with user, Client(sock_path) as c:
        user.sendall(b"go\n")
        runner.wait_for(lambda: any(c.write_buffer_size for c in d.connections))
        assert c.ask({"cmd": "stop"})["timeout"] == 600
        # The connection cannot drain: the daemon stays in its graceful stop.
        status = c.ask({"cmd": "status"})["status"]
        assert status["state"] == "stopping" and status["write_buffer"] > 0
        reply = c.ask({"cmd": "stop"})
        assert reply["now"] is True
        assert c.at_eof()
    runner.stop()


def test_log_level(run_daemon: Any, sock_path: Path) -> None:
    logger = logging.getLogger("daemonkit")
    root = logging.getLogger()
    before, root_before = logger.level, root.level
    logger.setLevel(logging.INFO)
    root.setLevel(logging.INFO)
    try:
        d, _ = start(run_daemon, sock_path)
        with Client(sock_path) as c:
            assert c.ask({"cmd": "log-level", "level": "DEBUG"}) == {
                "ok": True,
                "level": "debug",
                "was": "info",
            }
            assert d.log.isEnabledFor(logging.DEBUG)
            assert c.ask({"cmd": "status"})["status"]["log_level"] == "debug"
            bad = c.ask({"cmd": "log-level", "level": "loud"})
            assert bad["ok"] is False and "unknown log level 'loud'" in bad["error"]
            missing = c.ask({"cmd": "log-level"})
            assert missing == {"ok": False, "error": 'log-level needs "level"'}
            assert logger.level == logging.DEBUG
            # The log set-up configures the root logger: application loggers follow too.
            assert logging.getLogger("an.application").isEnabledFor(logging.DEBUG)
    finally:
        logger.setLevel(before)
        root.setLevel(root_before)


def test_metrics_command(run_daemon: Any, sock_path: Path) -> None:
    start(run_daemon, sock_path)
    with Client(sock_path) as c:
        text = c.ask({"cmd": "metrics"})["metrics"]
    assert "# TYPE daemonkit_connections gauge\ndaemonkit_connections 0.0\n" in text
    assert 'daemonkit_loop_lag_seconds_bucket{le="+Inf"}' in text


# -- hostile and careless clients --------------------------------------------------------


@pytest.mark.parametrize(
    ("request_line", "error"),
    [
        (b"{not json}\n", "malformed request"),
        (b"\x00\xff\xfe\x01 binary junk\n", "malformed request"),
        (b"\n", "malformed request"),
        (b"[1, 2]\n", "must be a JSON object"),
        (b'{"cmd": "launch"}\n', "unknown command 'launch'; commands: status, connections"),
        (b'{"cmd": "status", "verbose": true}\n', "status does not take 'verbose'"),
        (b'{"cmd": "stop", "timeout": -1}\n', "timeout must be at least 0 seconds, not -1"),
        (b'{"cmd": "stop", "timeout": "soon"}\n', "timeout must be a number of seconds"),
        (b'{"cmd": "stop", "timeout": NaN}\n', "timeout must be a finite number of seconds"),
        (b'{"cmd": "stop", "timeout": Infinity}\n', "timeout must be a finite number of seconds"),
        (b'{"cmd": "stop", "timeout": 1e308}\n', "timeout=1e+308 is longer than"),
        (b'{"cmd": "stop", "timeout": true}\n', "timeout must be a number of seconds"),
        (b'{"cmd": "connections", "limit": 1.5}\n', "limit must be a whole number"),
        (b'{"cmd": "log-level", "level": 10}\n', "unknown log level 10"),
    ],
)
def test_bad_requests_get_an_error_and_the_connection_goes_on(
    run_daemon: Any, sock_path: Path, request_line: bytes, error: str
) -> None:
    d, runner = start(run_daemon, sock_path)
    with Client(sock_path) as c:
        c.send(request_line)
        reply = c.reply()
        assert reply["ok"] is False and error in reply["error"], reply
        assert c.ask({"cmd": "status"})["ok"] is True
    assert runner.call(lambda: d.is_stopping()) is False


def test_pipelined_requests_get_replies_in_order(run_daemon: Any, sock_path: Path) -> None:
    start(run_daemon, sock_path)
    with Client(sock_path) as c:
        c.send(b'{"cmd": "reload"}\nnope\n{"cmd": "connections"}\n')
        assert c.reply() == {"ok": True}
        assert c.reply()["ok"] is False
        assert c.reply()["total"] == 0


@pytest.mark.parametrize(
    "junk",
    [
        b"a" * (CONTROL_MAX_LINE + 1),
        bytes(b for b in os.urandom(3 * CONTROL_MAX_LINE) if b != ord("\n")),
        b'{"cmd": "status", "pad": "' + b"x" * 100_000 + b'"}\n',
    ],
    ids=["long-line", "binary", "huge-json"],
)
def test_huge_lines_get_an_error_and_a_close(run_daemon: Any, sock_path: Path, junk: bytes) -> None:
    start(run_daemon, sock_path)
    with Client(sock_path) as c:
        try:
            c.send(junk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: the reply was written first
        reply = c.reply()
        assert reply == {
            "ok": False,
            "error": f"request line longer than {CONTROL_MAX_LINE} bytes; closing",
        }
        with pytest.raises(EOFError):
            c.reply()
    with Client(sock_path) as c:
        assert c.ask({"cmd": "status"})["ok"] is True


def test_a_silent_client_is_closed_after_the_idle_timeout(sock_path: Path, backend: str) -> None:
    clock = FakeClock()
    d = Echo(control=str(sock_path))
    runner = DaemonRunner(d, backend=backend, clock=clock)
    with runner, Client(sock_path) as c:
        control = ops_of(d).control
        assert control is not None
        runner.wait_for(lambda: len(control.clients) == 1)
        runner.advance(CONTROL_IDLE_TIMEOUT - 0.5)
        assert runner.call(lambda: len(control.clients)) == 1
        runner.advance(0.5)
        assert c.reply() == {
            "ok": False,
            "error": f"no request within {CONTROL_IDLE_TIMEOUT:g}s; closing",
        }
        assert c.at_eof()
        with Client(sock_path) as again:
            assert again.ask({"cmd": "status"})["ok"] is True


def test_a_hundred_clients_at_once(run_daemon: Any, sock_path: Path) -> None:
    d, runner = start(run_daemon, sock_path)
    clients = [Client(sock_path) for _ in range(100)]
    replies = closed = 0
    try:
        for c in clients:
            try:
                c.send(b'{"cmd": "status"}\n')
                assert c.reply()["ok"] is True
                replies += 1
            except (EOFError, BrokenPipeError, ConnectionResetError):
                closed += 1
    finally:
        for c in clients:
            c.close()
    assert replies + closed == 100
    assert 1 <= replies <= CONTROL_MAX_CLIENTS
    control = ops_of(d).control
    assert control is not None
    assert runner.call(lambda: control.refused) == closed
    runner.wait_for(lambda: not control.clients)
    with Client(sock_path) as c:
        assert c.ask({"cmd": "status"})["status"]["accepted"] == 0


# -- peer credentials --------------------------------------------------------------

NOBODY = 65534

_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("connect failed:", exc.strerror)
    sys.exit(0)
try:
    s.sendall(b'{"cmd": "stop"}\\n')  # never carried out
except (BrokenPipeError, ConnectionResetError):
    pass  # refused before we could send: the reply still waits to be read
data = b""
while True:
    try:
        chunk = s.recv(4096)
    except ConnectionResetError:  # closed with our request unread: the reply came first
        break
    if not chunk:
        break
    data += chunk
print("reply:", data.decode())
"""


def _python_for(uid: int) -> str:
    """An interpreter that ``uid`` may run (ours may live in root's home)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if candidate is None:
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "pass"], user=uid, cwd="/", capture_output=True, timeout=30
            )
        except PermissionError:
            continue
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no Python interpreter that uid {uid} may run")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A socket directory other users may enter (0711, root's): tmp_path's parents are 0700."""
    path = Path(tempfile.mkdtemp(prefix="dk-ctl-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_as_nobody(sock: Path) -> str:
    python = _python_for(NOBODY)
    result = subprocess.run(
        [python, "-c", _CLIENT, str(sock)],
        user=NOBODY,
        group=NOBODY,
        cwd="/",
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_another_uid_is_refused(run_daemon: Any, shared_dir: Path) -> None:
    sock = shared_dir / "ctl.sock"
    d, runner = start(run_daemon, sock)
    # The socket's mode 0600 already keeps other users out...
    assert "connect failed: Permission denied" in run_as_nobody(sock)
    # ...and if an operator opens it up by mistake, SO_PEERCRED still does.
    sock.chmod(0o666)
    out = run_as_nobody(sock)
    assert "reply: " in out
    reply = json.loads(out.partition("reply: ")[2])
    assert reply == {
        "ok": False,
        "error": f"permission denied: uid {NOBODY} may not control this daemon "
        f"(only uid {os.geteuid()} and root may)",
    }
    assert runner.call(lambda: d.is_stopping()) is False
    with Client(sock) as c:  # root still may
        assert c.ask({"cmd": "status"})["ok"] is True


# -- the ctl command, in-process ---------------------------------------------------------


def test_ctl_status_prints_a_table(
    run_daemon: Any, sock_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, runner = start(run_daemon, sock_path)
    with runner.connect() as user:
        user.sendall(b"abc\n")
        recv_until(user, b"\n")
        assert ctl.main(["status", "--control", str(sock_path)]) == 0
        out = capsys.readouterr().out
        assert f"daemon          Echo (pid {os.getpid()})" in out
        assert f"endpoints       tcp  {runner.address}  1 connection(s)" in out
        assert "connections     1 (accepted 1, closed 0, rejected 0, errors 0)" in out
        assert "bytes           in 4 B, out 4 B, buffered 0 B" in out
        assert ctl.main(["--control", str(sock_path), "connections"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["ID", "ENDPOINT", "PEER", "AGE", "IDLE", "IN", "OUT", "WBUF"]
        assert lines[1].split()[:3] == ["1", "tcp", "{}:{}".format(*user.getsockname())]
        assert ctl.main(["status", "--control", str(sock_path), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["status"]["connections"] == 1


def test_ctl_other_commands_and_exit_codes(
    run_daemon: Any,
    sock_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, runner = start(run_daemon, sock_path)
    path = str(sock_path)
    assert ctl.main(["reload", "--control", path]) == 0
    assert capsys.readouterr().out == "ok\n"
    d.fail_reload = True
    assert ctl.main(["reload", "--control", path]) == ctl.EXIT_ERROR_REPLY
    err = capsys.readouterr().err
    assert err == "daemonkit ctl: error: on_reload failed: ValueError: bad config line 3\n"
    assert ctl.main(["metrics", "--control", path]) == 0
    assert "# TYPE daemonkit_loop_lag_seconds histogram" in capsys.readouterr().out
    monkeypatch.setenv(ctl.ENV_CONTROL, path)
    logger = logging.getLogger("daemonkit")
    before = logger.level
    try:
        assert ctl.main(["log-level", "WARNING"]) == 0
        assert capsys.readouterr().out.startswith("log level: ")
    finally:
        logger.setLevel(before)
    assert ctl.main(["log-level", "loud"]) == ctl.EXIT_USAGE
    assert ctl.main(["stop", "3"]) == 0
    assert capsys.readouterr().out.startswith("stopping: 0 connection(s) to close")
    runner.stop()
    assert d.shutdown_timeout == 3.0
    assert ctl.main(["status"]) == ctl.EXIT_CANNOT_CONNECT
    assert "cannot connect to the control socket" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["inf", "nan", "1e308", "-1"])
@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (["stop", "VALUE"], "shutdown_timeout"),
        (["status", "--timeout", "VALUE"], "argument --timeout: timeout"),
    ],
)
def test_ctl_refuses_durations_before_sending(
    argv: list[str], prefix: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No socket is needed: the client refuses them as the daemon would."""
    argv = [value if a == "VALUE" else a for a in argv]
    assert ctl.main([*argv, "--control", "/nonexistent/ctl.sock"]) == ctl.EXIT_USAGE
    err = capsys.readouterr().err
    assert prefix in err and "Traceback" not in err


def test_ctl_needs_a_path(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ctl.ENV_CONTROL, raising=False)
    assert ctl.main(["status"]) == ctl.EXIT_USAGE
    assert "--control PATH" in capsys.readouterr().err
    assert ctl.main([]) == ctl.EXIT_USAGE
    assert daemon_cli.main(["ctl", "launch"]) == ctl.EXIT_USAGE


def test_ctl_no_reply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A server that never answers (a short real wait: the client's own timeout), then
    one that accepts and closes."""
    path = str(tmp_path / "fake.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()  # never accepts: the client waits in the backlog
        assert ctl.main(["status", "--control", path, "--timeout", "0.05"]) == ctl.EXIT_NO_REPLY
        assert "no reply from" in capsys.readouterr().err
    os.unlink(path)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        server.settimeout(10)

        def close_at_once() -> None:
            conn, _ = server.accept()
            conn.close()

        thread = threading.Thread(target=close_at_once)
        thread.start()
        code = ctl.main(["status", "--control", path])
        thread.join(10)
    assert code == ctl.EXIT_NO_REPLY
    assert "closed the connection without a reply" in capsys.readouterr().err


# -- real processes --------------------------------------------------------------------


def test_ctl_against_a_real_daemon_process(tmp_path: Path) -> None:
    sock = tmp_path / "ctl.sock"
    port, metrics_port = free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.pop("PYTHONASYNCIODEBUG", None)
    echo = str(ROOT / "examples" / "echo_daemon.py")
    proc = subprocess.Popen(
        [
            *(PYTHON, "-m", "daemonkit", echo, "--listen", f"tcp://127.0.0.1:{port}"),
            *("--control", str(sock), "--metrics", f"tcp://127.0.0.1:{metrics_port}"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        wait_for_port(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as user:
            user.sendall(b"ping")
            assert recv_until(user, b"ping") == b"ping"

            def run_ctl(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [PYTHON, "-m", "daemonkit", "ctl", *args, "--control", str(sock)],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    env=env,
                    cwd=ROOT,
                )

            status = run_ctl("status")
            assert status.returncode == 0, status.stderr
            assert f"daemon          EchoDaemon (pid {proc.pid})" in status.stdout
            # accepted 2: wait_for_port's probe was the first
            assert "connections     1 (accepted 2, closed 1," in status.stdout, status.stdout
            with socket.create_connection(("127.0.0.1", metrics_port), timeout=10) as web:
                web.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                page = recv_all(web).decode()
            assert page.startswith("HTTP/1.1 200 OK\r\n")
            assert "\r\n\r\n# HELP daemonkit_info" in page
            assert "\ndaemonkit_connections 1.0\n" in page
            stop = run_ctl("stop")
            assert stop.returncode == 0, stop.stderr
            assert stop.stdout.startswith("stopping: 1 connection(s) to close")
            assert recv_all(user) == b""
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"stop requested: stopping gracefully" in err
    assert not sock.exists()
    missing = subprocess.run(
        [PYTHON, "-m", "daemonkit", "ctl", "status", "--control", str(sock)],
        capture_output=True,
        timeout=30,
        cwd=ROOT,
    )
    assert missing.returncode == ctl.EXIT_CANNOT_CONNECT
