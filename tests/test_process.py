"""The process options: --daemon (detaching), --user/--group (dropping privileges)."""

from __future__ import annotations

import grp
import os
import pwd
import signal
import socket
import time
from pathlib import Path

import pytest

from daemonkit import cli
from daemonkit.errors import ConfigError
from daemonkit.ops.pidfile import read_pid
from daemonkit.ops.process import Credentials, resolve_credentials
from tests.helpers import free_port, recv_until, wait_for_port
from tests.test_cli import ECHO, finish, spawn
from tests.test_pidfile import wait_until

# Real seconds a test waits for a process or a file before failing.
DEADLINE = 20.0

NOBODY = 65534

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def has_nobody() -> bool:
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return False
    return True


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def kill_if_alive(pid: int | None) -> None:
    if pid is not None and alive(pid):
        os.kill(pid, signal.SIGKILL)


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as file:
        return dict(line.rstrip("\n").split(":\t", 1) for line in file if ":\t" in line)


def echo_once(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as client:
        client.sendall(b"ping\n")
        return recv_until(client, b"\n")


# -- credentials ---------------------------------------------------------------


@pytest.mark.skipif(not has_nobody(), reason="no user 'nobody'")
def test_a_user_brings_its_primary_group() -> None:
    entry = pwd.getpwnam("nobody")
    found = resolve_credentials("nobody", None)
    assert found is not None
    assert (found.uid, found.gid, found.user) == (entry.pw_uid, entry.pw_gid, "nobody")
    assert str(found).startswith(f"user nobody (uid {entry.pw_uid}) and group ")


def test_ids_work_without_a_database_entry() -> None:
    assert resolve_credentials("4000123", "4000124") == Credentials(uid=4000123, gid=4000124)
    assert resolve_credentials(None, "0") == Credentials(uid=None, gid=0, group="root")
    assert resolve_credentials(None, None) is None


@pytest.mark.parametrize(
    ("user", "group", "message"),
    [
        ("no_such_user_xyz", None, "unknown user 'no_such_user_xyz'"),
        (None, "no_such_group_xyz", "unknown group 'no_such_group_xyz'"),
    ],
)
def test_unknown_names_are_a_config_error(
    user: str | None, group: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_credentials(user, group)


def test_cli_unknown_user_exits_with_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [ECHO, "--listen", "tcp://127.0.0.1:0", "--user", "no_such_user_xyz"]
    assert cli.main(argv) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown user 'no_such_user_xyz'" in err


# -- --daemon ---------------------------------------------------------------


def test_daemon_detaches_keeps_serving_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    pidfile = tmp_path / "echo.pid"
    log = tmp_path / "echo.log"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(DEADLINE)
    started = time.monotonic()
    proc = spawn(
        ECHO,
        "--listen",
        f"tcp://127.0.0.1:{port}",
        "--daemon",
        "--pidfile",
        str(pidfile),
        "--log-file",
        str(log),
        env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
    )
    pid: int | None = None
    try:
        code, err = finish(proc, DEADLINE)  # returns once the daemon reported its start
        assert code == cli.EXIT_OK, err
        assert err == ""
        assert time.monotonic() - started < DEADLINE
        pid = read_pid(pidfile)
        assert pid is not None and pid != proc.pid  # the pid of the detached process
        assert alive(pid)
        status = proc_status(pid)
        assert status["PPid"] != str(proc.pid)
        # systemd learns the new main pid first (needs NotifyAccess=all), then READY=1.
        assert notify.recv(4096) == f"MAINPID={pid}".encode()
        assert notify.recv(4096) == b"READY=1"
        assert echo_once(port) == b"ping\n"
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), "the detached daemon to exit")  # type: ignore[arg-type]
        assert not pidfile.exists()  # removed at its clean exit
        text = log.read_text()
        assert f"detached: pid {pid}" in text
        assert "SIGTERM: stopping gracefully" in text and text.rstrip().endswith("stopped")
    finally:
        notify.close()
        kill_if_alive(pid)


def test_daemon_start_failure_reaches_the_terminal(tmp_path: Path) -> None:
    pidfile = tmp_path / "echo.pid"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn(
            ECHO, "--listen", f"tcp://127.0.0.1:{port}", "--daemon", "--pidfile", str(pidfile)
        )
        code, err = finish(proc, DEADLINE)
    assert code == cli.EXIT_ADDRESS_IN_USE, err
    assert err.endswith(
        f"daemonkit: error: cannot listen on tcp://127.0.0.1:{port}: Address already in use\n"
    )
    assert not pidfile.exists()


# -- --user / --group ---------------------------------------------------------------


def privileged_port() -> int:
    """A free port below 1024 (binding it needs root, or a lowered unprivileged start)."""
    for port in range(1023, 600, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


@as_root
@pytest.mark.skipif(not has_nobody(), reason="no user 'nobody'")
def test_privileges_drop_after_binding(tmp_path: Path) -> None:
    port = privileged_port()
    group = "nogroup" if _group_exists("nogroup") else "nobody"
    proc = spawn(ECHO, "--listen", f"tcp://127.0.0.1:{port}", "--user", "nobody", "--group", group)
    try:
        wait_for_port(port, proc)
        wait_until(
            lambda: proc_status(proc.pid)["Uid"].split() == [str(NOBODY)] * 4,
            "the daemon to switch users",
        )
        status = proc_status(proc.pid)
        gid = str(_gid(group))
        assert status["Gid"].split() == [gid] * 4
        assert status["Groups"].split() == []  # supplementary groups cleared
        assert echo_once(port) == b"ping\n"  # still serves the port root bound
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, DEADLINE)
        assert code == cli.EXIT_OK, err
        assert f"running as user nobody (uid {NOBODY}) and group {group} (gid {gid})" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _group_exists(name: str) -> bool:
    try:
        _gid(name)
    except KeyError:
        return False
    return True


def _gid(name: str) -> int:
    return grp.getgrnam(name).gr_gid
