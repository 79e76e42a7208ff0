"""Several endpoints in one daemon: their own framing and handler, names, groups, the CLI."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest

from daemonkit import (
    CloseReason,
    ConfigError,
    Connection,
    Daemon,
    Endpoint,
    Handler,
    LengthPrefixed,
    Lines,
)
from daemonkit import cli as cli_module
from daemonkit.daemon import override_listen
from daemonkit.framework.groups import Members
from daemonkit.testing import DaemonRunner
from tests.helpers import daemonkit_log_to, free_port, recv_until

StartDaemon = Callable[..., DaemonRunner]


class Upper(Handler):
    """A separate handler object: answers lines in upper case and counts its closes."""

    def __init__(self) -> None:
        self.closed: list[str] = []

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line.upper())

    def on_close(self, conn: Connection, reason: CloseReason) -> None:
        self.closed.append(str(reason))


class Two(Daemon):
    framing = Lines

    def __init__(self, **settings: Any) -> None:
        self.upper = Upper()
        self.seen: list[tuple[str, str | None]] = []
        settings.setdefault(
            "listen",
            [
                Endpoint("tcp://127.0.0.1:0", name="echo"),
                Endpoint("tcp://127.0.0.1:0", name="upper", handler=self.upper),
                Endpoint("tcp://127.0.0.1:0", name="binary", framing=LengthPrefixed),
            ],
        )
        super().__init__(**settings)

    def on_accept(self, conn: Connection) -> None:
        endpoint = conn.endpoint
        assert endpoint is not None
        self.seen.append((endpoint.name or "", endpoint.url))

    def on_read(self, conn: Connection, frame: bytes) -> None:
        conn.send(frame)


def connect(address: Any) -> socket.socket:
    return socket.create_connection((address.host, address.port), timeout=5)


def test_each_endpoint_has_its_framing_and_handler(run_daemon: StartDaemon) -> None:
    daemon = Two()
    runner = run_daemon(daemon)
    assert [e.name for e in daemon.endpoints] == ["echo", "upper", "binary"]
    assert len(daemon.addresses) == 3
    with connect(daemon.address("echo")) as echo, connect(daemon.address("upper")) as upper:
        echo.sendall(b"hello\n")
        upper.sendall(b"hello\n")
        assert recv_until(echo, b"\n") == b"hello\n"
        assert recv_until(upper, b"\n") == b"HELLO\n"
    with connect(daemon.address("binary")) as binary:
        binary.sendall(b"\x00\x00\x00\x03abc")
        assert recv_until(binary, b"abc") == b"\x00\x00\x00\x03abc"
    runner.wait_for(lambda: len(daemon.connections) == 0)
    # The daemon's own on_accept ran for its endpoints only; the Upper handler
    # (a Handler without on_accept of its own) used the default.
    assert [name for name, _ in daemon.seen] == ["echo", "binary"]
    assert daemon.upper.closed == ["peer closed"]
    assert daemon.upper.daemon is daemon
    assert daemon.stats["accepted"] == 3 and daemon.stats["closed"] == 3


def test_endpoint_names_default_to_the_scheme_and_are_unique() -> None:
    daemon = Daemon(listen=["tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "unix:///tmp/x.sock"])
    assert [e.name for e in daemon.endpoints] == ["tcp", "tcp2", "unix"]
    with pytest.raises(ConfigError, match="same name"):
        Daemon(listen=[Endpoint("tcp://:1", name="a"), Endpoint("tcp://:2", name="a")])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Endpoint("tls://127.0.0.1:0"), "needs certfile"),
        (lambda: Endpoint("tcp://127.0.0.1:0", certfile="c.pem", keyfile="k.pem"), "only"),
        (lambda: Endpoint("http://127.0.0.1:0", framing=Lines), "frames HTTP itself"),
        (lambda: Endpoint("udp://127.0.0.1:0", framing=Lines), "whole datagrams"),
        (lambda: Endpoint("tcp://127.0.0.1:0", name="bad name"), "endpoint name"),
        (lambda: Daemon(listen=Endpoint("tcp://127.0.0.1:0", bogus=1)), "bogus"),
        (lambda: Endpoint("ftp://127.0.0.1:0"), "unknown scheme"),
    ],
)
def test_impossible_endpoints_are_refused(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_a_handler_may_be_any_object_with_the_callbacks(run_daemon: StartDaemon) -> None:
    class Plain:  # not a Handler subclass: missing callbacks get the defaults
        def on_read(self, conn: Connection, line: bytes) -> None:
            conn.send(b"plain " + line)

    daemon = Daemon(listen=Endpoint("tcp://127.0.0.1:0", handler=Plain()), framing=Lines)
    run_daemon(daemon)
    with connect(daemon.addresses[0]) as sock:
        sock.sendall(b"x\n")
        assert recv_until(sock, b"\n") == b"plain x\n"


def test_a_handler_error_is_isolated_and_counted(run_daemon: StartDaemon) -> None:
    class Broken(Handler):
        def on_read(self, conn: Connection, line: bytes) -> None:
            raise RuntimeError("boom")

    daemon = Two(
        listen=[
            Endpoint("tcp://127.0.0.1:0", name="ok"),
            Endpoint("tcp://127.0.0.1:0", name="broken", handler=Broken()),
        ]
    )
    runner = run_daemon(daemon)
    with connect(daemon.address("broken")) as bad, connect(daemon.address("ok")) as good:
        bad.sendall(b"x\n")
        assert bad.recv(10) == b""  # closed by the default on_error
        good.sendall(b"still here\n")
        assert recv_until(good, b"\n") == b"still here\n"
    runner.wait_for(lambda: daemon.stats["errors"] == 1)


def test_groups_broadcast_and_forget_closed_members(run_daemon: StartDaemon) -> None:
    class Room(Daemon):
        listen = "tcp://127.0.0.1:0"
        framing = Lines

        def on_accept(self, conn: Connection) -> None:
            self.group("room").add(conn)

        def on_read(self, conn: Connection, line: bytes) -> None:
            self.group("room").broadcast(line, exclude=conn)

    daemon = Room()
    runner = run_daemon(daemon)
    a, b, c = (runner.connect() for _ in range(3))
    with a, b, c:
        a.sendall(b"hi all\n")
        assert recv_until(b, b"\n") == b"hi all\n"
        assert recv_until(c, b"\n") == b"hi all\n"
        assert runner.call(lambda: len(daemon.group("room"))) == 3
        c.close()
        runner.wait_for(lambda: len(daemon.group("room")) == 2)
    runner.wait_for(lambda: not daemon.groups)


def test_a_slow_group_member_is_skipped_not_waited_for(run_daemon: StartDaemon) -> None:
    class Room(Daemon):
        listen = "tcp://127.0.0.1:0"
        framing = Lines
        write_high_water = 4096
        write_low_water = 1024

        def on_accept(self, conn: Connection) -> None:
            self.group("room").add(conn)

    daemon = Room()
    runner = run_daemon(daemon)
    with runner.connect() as slow, runner.connect() as fast:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        line = b"x" * 65535
        for _ in range(400):  # up to ~26 MB: past any loopback socket buffer
            runner.call(lambda: daemon.group("room").broadcast(line))
            got = 0
            while got < len(line) + 1:  # the fast member keeps up
                got += len(fast.recv(1 << 20))
            if runner.call(lambda: daemon.group("room").skipped) > 0:
                break
        group = runner.call(lambda: daemon.group("room"))
        assert group.skipped > 0
        assert len(group) == 2  # skip keeps the slow member
        delivered = runner.call(lambda: group.broadcast(line, policy="drop"))
        assert delivered == 1 and group.dropped == 1
        assert len(group) == 1
        with pytest.raises(ValueError, match="policy"):
            group.broadcast(line, policy="wait")


def test_a_group_lists_its_members_with_their_meta(run_daemon: StartDaemon) -> None:
    """Without a broker the listing is this process's members, done at once, callback soon."""

    class Room(Daemon):
        listen = "tcp://127.0.0.1:0"
        framing = Lines

        def on_accept(self, conn: Connection) -> None:
            self.group("room").add(conn, meta={"nick": f"n{conn.id}"})

    daemon = Room()
    runner = run_daemon(daemon)
    got: list[Members] = []
    clients = [runner.connect() for _ in range(3)]
    try:

        def listing(**options: Any) -> tuple[bool, asyncio.Future[Members]]:
            future = daemon.group("room").members(got.append, **options)
            return bool(got), future  # the callback has not run yet when members() returns

        early, future = runner.call(listing)
        runner.wait_for(lambda: len(got) == 1)
        assert not early and future.result() is got[0]
        found = got[0]
        assert found.complete and found.missing == () and len(found.members) == 3
        peers = sorted("{}:{}".format(*sock.getsockname()[:2]) for sock in clients)
        assert sorted(m.peer for m in found.members) == peers
        assert {m.process for m in found.members} == {"local"}
        assert all(m.meta == {"nick": f"n{m.id}"} for m in found.members)
        found.members[0].meta["nick"] = "changed"  # type: ignore[index]  # a copy: no effect

        early, future = runner.call(lambda: listing(limit=2))
        runner.wait_for(lambda: len(got) == 2)
        assert len(got[1].members) == 2 and got[1].truncated and not got[1].complete
        assert all(m.meta == {"nick": f"n{m.id}"} for m in got[1].members)

        errors: list[logging.LogRecord] = []

        def boom(found: Members) -> None:
            raise RuntimeError("boom")

        with daemonkit_log_to(lambda r: errors.append(r) if r.levelno >= logging.ERROR else None):
            future = runner.call(lambda: daemon.group("room").members(boom))
            runner.wait_for(lambda: bool(errors))
        assert "members() listing failed: RuntimeError: boom" in errors[0].getMessage()
        assert len(future.result().members) == 3  # the future has it all the same
    finally:
        for sock in clients:
            sock.close()


