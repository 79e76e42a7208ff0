"""Peer: gevent's ``StreamServer``, one greenlet per connection.

Its fastest idiomatic forms, by ``--mode``:

* ``echo``: ``data = sock.recv(65536)``; ``sock.sendall(data)``;
* ``lines``: ``for line in sock.makefile("rb")``: ``sock.sendall(line)`` (the
  buffered file object splits the lines, one send per line);
* ``fanout``: each ``recv`` is ``sendall``-ed to every other connection.

Sets TCP_NODELAY on every connection (uvloop and asyncio do it by
default; without it the per-line sends would wait on delayed ACKs).
Listens with a backlog of 1024. Run:
``python bench/servers/gevent_server.py PORT [--mode echo|lines|fanout]``.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import gevent
from _probe import raise_nofile, start_lag_probe
from gevent.server import StreamServer

BACKLOG = 1024
READ_SIZE = 65536

#: Every socket of the fan-out server.
PEERS: dict[Any, None] = {}


def _nodelay(sock: Any) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def echo(sock: Any, address: Any) -> None:
    _nodelay(sock)
    recv, sendall = sock.recv, sock.sendall
    try:
        while data := recv(READ_SIZE):
            sendall(data)
    except OSError:
        pass


def lines(sock: Any, address: Any) -> None:
    _nodelay(sock)
    sendall = sock.sendall
    try:
        with sock.makefile("rb") as f:
            for line in f:
                sendall(line)
    except OSError:
        pass


def fanout(sock: Any, address: Any) -> None:
    _nodelay(sock)
    PEERS[sock] = None
    recv = sock.recv
    try:
        while data := recv(READ_SIZE):
            for peer in list(PEERS):
                if peer is not sock:
                    try:
                        peer.sendall(data)
                    except OSError:
                        PEERS.pop(peer, None)
    except OSError:
        pass
    finally:
        PEERS.pop(sock, None)


def main() -> None:
    parser = argparse.ArgumentParser(prog=sys.argv[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=("echo", "lines", "fanout"), default="echo")
    args = parser.parse_args()
    raise_nofile()
    handle: Callable[[Any, Any], None] = {"echo": echo, "lines": lines, "fanout": fanout}[args.mode]
    server = StreamServer(("127.0.0.1", args.port), handle, backlog=BACKLOG)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    probe = start_lag_probe(gevent.spawn_later)
    server.serve_forever()
    if probe is not None:
        probe.flush()


if __name__ == "__main__":
    main()
