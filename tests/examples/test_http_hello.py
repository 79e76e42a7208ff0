"""examples/http_hello.py as a real process, queried over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from daemonkit import cli
from tests.helpers import PYTHON, ROOT, free_port, wait_for_port

TIMEOUT = 5.0  # per blocking operation; a passing test never waits this long
EXAMPLE = ROOT / "examples" / "http_hello.py"


@pytest.fixture
def port() -> Iterator[int]:
    """The example running on a free port; stopped with SIGTERM, which must exit 0."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.pop("PYTHONASYNCIODEBUG", None)
    proc = subprocess.Popen(
        [PYTHON, "-m", "daemonkit", str(EXAMPLE), "--listen", f"http://127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        wait_for_port(port, proc)
        yield port
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT * 2)
        assert proc.returncode == 0, err.decode()
        assert f"listening on http://127.0.0.1:{port}" in err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_hello_health_and_404(port: int) -> None:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        client.request("GET", "/")
        response = client.getresponse()
        assert (response.status, response.read()) == (200, b"Hello, world!\n")
        client.request("GET", "/health")  # the same keep-alive connection
        response = client.getresponse()
        assert response.status == 200
        assert response.getheader("content-type") == "application/json"
        assert json.loads(response.read()) == {"status": "ok", "connections": 1}
        client.request("GET", "/nowhere")
        response = client.getresponse()
        assert (response.status, response.read()) == (404, b"404 Not Found\n")
        client.request("POST", "/health", body=b"x")
        response = client.getresponse()
        assert (response.status, response.getheader("allow")) == (405, "GET, HEAD")
        response.read()
    finally:
        client.close()


def test_the_cli_loads_it() -> None:
    assert cli.main([str(EXAMPLE), "--check", "--listen", "http://127.0.0.1:0"]) == cli.EXIT_OK
