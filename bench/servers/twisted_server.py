"""Peer: Twisted, on its default reactor for Linux (epoll).

Its fastest idiomatic forms, by ``--mode``:

* ``echo``: a ``Protocol`` whose ``dataReceived`` calls ``transport.write``
  (Twisted's own echo example);
* ``lines``: a ``LineReceiver`` (delimiter ``b"\\n"``) whose ``lineReceived``
  calls ``sendLine``;
* ``fanout``: a ``Protocol`` writing each ``dataReceived`` to every other
  connection of its factory (one write per subscriber per read; a
  ``LineReceiver`` chat would pay a call per line on top).

Sets TCP_NODELAY on every connection (uvloop and asyncio do it by default)
and listens with a backlog of 1024 (Twisted's default is 50). Run:
``python bench/servers/twisted_server.py PORT [--mode echo|lines|fanout]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, cast

from _probe import raise_nofile, start_lag_probe
from twisted.internet import epollreactor

epollreactor.install()  # type: ignore[no-untyped-call]

from twisted.internet import protocol  # noqa: E402
from twisted.internet import reactor as _reactor  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402

BACKLOG = 1024
#: The installed epoll reactor (typed Any: its interfaces are zope's, not mypy's).
reactor: Any = _reactor


class Echo(protocol.Protocol):
    def connectionMade(self) -> None:
        self.out: Any = cast(Any, self.transport)
        self.out.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        self.out.write(data)


class LineEcho(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536

    def connectionMade(self) -> None:
        self.out: Any = cast(Any, self.transport)
        self.out.setTcpNoDelay(True)

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line)  # type: ignore[no-untyped-call]


class Fanout(protocol.Protocol):
    def connectionMade(self) -> None:
        self.out: Any = cast(Any, self.transport)
        self.out.setTcpNoDelay(True)
        self.factory.peers[self] = None

    def dataReceived(self, data: bytes) -> None:
        for peer in self.factory.peers:
            if peer is not self:
                peer.out.write(data)

    def connectionLost(self, reason: object = None) -> None:
        self.factory.peers.pop(self, None)


class FanoutFactory(protocol.Factory):
    protocol = Fanout

    def __init__(self) -> None:
        self.peers: dict[Fanout, None] = {}


def main() -> None:
    parser = argparse.ArgumentParser(prog=sys.argv[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=("echo", "lines", "fanout"), default="echo")
    args = parser.parse_args()
    raise_nofile()
    if args.mode == "fanout":
        factory: protocol.Factory = FanoutFactory()
    else:
        factory = protocol.Factory.forProtocol(Echo if args.mode == "echo" else LineEcho)
    reactor.listenTCP(args.port, factory, backlog=BACKLOG, interface="127.0.0.1")
    probe = start_lag_probe(reactor.callLater)
    reactor.run()  # stops on SIGTERM / SIGINT
    if probe is not None:
        probe.flush()


if __name__ == "__main__":
    main()
