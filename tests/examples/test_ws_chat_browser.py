"""examples/ws_chat.py in a real browser: headless Chromium and a line client in one room.

Chromium (Debian's ``/usr/bin/chromium``) loads the chat page from the
daemon; the test drives the page through the DevTools protocol (CDP) over
a WebSocket, with the ``websockets`` client: ``Runtime.evaluate`` fills the
forms and submits them, and reads the page's log back from the DOM. A line
client on the daemon's other endpoint joins the same room; each side must
see the other's message. Skipped, with the reason, when no Chromium binary
is found. Every wait is bounded; Chromium is killed by its process group id
(it runs in a session of its own) in a ``finally``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from daemonkit.testing import DaemonRunner

from .test_chat import Client, load_example

ws_chat = load_example("ws_chat")

CHROMIUM = shutil.which("chromium") or next(
    (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None
)
START_TIMEOUT = 30.0  # Chromium's start on a loaded 2-core machine
WAIT = 10.0  # for anything the page or the daemon does

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)"),
]


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll *check* (another process is doing the work) until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class DevTools:
    """A minimal CDP client: ``Runtime.evaluate`` on one page target."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    def evaluate(self, expression: str) -> Any:
        call_id = next(self.ids)
        params = {"expression": expression, "returnByValue": True, "awaitPromise": False}
        self.ws.send(json.dumps({"id": call_id, "method": "Runtime.evaluate", "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=WAIT))
            if reply.get("id") != call_id:
                continue  # an event
            result = reply["result"]
            if "exceptionDetails" in result:
                raise AssertionError(f"{expression!r} raised: {result['exceptionDetails']}")
            return result["result"].get("value")

    def log(self) -> list[str]:
        """The page's log lines, oldest first."""
        lines = self.evaluate("[...document.querySelectorAll('#log li')].map(li => li.textContent)")
        return list(lines)

    def submit(self, form: str, **values: str) -> None:
        """Fill the inputs of *form* (by id) and submit it as a user would."""
        script = "".join(
            f"document.getElementById({name!r}).value = {json.dumps(value)};"
            for name, value in values.items()
        )
        self.evaluate(script + f"document.getElementById({form!r}).requestSubmit(); true")

    def wait_for_line(self, line: str) -> None:
        wait_until(lambda: line in self.log(), f"{line!r} in the page's log")


@contextlib.contextmanager
def chromium(url: str, profile: Path) -> Iterator[DevTools]:
    """Run headless Chromium on *url*; yield a DevTools client of its page."""
    assert CHROMIUM is not None
    args = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",  # the port is written to DevToolsActivePort
        "--no-first-run",
        "--disable-gpu",
        "--disable-extensions",
        "--disable-background-networking",
        url,
    ]
    with open(profile.parent / "chromium.log", "wb") as log:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        port_file = profile / "DevToolsActivePort"

        def port() -> int | None:
            if proc.poll() is not None:
                output = (profile.parent / "chromium.log").read_text(errors="replace")
                raise AssertionError(f"chromium exited with {proc.returncode}: {output[-2000:]}")
            text = port_file.read_text() if port_file.exists() else ""
            return int(text.split()[0]) if text.strip() else None

        devtools_port = wait_until(port, "Chromium's DevTools port", START_TIMEOUT)

        def page() -> str | None:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{devtools_port}/json/list", timeout=WAIT
            ) as answer:
                targets = json.load(answer)
            for target in targets:
                if target.get("type") == "page" and target.get("url", "").startswith(url):
                    return str(target["webSocketDebuggerUrl"])
            return None

        page_url = wait_until(page, "the chat page's DevTools target", START_TIMEOUT)
        with connect(page_url, open_timeout=WAIT, max_size=None, ping_interval=None) as ws:
            yield DevTools(ws)
    finally:
        # The whole session: the browser and the helpers it forked.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


class LineClient(Client):
    """The chat test's line client, on the ``lines`` endpoint."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.buf = b""


def test_a_browser_and_a_line_client_chat_in_one_room(tmp_path: Path) -> None:
    listen = ws_chat.endpoints("http://127.0.0.1:0", "tcp://127.0.0.1:0")
    daemon = ws_chat.WsChatDaemon(listen=listen)
    with DaemonRunner(daemon) as runner:
        web = runner.daemon.host("web").address
        lines = runner.daemon.host("lines").address
        assert web is not None and lines is not None
        page_url = f"http://127.0.0.1:{web.port}/"
        with chromium(page_url, tmp_path / "profile") as page:
            wait_until(
                lambda: (
                    page.evaluate("document.getElementById('status')?.textContent") == "connected"
                ),
                "the page's WebSocket to open",
            )
            page.submit("nick-form", nick="carol")
            page.wait_for_line("OK nick carol")
            page.submit("join-form", room="#lobby")
            page.wait_for_line("OK join #lobby")

            dave = LineClient(lines.port)
            try:
                assert dave.ask(b"NICK dave") == b"OK nick dave"
                assert dave.ask(b"JOIN #lobby") == b"OK join #lobby"
                page.wait_for_line("JOINED #lobby dave")

                page.submit("say-form", text="hello from Chromium ☃")
                assert dave.line() == "MSG #lobby carol hello from Chromium ☃".encode()
                page.wait_for_line("MSG #lobby carol hello from Chromium ☃")

                dave.send(b"SAY #lobby hello from a terminal")
                assert dave.line() == b"MSG #lobby dave hello from a terminal"
                page.wait_for_line("MSG #lobby dave hello from a terminal")
            finally:
                dave.close()
