"""Zero-downtime upgrade: real daemons replaced under load, failures that leave the old one up."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemonkit import ConfigError, Daemon, Lines
from daemonkit.cli.ctl import main as ctl_main
from daemonkit.cli.ctl import request
from daemonkit.ops.control import Operations, RequestError
from daemonkit.ops.upgrade import (
    ENV_INHERIT,
    ENV_PARENT,
    ENV_READY_FD,
    UpgradeError,
    Upgrader,
    report_start_failure,
    upgrading_from,
)
from tests.helpers import (
    ALL_BACKENDS,
    PYTHON,
    ROOT,
    daemonkit_log_to,
    free_port,
    recv_until,
    wait_for_port,
)

# The daemon under test: a Lines echo that answers "PID LINE", refuses to
# import while FLAG exists (a broken release), fails on_start while
# FLAG.start exists, and allocates on "alloc MB".
DAEMON = """
import os
from daemonkit import Daemon, Lines

if os.path.exists({flag!r}):
    raise RuntimeError("this release is broken (flag file)")


class Echo(Daemon):
    framing = Lines
    memory_check_interval = 0.05
    hog = []

    def on_start(self):
        if os.path.exists({flag!r} + ".start"):
            raise RuntimeError("on_start fails (flag file)")

    def on_read(self, conn, line):
        if line.startswith(b"alloc "):
            self.hog.append(b"\\x01" * (int(line[6:]) << 20))
        conn.send(b"%d %s" % (os.getpid(), line))
"""

# The load: LOAD_THREADS clients, each making one short-lived connection
# (connect, one request, one reply, close) every LOAD_INTERVAL seconds, so
# about 600 connections a second; bounded by LOAD_MAX and LOAD_DEADLINE.
LOAD_THREADS = 6
LOAD_INTERVAL = 0.01
LOAD_MAX = 20_000
LOAD_DEADLINE = 40.0
# Seconds of load before the upgrade and after the old process has exited.
LOAD_BEFORE = 0.5
LOAD_AFTER = 0.5
# Seconds a subprocess gets to do what the test waits for.
WAIT = 20.0


@pytest.fixture
def log_records() -> Iterator[list[logging.LogRecord]]:
    """Every record of the daemonkit loggers during the test."""
    records: list[logging.LogRecord] = []
    with daemonkit_log_to(records.append):
        yield records


class Served:
    """A daemon subprocess whose stderr goes to a file (the new process shares it)."""

    def __init__(self, tmp: Path, *args: str, backend: str = "uvloop") -> None:
        self.flag = tmp / "broken"
        self.start_flag = tmp / "broken.start"
        self.path = tmp / "echo_daemon.py"
        self.path.write_text(textwrap.dedent(DAEMON.format(flag=str(self.flag))))
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
            # The port accepts once bound, a moment before the signal handlers exist.
            self.wait_log("listening on")
        except BaseException:
            self.close()
            raise

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ask(self, line: bytes) -> tuple[int, bytes]:
        """One short-lived request: (pid that answered, echoed line)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(line + b"\n")
            reply = recv_until(sock, b"\n")
        pid, _, echoed = reply.rstrip(b"\n").partition(b" ")
        return int(pid), echoed

    def wait_log(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while text not in self.log:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {WAIT}s:\n{self.log}")
            time.sleep(0.02)
        return self.log

    def new_pids(self) -> list[int]:
        return [
            int(line.split("started new process ")[1].split()[0])
            for line in self.log.splitlines()
            if "started new process " in line
        ]

    def close(self) -> None:
        """Stop the old process and every new one it started (not our children: by pid)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        for pid in self.new_pids():
            _kill_by_pid(pid)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def _kill_by_pid(pid: int) -> None:
    """SIGTERM a process the test caused (a grandchild), then SIGKILL; wait until it is gone."""
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


class Load:
    """Short-lived connections at a steady rate from threads; every outcome is recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.replies: list[tuple[float, int]] = []  # (when, pid that answered)
        self.refused: list[str] = []
        self.failed: list[str] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._deadline = time.monotonic() + LOAD_DEADLINE
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True)
            for n in range(LOAD_THREADS)
        ]

    @property
    def made(self) -> int:
        return len(self.replies) + len(self.refused) + len(self.failed)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(WAIT)

    def _client(self, n: int) -> None:
        i = 0
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            if self.made >= LOAD_MAX:
                break
            i += 1
            payload = b"c%d-%d" % (n, i)
            started = time.monotonic()
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except OSError as exc:
                self.refused.append(f"{payload!r}: {exc!r}")
            else:
                try:
                    with sock:
                        sock.sendall(payload + b"\n")
                        reply = recv_until(sock, b"\n")
                    pid, _, echoed = reply.rstrip(b"\n").partition(b" ")
                    if echoed != payload:
                        self.failed.append(f"{payload!r} got {reply!r}")
                    else:
                        self.replies.append((time.monotonic(), int(pid)))
                        self.slowest = max(self.slowest, time.monotonic() - started)
                except (OSError, ValueError) as exc:
                    self.failed.append(f"{payload!r}: {exc!r}")
            self._stop.wait(LOAD_INTERVAL)


