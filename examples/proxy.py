"""Line proxy: each line a client sends goes to an upstream; the answer comes back.

One outbound link (``self.connect``) carries every client's lines to the
upstream, which must answer each line with one line, in order. The proxy
remembers who asked, in order, and hands each answer to its client. While
the upstream is down the link reconnects by itself (backoff 0.1 s .. 30 s)
and clients get ``ERR upstream down``.

Run it:   python -m daemonkit examples/echo_daemon.py      (an upstream on :7000)
          python -m daemonkit examples/proxy.py            (the proxy on :7001)
Try it:   printf 'hello\\n' | nc -q1 127.0.0.1 7001
"""

from collections import deque

from daemonkit import Daemon, Lines


class Upstream:
    """The link's handler: answers go back to the clients that asked, in order."""

    def __init__(self, proxy):
        self.proxy = proxy

    def on_connect(self, conn):
        conn.log.info("upstream up")

    def on_read(self, conn, answer):
        waiting = self.proxy.waiting
        if waiting:
            client = waiting.popleft()
            client.send(answer)  # a client that left meanwhile drops it (returns False)

    def on_close(self, conn, reason):
        # Questions in flight will never be answered: tell their clients.
        waiting = self.proxy.waiting
        while waiting:
            waiting.popleft().send(b"ERR upstream down")


class ProxyDaemon(Daemon):
    listen = "tcp://127.0.0.1:7001"
    framing = Lines

    def __init__(self, upstream="tcp://127.0.0.1:7000", **settings):
        super().__init__(**settings)
        self.upstream = upstream
        self.waiting = deque()  # the clients whose question is at the upstream, in order
        self.link = None

    def on_start(self):
        self.link = self.connect(self.upstream, handler=Upstream(self), framing=Lines)

    def on_read(self, conn, line):
        if not self.link.up:
            conn.send(b"ERR upstream down")
            return
        self.link.send(line)  # False only says "slow down": the line is on its way
        self.waiting.append(conn)