def test_a_listing_and_a_member_meta_refuse_bad_values() -> None:
    group = Daemon().group("room")
    member: Any = object()  # the meta is checked before the member is looked at
    with pytest.raises(TypeError, match="meta is a dict"):
        group.add(member, meta=["nick"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="maps str to str"):
        group.add(member, meta={"nested": {"a": 1}})
    with pytest.raises(ValueError, match="MEMBER_META_MAX=256"):
        group.add(member, meta={"bio": "x" * 300})
    with pytest.raises(ValueError, match="MEMBERS_LIMIT=1000"):
        group.members(limit=1001)
    with pytest.raises(TypeError, match="whole number"):
        group.members(limit=True)
    with pytest.raises(ConfigError, match="members timeout"):
        group.members(timeout=float("inf"))
    with pytest.raises(RuntimeError, match="loop thread"):
        group.members()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["api=tcp://0.0.0.0:9000"], ["tcp://127.0.0.1:1", "tcp://0.0.0.0:9000"]),
        (["tcp://:5", "tcp://:6"], ["tcp://:5", "tcp://:6"]),
    ],
)
def test_override_listen_by_name_or_position(given: list[str], expected: list[str]) -> None:
    listen = [
        Endpoint("tcp://127.0.0.1:1", name="lines", framing=Lines),
        Endpoint("tcp://127.0.0.1:2", name="api"),
    ]
    result = override_listen(listen, given)
    assert [e.url for e in result] == expected
    assert result[0].framing is Lines  # settings survive the move