# -- real processes ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_upgrade_under_load_drops_nothing(served: Any, backend: str) -> None:
    d = served(backend=backend)
    old = d.proc.pid
    with Load(d.port) as load:
        time.sleep(LOAD_BEFORE)
        d.proc.send_signal(signal.SIGUSR2)
        assert d.proc.wait(WAIT) == 0, d.log
        exited = time.monotonic()
        time.sleep(LOAD_AFTER)
    (new,) = d.new_pids()
    pids = {pid for _, pid in load.replies}
    print(
        f"\n{backend}: {load.made} connections, {len(load.replies)} replies "
        f"({sum(p == old for _, p in load.replies)} old, {sum(p == new for _, p in load.replies)} "
        f"new), {len(load.refused)} refused, {len(load.failed)} failed, "
        f"slowest {load.slowest * 1000:.0f} ms"
    )
    assert load.refused == []
    assert load.failed == []
    assert pids == {old, new}
    assert all(pid == new for when, pid in load.replies if when > exited)
    assert len(load.replies) >= 200  # the load really ran through the upgrade
    assert d.ask(b"after") == (new, b"after")
    log = d.log
    assert "SIGUSR2: upgrading" in log
    assert f"upgrade: new process {new} is ready; handing over" in log
    assert f"upgrade: ready; the old process (pid {old}) stops now" in log


def test_a_broken_release_leaves_the_old_process_serving(served: Any) -> None:
    d = served()
    old = d.proc.pid
    d.flag.touch()
    d.proc.send_signal(signal.SIGUSR2)
    log = d.wait_log("upgrade failed")
    (new,) = d.new_pids()
    assert (
        f"upgrade failed: new process {new} exited with status 3 before it was ready: "
        f"importing {d.path} failed: RuntimeError: this release is broken (flag file); "
        f"still serving as pid {old}"
    ) in log
    assert d.ask(b"still") == (old, b"still")
    # Fixed: the next upgrade goes through.
    d.flag.unlink()
    d.proc.send_signal(signal.SIGUSR2)
    assert d.proc.wait(WAIT) == 0, d.log
    newer = d.new_pids()[-1]
    assert d.ask(b"fixed") == (newer, b"fixed")


def test_ctl_upgrade_hands_over_the_control_and_unix_sockets(served: Any) -> None:
    # A short private directory: a unix socket path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="dk-") as tmp:
        control = os.path.join(tmp, "ctl.sock")
        app = os.path.join(tmp, "app.sock")
        d = served("--listen", f"unix://{app}", "--control", control)
        old = d.proc.pid
        d.wait_log("control socket at")
        assert ctl_main(["upgrade", "--control", control]) == 0
        assert d.proc.wait(WAIT) == 0, d.log
        (new,) = d.new_pids()
        # The old process left both socket files to the new one.
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(app)
            sock.sendall(b"unix\n")
            assert recv_until(sock, b"\n") == b"%d unix\n" % new
        reply = request(control, {"cmd": "status"})
        assert reply["status"]["pid"] == new != old
        log = d.log
        assert "upgrade requested" in log


