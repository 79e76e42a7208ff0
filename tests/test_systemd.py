"""systemd: sd_notify messages against a real datagram socket, and socket activation."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemonkit import Daemon, Endpoint, FakeClock
from daemonkit.errors import ConfigError
from daemonkit.ops.systemd import SystemdNotifier, adopt_listen_fds, listen_fds, notify
from tests.helpers import ACTIVATE, PYTHON, ROOT, NotifySocket, recv_until
from tests.test_cli import finish, spawn

# Real seconds a test waits for a message or a process before failing.
DEADLINE = 20.0

# Where the in-process tests put the "passed" descriptors: far above anything
# pytest has open, and consecutive, as systemd's 3, 4, ... are.
FIRST_FD = 900

# The STATUS= line of a daemon nobody has connected to yet.
IDLE_STATUS = "0 connection(s); accepted 0, rejected 0, errors 0"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[NotifySocket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = NotifySocket(path)
    yield sock, path
    sock.close()


class Echo(Daemon):
    listen = "tcp://127.0.0.1:0"

    def on_read(self, conn: Any, data: bytes) -> None:
        conn.write(data)


# -- sd_notify ---------------------------------------------------------------


def test_notify_is_a_no_op_without_notify_socket() -> None:
    assert notify("READY=1", environ={}) is False
    assert not SystemdNotifier(Echo(), environ={}).enabled


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"daemonkit-test-{uuid.uuid4().hex}"
    receiver = NotifySocket(b"\0" + name.encode())
    try:
        assert notify("STATUS=hello", environ={"NOTIFY_SOCKET": f"@{name}"}) is True
        assert receiver.next() == {"STATUS": "hello"}
    finally:
        receiver.close()


def test_notify_to_a_missing_socket_fails_quietly(tmp_path: Path) -> None:
    assert notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False
    assert notify("READY=1", environ={"NOTIFY_SOCKET": "vsock:2:1"}) is False


def test_messages_in_order_from_a_real_daemon(
    tmp_path: Path, notify_socket: tuple[NotifySocket, str]
) -> None:
    receiver, path = notify_socket
    proc = spawn(
        str(ROOT / "examples" / "echo_daemon.py"),
        "--listen",
        "tcp://127.0.0.1:0",
        env={"NOTIFY_SOCKET": path},
    )
    try:
        assert receiver.next() == {"READY": "1"}  # no MAINPID: it did not detach
        status = receiver.next()
        assert status == {"STATUS": IDLE_STATUS}
        proc.send_signal(signal.SIGHUP)
        reloading = receiver.next_event()
        assert set(reloading) == {"RELOADING", "MONOTONIC_USEC"}
        assert reloading["RELOADING"] == "1"
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 <= now - int(reloading["MONOTONIC_USEC"]) < DEADLINE * 1_000_000
        assert receiver.next_event() == {"READY": "1"}
        proc.send_signal(signal.SIGTERM)
        assert receiver.next_event() == {"STOPPING": "1"}
        code, err = finish(proc, DEADLINE)
        assert code == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_watchdog_pings_at_half_watchdog_usec(
    run_daemon: Any, notify_socket: tuple[NotifySocket, str]
) -> None:
    receiver, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    daemon = Echo()
    SystemdNotifier(daemon, environ=env, status_interval=60).install()
    runner = run_daemon(daemon, clock=FakeClock())
    assert receiver.pending() == [{"READY": "1"}, {"STATUS": IDLE_STATUS}]
    runner.advance(1.499)
    assert receiver.pending() == []
    runner.advance(0.001)
    assert receiver.pending() == [{"WATCHDOG": "1"}]
    runner.advance(4.5)
    assert receiver.pending() == [{"WATCHDOG": "1"}] * 3
    runner.stop()
    assert receiver.pending() == [
        {"STOPPING": "1"},
        {"STATUS": "stopping: 0 connection(s) left"},
    ]


@pytest.mark.parametrize(
    "env",
    [
        {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"},  # another process's watchdog
        {"WATCHDOG_USEC": "garbage"},
        {},
    ],
    ids=["other-pid", "garbage", "unset"],
)
def test_no_watchdog_pings_unless_asked_for_us(
    run_daemon: Any, notify_socket: tuple[NotifySocket, str], env: dict[str, str]
) -> None:
    receiver, path = notify_socket
    daemon = Echo()
    SystemdNotifier(daemon, environ={"NOTIFY_SOCKET": path, **env}, status_interval=5).install()
    runner = run_daemon(daemon, clock=FakeClock())
    assert [set(m) for m in receiver.pending()] == [{"READY"}, {"STATUS"}]
    runner.advance(10)
    assert [set(m) for m in receiver.pending()] == [{"STATUS"}, {"STATUS"}]  # at 5 s and 10 s


def test_reload_is_bracketed_by_reloading_and_ready(
    run_daemon: Any, notify_socket: tuple[NotifySocket, str]
) -> None:
    receiver, path = notify_socket

    class Failing(Echo):
        def on_reload(self) -> None:
            raise RuntimeError("bad config")

    daemon = Failing()
    SystemdNotifier(daemon, environ={"NOTIFY_SOCKET": path}).install()
    runner = run_daemon(daemon, clock=FakeClock())
    receiver.pending()
    with pytest.raises(RuntimeError):
        runner.call(daemon.reload)
    messages = receiver.pending()
    assert [sorted(m) for m in messages[:2]] == [["MONOTONIC_USEC", "RELOADING"], ["READY"]]


# -- socket activation: the variables ------------------------------------------------


def pass_fds(*socks: socket.socket) -> None:
    """Put ``socks`` at FIRST_FD, FIRST_FD+1, ... (systemd: 3, 4, ...) and close the originals."""
    for i, sock in enumerate(socks):
        os.dup2(sock.fileno(), FIRST_FD + i, inheritable=True)
        sock.close()


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.fixture
def passed() -> Iterator[list[int]]:
    """Closes whatever the code under test left open of the passed descriptors.

    Request it before ``run_daemon``, so it is torn down after the daemon stopped.
    """
    fds: list[int] = []
    yield fds
    for fd in range(FIRST_FD, FIRST_FD + 4):
        if fd_is_open(fd):
            os.close(fd)


def listening(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen()
    return sock


def environ(count: int, names: str | None = None, pid: int | None = None) -> dict[str, str]:
    env = {"LISTEN_PID": str(os.getpid() if pid is None else pid), "LISTEN_FDS": str(count)}
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    return env


class TwoPorts(Daemon):
    listen = [
        Endpoint("tcp://127.0.0.1:0", name="api"),
        Endpoint("tcp://127.0.0.1:0", name="admin"),
    ]

    def on_read(self, conn: Any, data: bytes) -> None:
        conn.write(f"{conn.endpoint.name}:".encode() + data)


def test_listen_fds_reads_and_unsets_the_variables(passed: list[int]) -> None:
    a, b = listening(), listening()
    ports = [a.getsockname()[1], b.getsockname()[1]]
    pass_fds(a, b)
    env = environ(2, "one:two")
    socks = listen_fds(environ=env, first_fd=FIRST_FD)
    try:
        assert [(name, s.getsockname()[1]) for name, s in socks] == list(
            zip(["one", "two"], ports, strict=True)
        )
        assert not os.get_inheritable(FIRST_FD)  # close-on-exec, as sd_listen_fds makes them
        assert env == {}
    finally:
        for _, sock in socks:
            sock.close()


def test_listen_fds_ignores_variables_meant_for_another_process(passed: list[int]) -> None:
    env = environ(1, pid=1)
    assert listen_fds(environ=env, first_fd=FIRST_FD) == []
    assert env == {}  # unset all the same, so our children do not take them either


def test_named_sockets_go_to_their_endpoints(passed: list[int], run_daemon: Any) -> None:
    api, admin = listening(), listening()
    ports = {"api": api.getsockname()[1], "admin": admin.getsockname()[1]}
    pass_fds(admin, api)  # not in listen order: the names decide
    daemon = TwoPorts()
    assert adopt_listen_fds(daemon, environ=environ(2, "admin:api"), first_fd=FIRST_FD) == [
        "admin",
        "api",
    ]
    run_daemon(daemon)
    for name, port in ports.items():
        assert daemon.address(name).port == port
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as client:
            client.sendall(b"hi\n")
            assert recv_until(client, b"\n") == f"{name}:hi\n".encode()


@pytest.mark.parametrize("names", [None, "unknown:unknown", "app.socket:app.socket"])
def test_unnamed_sockets_go_to_the_endpoints_in_order(
    passed: list[int], run_daemon: Any, names: str | None
) -> None:
    first, second = listening(), listening()
    ports = [first.getsockname()[1], second.getsockname()[1]]
    pass_fds(first, second)
    daemon = TwoPorts()
    adopt_listen_fds(daemon, environ=environ(2, names), first_fd=FIRST_FD)
    run_daemon(daemon)
    assert [daemon.address("api").port, daemon.address("admin").port] == ports


def test_endpoints_without_a_socket_bind_as_usual(passed: list[int], run_daemon: Any) -> None:
    admin = listening()
    port = admin.getsockname()[1]
    pass_fds(admin)
    daemon = TwoPorts()
    assert adopt_listen_fds(daemon, environ=environ(1, "admin"), first_fd=FIRST_FD) == ["admin"]
    run_daemon(daemon)
    assert daemon.address("admin").port == port
    assert daemon.address("api").port not in (0, port)


def datagram() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def unix_listening(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "u.sock"))
    sock.listen()
    return sock


@pytest.mark.parametrize(
    ("make", "names", "message"),
    [
        (lambda tmp: [listening()], "bogus", "a socket named 'bogus' (descriptor 900) but no "),
        (lambda tmp: [listening() for _ in range(3)], None, "3 unnamed socket(s) but only 2"),
        (lambda tmp: [datagram()], "api", "needs a SOCK_STREAM socket, but descriptor 900 is"),
        (lambda tmp: [unix_listening(tmp)], "api", "needs a TCP/UDP socket"),
        (lambda tmp: [socket.socket()], "api", "is not listening (Accept=yes"),
        (lambda tmp: [listening(), listening()], "api:api", "two sockets are named 'api'"),
        (lambda tmp: [listening()], "api:admin", "names 2 socket(s) but LISTEN_FDS=1"),
    ],
    ids=["unknown-name", "too-many", "datagram", "unix", "not-listening", "twice", "count"],
)
def test_sockets_no_endpoint_can_take_are_a_clear_error(
    tmp_path: Path, passed: list[int], make: Any, names: str | None, message: str
) -> None:
    socks = make(tmp_path)
    count = len(socks)
    pass_fds(*socks)
    daemon = TwoPorts()
    with pytest.raises(ConfigError, match="socket activation: |LISTEN_FDNAMES") as info:
        adopt_listen_fds(daemon, environ=environ(count, names), first_fd=FIRST_FD)
    assert message in str(info.value)
    assert not any(fd_is_open(FIRST_FD + i) for i in range(count))  # closed, not leaked
    assert daemon.inherited_sockets == {}


def test_a_descriptor_that_is_not_a_socket_is_a_clear_error(passed: list[int]) -> None:
    read, write = os.pipe()
    os.dup2(read, FIRST_FD)
    os.close(read)
    os.close(write)
    with pytest.raises(ConfigError, match="descriptor 900 .* is not a usable socket"):
        listen_fds(environ=environ(1), first_fd=FIRST_FD)


# -- socket activation: a real process ----------------------------------------------

TWO_PORTS = """
from daemonkit import Daemon, Endpoint

