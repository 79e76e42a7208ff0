"""Bots for bench/bots_protocols.py: an HTTP and a WebSocket load like wrk's and wsload's.

``HelloBot`` sends ``GET /`` and, in the closed model, the next one as soon as
the answer came back: wrk's load on one keep-alive connection (pipeline 1).
The body is checked, as wrk's status check would miss a wrong one.

``WsEchoBot`` sends one 64-byte text message and the next once its echo came
back: ``bench/wsload.c --mode echo --pipeline 1 --size 64`` on one
connection. It offers no compression, as wsload does not, so the server
sends plain frames to both. Each echo is compared with what was sent.

    python -m daemonkit bots bench/bots_protocols_bots.py:HelloBot -H http://127.0.0.1:PORT
    python -m daemonkit bots bench/bots_protocols_bots.py:WsEchoBot -H ws://127.0.0.1:PORT
"""

from __future__ import annotations

from typing import Any

from daemonkit.bots import HttpBot, WebSocketBot

#: What examples/http_hello.py answers to GET /.
HELLO_BODY = b"Hello, world!\n"
#: 64 printable bytes, as wsload sends with --size 64.
MESSAGE = "daemonkit-bots-websocket-echo-benchmark-message-0123456789abcdef"
assert len(MESSAGE) == 64


class HelloBot(HttpBot):
    """Closed loop, pipeline 1: GET /, wait for the answer, repeat."""

    def on_tick(self) -> None:
        self.get("/", name="hello")

    def on_read(self, response: Any) -> None:
        if response.body != HELLO_BODY:
            self.fail("hello", "wrong body")


class WsEchoBot(WebSocketBot):
    """Closed loop, pipeline 1: send a 64-byte text message, wait for its echo, repeat."""

    compression = False  # as wsload: no permessage-deflate offered

    def on_tick(self) -> None:
        self.request(MESSAGE, name="echo")

    def on_read(self, message: Any) -> None:
        if message != MESSAGE:
            self.fail("echo", "wrong echo")
