"""``--workers N`` under the deployment options: pidfile, ``--daemon``, ``--user``,
systemd notify and socket activation, and SIGUSR2 upgrading the whole set."""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit.cli import ctl
from daemonkit.cli import run as cli
from daemonkit.ops.pidfile import read_pid
from daemonkit.ops.process import Credentials, check_can_switch
from daemonkit.ops.workers import EXIT_NO_WORKERS
from tests.helpers import (
    ACTIVATE,
    PYTHON,
    ROOT,
    TINY_WORKER,
    WAIT,
    Load,
    NotifySocket,
    Served,
    supervise_here,
)


def wait_gone(pid: int) -> None:
    """Wait until ``pid`` exited (gone, or a zombie nobody reaps: it is not our child)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat.rpartition(")")[2].split()[0] == "Z":
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still runs after {WAIT}s")


def until(notify: NotifySocket, key: str, senders: set[int | None]) -> dict[str, str]:
    """The next notification with ``key``; every sender on the way goes into ``senders``."""
    deadline = time.monotonic() + WAIT
    while True:
        message = notify.next(max(0.001, deadline - time.monotonic()))
        senders.add(notify.sender)
        if key in message:
            return message


def uid_of(pid: int) -> int:
    """The real uid of process ``pid``, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can read: a worker that dropped to ``nobody`` loads its code there."""
    with tempfile.TemporaryDirectory() as name:
        os.chmod(name, 0o755)
        yield Path(name)


# -- refused before anything starts --------------------------------------------------------


def test_an_unknown_user_is_a_config_error_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pidfile = tmp_path / "set.pid"
    code = cli.main(
        [
            *(str(ROOT / "examples" / "echo_daemon.py"), "--listen", "tcp://127.0.0.1:0"),
            *("--workers", "2", "--user", "no-such-user-dk", "--pidfile", str(pidfile)),
        ]
    )
    assert code == cli.EXIT_CONFIG
    assert "unknown user 'no-such-user-dk'" in capsys.readouterr().err
    assert not pidfile.exists()


def test_only_root_may_switch_users_and_the_supervisor_asks_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_can_switch(Credentials(uid=os.geteuid(), gid=os.getegid()))  # no switch: fine
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    check_can_switch(Credentials(uid=1000, gid=None))
    with pytest.raises(PermissionError, match=r"cannot switch to user nobody .*only root can"):
        check_can_switch(Credentials(uid=65534, gid=65534, user="nobody"))


# -- systemd and the pidfile follow the supervisor -----------------------------------------


def test_systemd_socket_activation_and_the_pidfile_follow_the_supervisor(tmp_path: Path) -> None:
    held = socket.create_server(("127.0.0.1", 0))  # binding it again would fail: the set adopts it
    notify_path = str(tmp_path / "notify.sock")
    notify = NotifySocket(notify_path)
    pidfile = tmp_path / "set.pid"
    served = Served(
        tmp_path,
        2,
        "--pidfile",
        str(pidfile),
        env={
            "LISTEN_FDS": "1",
            "NOTIFY_SOCKET": notify_path,
            "WATCHDOG_USEC": "400000",  # a ping every 0.2 s
        },
        port=held.getsockname()[1],
        launcher=(PYTHON, "-c", ACTIVATE, str(held.fileno())),
        pass_fds=[held.fileno()],
    )
    senders: set[int | None] = set()
    try:
        until(notify, "READY", senders)
        # READY=1 only once every worker is ready; the pidfile holds the supervisor.
        assert "all 2 worker(s) ready" in served.log
        assert read_pid(pidfile) == served.proc.pid
        assert "socket activation: endpoint tcp takes descriptor 3" in served.log
        assert set(served.workers()) == {"0", "1"}
        status = until(notify, "STATUS", senders)["STATUS"]
        assert re.fullmatch(r"2 of 2 worker\(s\) ready; 0 restart\(s\)", status), status
        until(notify, "WATCHDOG", senders)

        served.proc.send_signal(signal.SIGHUP)
        reloading = until(notify, "RELOADING", senders)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        until(notify, "READY", senders)
        assert "reload: every worker replaced" in served.log

        served.proc.send_signal(signal.SIGTERM)
        until(notify, "STOPPING", senders)
        assert served.proc.wait(WAIT) == 0
        # Only the supervisor spoke to systemd: MAINPID is its pid, not a worker's.
        assert senders == {served.proc.pid}, senders
        assert not pidfile.exists()
    finally:
        served.close()
        notify.close()
        held.close()


# -- SIGUSR2: a new set takes over -----------------------------------------------------------


def test_sigusr2_upgrades_the_set_under_load_and_a_broken_one_leaves_it_serving(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "set.pid"
    control = str(tmp_path / "ctl.sock")
    notify_path = str(tmp_path / "notify.sock")
    notify = NotifySocket(notify_path)
    served = Served(
        tmp_path,
        2,
        *("--pidfile", str(pidfile), "--control", control),
        env={"NOTIFY_SOCKET": notify_path},
    )
    senders: set[int | None] = set()
    try:
        until(notify, "READY", senders)
        before = served.workers()
        # A worker alone is not upgraded: its copy would be a second set.
        os.kill(before["0"], signal.SIGUSR2)
        served.wait_log(
            rf"upgrade not started: worker 0 is upgraded with its set: "
            rf"send SIGUSR2 to the supervisor \(pid {served.proc.pid}\)"
        )
        load = Load(served, pace=0.005)  # ~800 connections/s: bounded, and the new set can start
        try:
            load.wait_more(50)
            served.proc.send_signal(signal.SIGUSR2)
            assert served.proc.wait(WAIT) == 0  # the old supervisor, once its workers drained
            load.wait_more(50)
        finally:
            load.stop()
        print(f"upgrade under load: {load.total()} answered, {len(load.failures)} failed")
        assert load.failures == []  # 0 refused, 0 failed replies
        new = read_pid(pidfile)
        assert new is not None and new != served.proc.pid  # the pidfile follows
        # systemd hears the new main pid, then READY=1, both from the new supervisor.
        assert until(notify, "MAINPID", senders)["MAINPID"] == str(new)
        assert notify.sender == new
        until(notify, "READY", senders)
        assert notify.sender == new
        assert senders == {served.proc.pid, new}  # never a worker
        after = served.workers()
        assert set(after) == {"0", "1"}
        assert not set(after.values()) & set(before.values())  # a whole new set serves
        assert set(load.answered) & set(after.values())  # and served the load once it took over
        log = served.log
        assert f"upgrade: new supervisor {new} is ready with all its workers" in log
        for pid in before.values():
            assert re.search(rf"worker \d: pid {pid} exited with status 0", log)
        # The control socket passed to the new supervisor, at the same path.
        assert ctl.request(control, {"cmd": "status"})["status"]["pid"] == new

        # New code that cannot even be imported (ctl upgrade, this time): the set serves on.
        served.path.write_text("raise ImportError('broken on purpose')\n")
        reply = ctl.request(control, {"cmd": "upgrade"})
        assert reply["ok"] and reply["pid"] == new, reply
        served.wait_log(
            rf"upgrade failed: new supervisor {reply['new_pid']} exited with status 3 before its "
            rf"workers were ready: .*broken on purpose.*; the old set serves on "
            rf"\(supervisor pid {new}\)",
            alive=False,
        )
        assert served.workers() == after
        assert read_pid(pidfile) == new

        os.kill(new, signal.SIGTERM)
        wait_gone(new)
        for pid in after.values():
            wait_gone(pid)
        assert not pidfile.exists()
        assert not os.path.exists(control)  # the new supervisor owned its file, and removed it
    finally:
        served.close()
        notify.close()


# -- an upgrade's new set that fails, in this process ----------------------------------------


def test_a_new_supervisor_not_ready_in_time_is_killed_and_the_old_set_serves_on() -> None:
    code, log, sup = supervise_here(
        [PYTHON, "-c", "import time; time.sleep(60)"],  # workers and new supervisor alike
        1,
        seconds=1.5,
        ready_timeout=WAIT,
        upgrade_timeout=0.3,
        then=lambda s: s.upgrade(),
    )
    assert code == 0  # stopped by the test's deadline, not by the upgrade
    assert sup.successor is None
    failed = [line for line in log if line.startswith("upgrade failed")]
    assert len(failed) == 1, log
    assert re.fullmatch(
        r"upgrade failed: new supervisor \d+ was killed by SIGKILL before its workers were "
        r"ready: not ready within 0.3s; killed; the old set serves on \(supervisor pid \d+\)",
        failed[0],
    )
    assert not any("handing over" in line for line in log)


def test_a_new_set_must_be_whole_a_worker_that_never_starts_fails_it(tmp_path: Path) -> None:
    script = tmp_path / "tiny.py"
    script.write_text(TINY_WORKER)
    code, log, sup = supervise_here(
        [PYTHON, str(script)],
        2,
        seconds=WAIT,
        ready_timeout=0.3,
        crash_burst=2,
        strict_start=True,  # as the new supervisor of an upgrade runs
        environ=dict(os.environ, STALL="1"),  # worker 1 never says it is ready
    )
    assert code == EXIT_NO_WORKERS
    assert sup.failure == "worker 1 never became ready (crash loop)"
    assert any("this set cannot take over" in line for line in log), log


# -- --daemon and --user ---------------------------------------------------------------------


def test_daemon_returns_to_the_shell_and_workers_run_as_the_user(shared_dir: Path) -> None:
    pidfile = shared_dir / "set.pid"
    log_file = shared_dir / "set.log"
    as_root = os.geteuid() == 0
    user = ("--user", "nobody") if as_root else ()
    served = Served(
        shared_dir, 2, "--daemon", "--pidfile", str(pidfile), "--log-file", str(log_file), *user
    )
    try:
        assert served.proc.wait(WAIT) == 0  # back at the shell once every worker is ready
        supervisor = read_pid(pidfile)
        assert supervisor is not None and supervisor != served.proc.pid
        text = log_file.read_text()
        assert f"detached: pid {supervisor}" in text
        assert "all 2 worker(s) ready" in text
        pids = served.workers()
        assert set(pids) == {"0", "1"}
        if as_root:
            # The supervisor keeps root (docs/design.md, "Workers"); the workers dropped.
            assert uid_of(supervisor) == 0
            assert {uid_of(pid) for pid in pids.values()} == {pwd.getpwnam("nobody").pw_uid}
            assert "running as user nobody" in log_file.read_text()
        os.kill(supervisor, signal.SIGTERM)
        wait_gone(supervisor)
        assert not pidfile.exists()
    finally:
        served.close()
        if pidfile.exists():
            pid = read_pid(pidfile)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        text = log_file.read_text() if log_file.exists() else ""
        for pid in re.findall(r"started pid (\d+)", text):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
