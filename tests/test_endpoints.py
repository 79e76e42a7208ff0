"""Endpoint parsing and binding."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest

from daemonkit.core.endpoints import Address, address_of, bind_socket, parse_endpoint
from daemonkit.errors import EndpointError


@pytest.mark.parametrize(
    ("text", "address", "canonical"),
    [
        ("tcp://127.0.0.1:7000", Address("tcp", "127.0.0.1", 7000), "tcp://127.0.0.1:7000"),
        ("TCP://localhost:0", Address("tcp", "localhost", 0), "tcp://localhost:0"),
        ("tcp://[::1]:7000", Address("tcp", "::1", 7000), "tcp://[::1]:7000"),
        ("tcp://:7000", Address("tcp", "", 7000), "tcp://:7000"),
        ("unix:///run/app.sock", Address("unix", path="/run/app.sock"), "unix:///run/app.sock"),
        ("unix://rel.sock", Address("unix", path="rel.sock"), "unix://rel.sock"),
    ],
)
def test_parse_valid(text: str, address: Address, canonical: str) -> None:
    parsed = parse_endpoint(text)
    assert parsed == address
    assert str(parsed) == canonical
    assert parse_endpoint(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:7000", "has no scheme"),
        ("ftp://x:21", "unknown scheme 'ftp'"),
        ("tcp://127.0.0.1", "has no port"),
        ("tcp://127.0.0.1:http", "is not a number"),
        ("tcp://127.0.0.1:70000", "out of range"),
        ("tcp://::1:7000", "put IPv6 addresses in brackets"),
        ("tcp://[::1]7000", "write IPv6 as"),
        ("tcp://[localhost]:1", "brackets are only for IPv6"),
        ("tcp://host:1/path", "has no path"),
        ("unix://", "has no path"),
        ("unix://a\0b", "NUL"),
        ("tcp://127.0.0.1:-1", "is not a number"),
    ],
)
def test_parse_invalid(text: str, message: str) -> None:
    with pytest.raises(EndpointError, match=message):
        parse_endpoint(text)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(EndpointError, match="must be a string"):
        parse_endpoint(7000)  # type: ignore[arg-type]


def test_bind_tcp_ephemeral_and_in_use() -> None:
    sock = bind_socket(parse_endpoint("tcp://127.0.0.1:0"))
    with sock:
        bound = address_of(sock)
        assert bound.host == "127.0.0.1" and bound.port > 0
        assert not sock.getblocking()
        with pytest.raises(OSError) as info:
            bind_socket(bound)
        assert info.value.errno == errno.EADDRINUSE


def test_bind_hostname() -> None:
    with bind_socket(parse_endpoint("tcp://localhost:0")) as sock:
        assert sock.family in (socket.AF_INET, socket.AF_INET6)


def test_bind_unix_removes_stale_socket_but_not_live_one(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays behind, as after a crash
    assert path.exists()
    live = bind_socket(parse_endpoint(f"unix://{path}"))
    with live:
        assert address_of(live) == Address("unix", path=str(path))
        with pytest.raises(OSError, match="another process is listening"):
            bind_socket(parse_endpoint(f"unix://{path}"))


def test_bind_unix_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("precious")
    with pytest.raises(OSError, match="not a socket"):
        bind_socket(parse_endpoint(f"unix://{path}"))
    assert path.read_text() == "precious"