def _ask_unix(path: str, line: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(line + b"\n")
        return recv_until(sock, b"\n")


def test_a_failed_upgrade_leaves_the_old_process_its_socket_files(served: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="dk-") as tmp:
        control = os.path.join(tmp, "ctl.sock")
        app = os.path.join(tmp, "app.sock")
        d = served("--listen", f"unix://{app}", "--control", control)
        old = d.proc.pid
        d.wait_log("control socket at")
        d.start_flag.touch()  # the new process binds nothing, then its on_start fails
        d.proc.send_signal(signal.SIGUSR2)
        log = d.wait_log("upgrade failed")
        (new,) = d.new_pids()
        assert "on_start fails (flag file)" in log
        _wait(lambda: _gone(new))
        # Both files still name the old process's sockets: operators and clients reach it.
        assert request(control, {"cmd": "status"})["status"]["pid"] == old
        assert _ask_unix(app, b"still") == b"%d still\n" % old
        # Fixed: the next upgrade hands both files over, and the last owner removes them.
        d.start_flag.unlink()
        d.proc.send_signal(signal.SIGUSR2)
        assert d.proc.wait(WAIT) == 0, d.log
        newer = d.new_pids()[-1]
        assert request(control, {"cmd": "status"})["status"]["pid"] == newer
        assert _ask_unix(app, b"newer") == b"%d newer\n" % newer
        _kill_by_pid(newer)  # SIGTERM: a graceful stop of the last owner
        assert not os.path.exists(app) and not os.path.exists(control)


def test_memory_guard_recycles_a_leaking_process(served: Any) -> None:
    d = served("--max-memory", "100M")
    old = d.proc.pid
    assert d.ask(b"alloc 150") == (old, b"alloc 150")
    assert d.proc.wait(WAIT) == 0, d.log
    (new,) = d.new_pids()
    assert d.ask(b"fresh") == (new, b"fresh")
    log = d.log
    assert "is over max_memory 100.0 MiB; recycling this process" in log
    assert log.count("recycling this process") == 1


# -- in-process: the old process's side ------------------------------------------------


class Echo(Daemon):
    listen = "tcp://127.0.0.1:0"
    framing = Lines

    def on_read(self, conn: Any, line: bytes) -> None:
        conn.send(line)


def _failures(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.getMessage().startswith("upgrade failed")]


def _upgrader(d: Daemon) -> Upgrader:
    """The upgrader the runner attached (it answers the daemon's upgrade())."""
    handler = d._upgrade_handler
    assert handler is not None, "the runner attaches an upgrader once the daemon is ready"
    upgrader = getattr(handler, "__self__", None)
    assert isinstance(upgrader, Upgrader)
    return upgrader


def _wait(predicate: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_new_process_that_never_gets_ready_is_killed(
    run_daemon: Any, log_records: list[logging.LogRecord]
) -> None:
    d = Echo()
    runner = run_daemon(d)
    upgrader = _upgrader(d)
    upgrader.command = [PYTHON, "-c", "import time; time.sleep(60)"]
    upgrader.timeout = 0.3
    pid = runner.call(d.upgrade)
    # One at a time, from every door.
    with pytest.raises(UpgradeError, match=f"already under way \\(new process {pid}\\)"):
        runner.call(d.upgrade)
    ops = Operations(d, d.reactor)
    with pytest.raises(RequestError, match="upgrade not started: an upgrade is already under way"):
        runner.call(ops.execute, {"cmd": "upgrade"})
    ops.watchdog.close()
    _wait(lambda: _failures(log_records))
    assert _failures(log_records) == [
        f"upgrade failed: new process {pid} was killed by SIGKILL before it was ready: "
        f"not ready within 0.3s; killed; still serving as pid {os.getpid()}"
    ]
    assert _gone(pid)
    assert not runner.call(lambda: upgrader.in_progress)
    with runner.connect() as sock:
        sock.sendall(b"hi\n")
        assert recv_until(sock, b"\n") == b"hi\n"


def test_the_reason_a_new_process_gives_is_logged(
    run_daemon: Any, log_records: list[logging.LogRecord]
) -> None:
    d = Echo()
    runner = run_daemon(d)
    _upgrader(d).command = [
        PYTHON,
        "-c",
        "from daemonkit.ops.upgrade import report_start_failure as r; "
        "r('cannot listen on tcp://x: Address already in use'); raise SystemExit(5)",
    ]
    pid = runner.call(d.upgrade)
    _wait(lambda: _failures(log_records))
    assert _failures(log_records) == [
        f"upgrade failed: new process {pid} exited with status 5 before it was ready: "
        f"cannot listen on tcp://x: Address already in use; still serving as pid {os.getpid()}"
    ]


def test_upgrade_needs_a_running_daemon() -> None:
    with pytest.raises(UpgradeError, match="not running"):
        Echo().upgrade()


def test_a_listed_sigusr2_stays_the_users() -> None:
    from daemonkit.core.reactor import Reactor

    reactor = Reactor("asyncio")
    try:
        plain, mine = Echo(), Echo(signals=[signal.SIGUSR2])
        plain._install_signals(reactor)
        assert reactor._signals[signal.SIGUSR2][0].callback == plain._on_usr2
        for handles in list(reactor._signals.values()):
            for handle in list(handles):
                handle.cancel()
        mine._install_signals(reactor)
        assert [h.callback for h in reactor._signals[signal.SIGUSR2]] == [mine._on_user_signal]
    finally:
        reactor.close()


# -- in-process: the new process's side -------------------------------------------------


def _env(**values: str) -> dict[str, str]:
    return {ENV_PARENT: str(os.getppid()), **values}


def test_inherited_listeners_are_adopted_by_name(log_records: list[logging.LogRecord]) -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    stray = socket.create_server(("127.0.0.1", 0))
    read, write = os.pipe()
    try:
        d = Echo()
        env = _env(
            **{
                ENV_INHERIT: f"tcp:{os.dup(listening.fileno())},nope:{stray.detach()}",
                ENV_READY_FD: str(write),
            }
        )
        Upgrader(d, environ=env)
        adopted = d.inherited_sockets.pop("tcp")
        assert not d.inherited_sockets
        with adopted:
            assert adopted.getsockname() == listening.getsockname()
            assert not adopted.get_inheritable()
        assert ENV_INHERIT not in env and upgrading_from(env) == os.getppid()
        assert any("cannot use the listener 'nope'" in r.getMessage() for r in log_records)
        report_start_failure("it broke", env)
        assert os.read(read, 100) == b"error it broke\n"
        assert env == {}  # said once; nothing is left for our own children
        with pytest.raises(OSError):
            os.fstat(write)  # closed
    finally:
        listening.close()
        os.close(read)


def test_variables_meant_for_another_process_are_ignored_and_dropped() -> None:
    env = {ENV_PARENT: "0", ENV_INHERIT: "tcp:999", ENV_READY_FD: "998"}
    d = Echo()
    Upgrader(d, environ=env)
    assert env == {} and d.inherited_sockets == {}
    report_start_failure("nothing to tell", {})  # not an upgrade: a no-op


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tcp", "is malformed"),
        ("tcp:x", "is malformed"),
        ("tcp:1,tcp:2", "is malformed"),
        ("tcp:{pipe}", "is not a socket"),
    ],
)
def test_bad_inherited_descriptors_fail_the_start(value: str, message: str) -> None:
    read, write = os.pipe()
    try:
        env = _env(**{ENV_INHERIT: value.format(pipe=read)})
        with pytest.raises(ConfigError, match=message):
            Upgrader(Echo(), environ=env)
    finally:
        os.close(read)
        os.close(write)
