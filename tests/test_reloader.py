"""Reload: SIGHUP and ``ctl reload`` share one path; ``--reload`` restarts on source changes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemonkit import Daemon
from daemonkit.ops.control import Operations, RequestError
from daemonkit.ops.reloader import ENV_RELOAD_CHILD, Reloader, is_reload_child, reload_paths
from tests.helpers import PYTHON, ROOT, daemonkit_log_to, free_port, recv_until

# The daemon under development: answers "VERSION PID". Versions differ in
# length, so even a file system with coarse timestamps sees each edit.
APP = """
import os
from daemonkit import Daemon, Lines

class App(Daemon):
    framing = Lines

    def on_read(self, conn, line):
        conn.send(b"{version} %d" % os.getpid())
"""
BROKEN = "raise RuntimeError('half-typed code')\n"
# Seconds a restart may take (stop, start a Python process, bind).
WAIT = 20.0


def ask(port: int) -> tuple[str, int] | None:
    """(version, pid) from the daemon, or None while nothing listens."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"?\n")
            reply = recv_until(sock, b"\n").decode()
    except OSError:
        return None
    if not reply.endswith("\n"):
        return None  # a child being stopped closed us
    version, pid = reply.split()
    return version, int(pid)


def wait_for_version(port: int, version: str) -> int:
    """The pid of the daemon once it answers with ``version``."""
    deadline = time.monotonic() + WAIT
    while True:
        got = ask(port)
        if got is not None and got[0] == version:
            return got[1]
        assert time.monotonic() < deadline, f"no {version!r} within {WAIT}s (last: {got})"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.fixture
def reload_log() -> Iterator[list[str]]:
    records: list[str] = []
    with daemonkit_log_to(lambda r: records.append(r.getMessage())):
        yield records


def test_polling_reloader_restarts_on_change_and_waits_out_a_crash(
    tmp_path: Path, reload_log: list[str]
) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP.format(version="one"))
    port = free_port()
    command = [PYTHON, "-m", "daemonkit", str(app), "--listen", f"tcp://127.0.0.1:{port}"]
    reloader = Reloader(command, reload_paths(str(app)), watcher="poll", interval=0.05)
    thread = threading.Thread(target=reloader.run, kwargs={"install_signals": False})
    thread.start()
    try:
        first = wait_for_version(port, "one")
        app.write_text(APP.format(version="two-two"))
        second = wait_for_version(port, "two-two")
        assert second != first and _gone(first)
        app.write_text(BROKEN)  # the child dies at import; the supervisor waits
        deadline = time.monotonic() + WAIT
        while not any("exited with status 3" in m for m in reload_log):
            assert time.monotonic() < deadline, reload_log
            time.sleep(0.02)
        app.write_text(APP.format(version="three-three-three"))
        third = wait_for_version(port, "three-three-three")
        assert reloader.restarts == 3
        assert reloader.pid == third
    finally:
        reloader.stop()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert _gone(third)
    assert reloader.pid is None
    assert "reload: app.py changed; restarting" in [
        m.replace(os.path.relpath(app), "app.py") for m in reload_log
    ]
    assert (
        "reload: the daemon exited with status 3; waiting for a change to start it again"
        in reload_log
    )


