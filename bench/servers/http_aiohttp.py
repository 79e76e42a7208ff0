"""Benchmark peer: the hello world of bench/http_ws.py on aiohttp.

``web.run_app`` with one handler and no access log, on aiohttp's default
event loop (the stdlib asyncio loop). aiohttp adds ``Date`` and ``Server``.
Run as ``python bench/servers/http_aiohttp.py PORT``.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    """Answer ``/`` with ``Hello, world!``."""
    return web.Response(text="Hello, world!\n")


def main() -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
