"""Benchmark peer: the hello world of bench/http_ws.py as a raw ASGI app on uvicorn.

uvicorn as its docs tune it for speed: uvloop, the httptools parser, one
worker (in this process), no access log, lifespan off (the app has no
startup). The app sends two prebuilt ASGI messages, the fastest idiomatic
form; uvicorn adds ``date`` and ``server``. Run as
``python bench/servers/http_uvicorn.py PORT``.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

Message = dict[str, Any]

START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"14"),
    ],
}
BODY: Message = {"type": "http.response.body", "body": b"Hello, world!\n"}


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Answer every request with ``Hello, world!``."""
    await send(START)
    await send(BODY)


def main() -> None:
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        workers=1,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