def test_override_listen_errors_name_the_endpoints() -> None:
    listen = [Endpoint("tcp://:1", name="lines"), Endpoint("tcp://:2", name="api")]
    with pytest.raises(ConfigError, match="no endpoint named 'web'; there are: lines, api"):
        override_listen(listen, ["web=tcp://:3"])
    with pytest.raises(ConfigError, match="move them by name"):
        override_listen(listen, ["tcp://:3"])
    with pytest.raises(ConfigError, match="not both"):
        override_listen(listen, ["api=tcp://:3", "tcp://:4"])
    # One endpoint and several URLs: each URL gets a copy of it.
    copies = override_listen(Endpoint("tcp://:1", framing=Lines), ["tcp://:2", "tcp://:3"])
    assert [e.framing for e in copies] == [Lines, Lines]


def test_cli_moves_an_endpoint_by_name(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two.py"
    path.write_text(
        "from daemonkit import Daemon, Endpoint, Lines\n"
        "class TwoPorts(Daemon):\n"
        "    listen = [Endpoint('tcp://127.0.0.1:7001', name='lines', framing=Lines),\n"
        "              Endpoint('tcp://127.0.0.1:7002', name='raw')]\n"
    )
    port = free_port()
    code = cli_module.main([str(path), "--check", "--listen", f"raw=tcp://127.0.0.1:{port}"])
    assert code == 0
    assert f"tcp://127.0.0.1:7001, tcp://127.0.0.1:{port}" in capsys.readouterr().out
    code = cli_module.main([str(path), "--check", "--listen", "web=tcp://127.0.0.1:1"])
    assert code == cli_module.EXIT_CONFIG
    assert "no endpoint named 'web'" in capsys.readouterr().err


def test_adopt_serves_an_endpoint_on_an_inherited_socket(run_daemon: StartDaemon) -> None:
    from daemonkit.core.endpoints import bind_socket, parse_endpoint

    inherited = bind_socket(parse_endpoint("tcp://127.0.0.1:0"))
    port = inherited.getsockname()[1]
    daemon = Two()
    daemon.adopt("upper", inherited)  # as systemd or an upgrading parent would hand it over
    run_daemon(daemon)
    assert daemon.address("upper").port == port
    with connect(daemon.address("upper")) as sock:
        sock.sendall(b"adopted\n")
        assert recv_until(sock, b"\n") == b"ADOPTED\n"


def test_adopt_refuses_what_cannot_fit() -> None:
    daemon = Two()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(ConfigError, match="cannot use a SOCK_DGRAM socket"):
            daemon.adopt("echo", udp)
        with pytest.raises(KeyError, match="no endpoint named 'web'"):
            daemon.adopt("web", udp)