def test_cli_reload_with_watchfiles(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles")
    app = tmp_path / "app.py"
    app.write_text(APP.format(version="one"))
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.pop("PYTHONASYNCIODEBUG", None)
    log_path = tmp_path / "log"
    pids: list[int] = []
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "daemonkit",
                str(app),
                "--reload",
                "--listen",
                f"tcp://127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
            cwd=ROOT,
        )
    try:
        pids.append(wait_for_version(port, "one"))
        time.sleep(0.3)  # let the watcher settle before the edit
        app.write_text(APP.format(version="two-two"))
        pids.append(wait_for_version(port, "two-two"))
        assert pids[0] != pids[1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
        assert all(_gone(pid) for pid in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                if not _gone(pid):
                    os.kill(pid, signal.SIGKILL)
    text = log_path.read_text()
    assert "(watchfiles)" in text
    assert "changed; restarting" in text


def test_a_file_written_in_steps_is_one_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan between truncate and write must not become a restart of its own."""
    from daemonkit.ops import reloader as module

    app = str(tmp_path / "app.py")
    scans = iter([{app: (2, 40)}, {app: (2, 40)}])  # the write lands, then all is still
    monkeypatch.setattr(module, "_scan", lambda paths: next(scans))
    monkeypatch.setattr(module, "RELOAD_SETTLE", 0.0)
    watcher = Reloader(["true"], [str(tmp_path)], watcher="poll")
    changed = {app}
    assert watcher._settle({app: (1, 0)}, changed) == {app: (2, 40)}
    assert changed == {app}
    assert next(scans, None) is None  # it rescanned until two scans agreed


def test_settling_adds_files_changed_meanwhile_and_has_a_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemonkit.ops import reloader as module

    a, b = str(tmp_path / "a.py"), str(tmp_path / "b.py")
    scans = iter([{a: (2, 1), b: (1, 1)}, {a: (2, 1), b: (1, 1)}])
    monkeypatch.setattr(module, "_scan", lambda paths: next(scans))
    monkeypatch.setattr(module, "RELOAD_SETTLE", 0.0)
    watcher = Reloader(["true"], [str(tmp_path)], watcher="poll")
    changed = {a}
    watcher._settle({a: (2, 1)}, changed)
    assert changed == {a, b}  # b appeared while a settled: one restart for both

    # A file rewritten without pause: the limit ends the wait.
    counter = iter(range(1_000_000))
    monkeypatch.setattr(module, "_scan", lambda paths: {a: (next(counter), 1)})
    monkeypatch.setattr(module, "RELOAD_SETTLE_MAX", 0.05)
    monkeypatch.setattr(module, "RELOAD_SETTLE", 0.001)
    watcher._settle({a: (-1, 1)}, {a})
    assert next(counter) > 1  # it did rescan, and returned

    # A stop ends the wait at once.
    watcher.stop()
    monkeypatch.setattr(module, "RELOAD_SETTLE_MAX", 60.0)
    watcher._settle({a: (-1, 1)}, {a})


def test_reload_paths_and_the_child_marker(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("")
    assert reload_paths(f"{app}:App") == [str(tmp_path)]
    assert reload_paths("some.module:App") == [os.getcwd()]
    env = {ENV_RELOAD_CHILD: "1"}
    assert is_reload_child(env) and env == {}
    assert not is_reload_child(env)
    with pytest.raises(ValueError, match="watcher must be"):
        Reloader(["true"], ["."], watcher="inotify")


# -- SIGHUP and ctl reload --------------------------------------------------------------


class Reloading(Daemon):
    listen = "tcp://127.0.0.1:0"
    reloads = 0
    fail = False

    def on_reload(self) -> None:
        self.reloads += 1
        if self.fail:
            raise ValueError("bad config line 3")


def test_sighup_and_ctl_reload_take_the_same_path(run_daemon: Any, reload_log: list[str]) -> None:
    d = Reloading()
    runner = run_daemon(d)
    ops = Operations(d, d.reactor)
    try:
        runner.call(d._on_hup, signal.SIGHUP)
        assert runner.call(ops.execute, {"cmd": "reload"}) == {"ok": True}
        assert d.reloads == 2
        d.fail = True
        runner.call(d._on_hup, signal.SIGHUP)  # logged, the daemon goes on
        with pytest.raises(RequestError, match="on_reload failed: ValueError: bad config line 3"):
            runner.call(ops.execute, {"cmd": "reload"})
        with pytest.raises(ValueError):
            runner.call(d.reload)
    finally:
        ops.watchdog.close()
    assert d.reloads == 5
    assert reload_log.count("on_reload failed") == 3  # once per attempt, never twice
    assert reload_log.count("SIGHUP: reloading") == 2
