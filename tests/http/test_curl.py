"""The HTTP endpoint against a real client: the curl binary."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from daemonkit import Daemon
from daemonkit.http import HttpConnection, HttpRequest
from daemonkit.testing import DaemonRunner

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="the curl binary is not installed")

StartDaemon = Callable[..., DaemonRunner]


class App(Daemon):
    listen = "http://127.0.0.1:0"

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.expected: list[bool] = []

    def on_request(self, conn: HttpConnection, request: HttpRequest) -> None:
        self.expected.append(request.expect_continue)
        body = request.body or f"{request.method} {request.path}\n".encode()
        conn.respond(200, {"content-type": "text/plain", "x-length": str(len(request.body))}, body)


def curl(
    runner: DaemonRunner, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run curl with *args*, ``BASE`` standing for the daemon's URL; it must succeed."""
    assert CURL is not None
    base = f"http://127.0.0.1:{runner.address.port}"
    argv = [CURL, "--silent", "--show-error", "--max-time", "10"]
    argv += [arg.replace("BASE", base) for arg in args]
    result = subprocess.run(argv, input=stdin, capture_output=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result


@pytest.fixture
def server(run_daemon: StartDaemon) -> tuple[App, DaemonRunner]:
    d = App()
    return d, run_daemon(d)


def test_get(server: tuple[App, DaemonRunner]) -> None:
    out = curl(server[1], "--include", "BASE/hello?x=1").stdout
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\ncontent-length: 11\r\n" in out
    assert out.endswith(b"\r\n\r\nGET /hello\n")


def test_head(server: tuple[App, DaemonRunner]) -> None:
    out = curl(server[1], "--head", "BASE/hello").stdout
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\ncontent-length: 12\r\n" in out  # of "HEAD /hello\n", not sent
    assert out.endswith(b"\r\n\r\n")  # headers only


def test_post_binary_data(server: tuple[App, DaemonRunner]) -> None:
    d, runner = server
    data = bytes(range(256)) * 64  # every byte value, 16 KiB
    assert curl(runner, "--data-binary", "@-", "BASE/upload", stdin=data).stdout == data
    assert d.expected == [False]


def test_post_with_expect_100_continue(server: tuple[App, DaemonRunner]) -> None:
    d, runner = server
    out = curl(
        runner,
        "--include",
        "--header",
        "Expect: 100-continue",
        "--data-binary",
        "payload",
        "BASE/upload",
    ).stdout
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert out.endswith(b"\r\n\r\npayload")
    assert d.expected == [True]


def test_two_urls_share_one_keep_alive_connection(server: tuple[App, DaemonRunner]) -> None:
    d, runner = server
    result = curl(runner, "--verbose", "BASE/one", "BASE/two")
    assert result.stdout == b"GET /one\nGET /two\n"
    assert b"Re-using existing connection" in result.stderr
    assert runner.call(lambda: d.stats["accepted"]) == 1
