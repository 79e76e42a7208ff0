"""examples/udp_stats.py: its parser in-process, and the daemon as a real process."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import PYTHON, ROOT, free_port, load_example, wait_for_port

TIMEOUT = 5.0  # per blocking operation; a passing test never waits this long


stats = load_example("udp_stats")


@pytest.mark.parametrize(
    ("data", "counters", "invalid"),
    [
        (b"hits:1|c", [("hits", 1)], 0),
        (b"hits:1|c\nerrors:-2|c\n", [("hits", 1), ("errors", -2)], 0),
        (b"a.b-c_d:10|c\r\n\n", [("a.b-c_d", 10)], 0),
        (b"", [], 0),
        (b"hits:1|g", [], 1),  # a gauge: not a counter
        (b"hits:x|c", [], 1),
        (b"hits|c", [], 1),
        (b"bad name:1|c", [], 1),
        (b"\xff\xfe:1|c", [], 1),
        (b"n" * 129 + b":1|c", [], 1),
        (b"ok:1|c\ngarbage\nok:2|c", [("ok", 1), ("ok", 2)], 1),
    ],
)
def test_parse(data: bytes, counters: list[tuple[str, int]], invalid: int) -> None:
    assert stats.parse(data) == (counters, invalid)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def daemon() -> Iterator[tuple[int, int]]:
    """The example as a real process on free ports: yields (udp port, http port)."""
    udp_port, http_port = free_udp_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.pop("PYTHONASYNCIODEBUG", None)
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "daemonkit",
            str(ROOT / "examples" / "udp_stats.py"),
            "--listen",
            f"udp=udp://127.0.0.1:{udp_port}",
            "--listen",
            f"http=http://127.0.0.1:{http_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        wait_for_port(http_port, proc)
        yield udp_port, http_port
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT * 2)
        assert proc.returncode == 0, err.decode()
        assert f"listening on udp://127.0.0.1:{udp_port}" in err.decode()
        assert f"listening on http://127.0.0.1:{http_port}" in err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def report(http_port: int, path: str = "/") -> tuple[int, Any]:
    client = http.client.HTTPConnection("127.0.0.1", http_port, timeout=TIMEOUT)
    try:
        client.request("GET", path)
        response = client.getresponse()
        body = response.read()
        if response.status != 200:
            return response.status, body
        assert response.getheader("content-type") == "application/json"
        return response.status, json.loads(body)
    finally:
        client.close()


def wait_report(http_port: int, datagrams: int) -> Any:
    """Poll the report until it has counted ``datagrams`` (UDP is asynchronous)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        status, body = report(http_port)
        assert status == 200
        if body["datagrams"] >= datagrams or time.monotonic() > deadline:
            return body
        time.sleep(0.01)


@pytest.mark.slow
def test_counts_datagrams_and_reports_them_as_json(daemon: tuple[int, int]) -> None:
    udp_port, http_port = daemon
    assert report(http_port) == (
        200,
        {"datagrams": 0, "bytes": 0, "invalid": 0, "senders": {}, "counters": {}},
    )
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
    ):
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        sent = [
            (a, b"hits:1|c"),
            (a, b"hits:2|c\nerrors:1|c"),
            (b, b"hits:3|c\nnonsense"),
            (b, b""),
            (b, b"x" * (stats.MAX_DATAGRAM + 1)),  # oversize: dropped before counting
        ]
        for sock, data in sent:
            sock.sendto(data, ("127.0.0.1", udp_port))
        body = wait_report(http_port, 4)
        names = {f"127.0.0.1:{s.getsockname()[1]}": s for s in (a, b)}
    assert set(body["senders"]) == set(names)
    assert sorted(body["senders"].values()) == [2, 2]
    assert body == {
        "datagrams": 4,
        "bytes": sum(len(d) for _, d in sent[:4]),
        "invalid": 1,
        "senders": body["senders"],
        "counters": {"hits": 6, "errors": 1},
    }
    assert report(http_port, "/nope")[0] == 404