class TwoPorts(Daemon):
    listen = [Endpoint("tcp://127.0.0.1:{api}", name="api"),
              Endpoint("tcp://127.0.0.1:{admin}", name="admin")]

    def on_read(self, conn, data):
        conn.write(conn.endpoint.name.encode() + b":" + data)
"""


def test_a_real_daemon_serves_inherited_sockets_without_binding(tmp_path: Path) -> None:
    api, admin = listening(), listening()
    ports = {"api": api.getsockname()[1], "admin": admin.getsockname()[1]}
    target = tmp_path / "two.py"
    # Configured on the very ports the test holds: binding them would fail.
    target.write_text(TWO_PORTS.format(**ports))
    fds = [admin.fileno(), api.fileno()]
    proc = subprocess.Popen(
        [PYTHON, "-c", ACTIVATE, ",".join(map(str, fds)), str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(
            os.environ, NO_COLOR="1", LISTEN_FDS="2", LISTEN_FDNAMES="admin:api", NOTIFY_SOCKET=""
        ),
        cwd=ROOT,
        pass_fds=fds,
    )
    try:
        for name, port in ports.items():
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as client:
                client.sendall(b"hi\n")
                assert recv_until(client, b"\n") == f"{name}:hi\n".encode()
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, DEADLINE)
        assert code == 0, err
        assert "socket activation: endpoint admin takes descriptor 3" in err
        assert "socket activation: endpoint api takes descriptor 4" in err
    finally:
        api.close()
        admin.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_real_daemon_refuses_a_socket_it_cannot_place(tmp_path: Path) -> None:
    sock = listening()
    proc = subprocess.Popen(
        [PYTHON, "-c", ACTIVATE, str(sock.fileno()), str(ROOT / "examples" / "echo_daemon.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, NO_COLOR="1", LISTEN_FDS="1", LISTEN_FDNAMES="metrics"),
        cwd=ROOT,
        pass_fds=[sock.fileno()],
    )
    try:
        code, err = finish(proc, DEADLINE)
    finally:
        sock.close()
    assert code == 4, err
    assert err == (
        "daemonkit: error: socket activation: systemd passed a socket named 'metrics' "
        "(descriptor 3) but no endpoint has that name; endpoints: tcp "
        "(set FileDescriptorName= to one)\n"
    )
