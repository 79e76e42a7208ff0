"""UDP endpoints: whole datagrams in, whole datagrams out, nothing buffered.

A ``udp://`` endpoint has no connections. Its host, :class:`UdpHost`, binds
one datagram socket, watches it for READ on the reactor (a libevent-style
persistent watch, not asyncio's datagram transport: binding stays
synchronous and the hot path is one ``recvfrom_into`` loop), and calls the
handler's ``on_datagram(endpoint, data, addr)`` for each datagram. The
``endpoint`` argument is the host itself: answer with
``endpoint.sendto(data, addr)``.

Rules it keeps:

* **A datagram is delivered whole or not at all.** The receive buffer is one
  byte larger than ``max_datagram``, so a longer datagram is seen as such
  and dropped (counted in :attr:`UdpHost.oversize`, logged), never delivered
  cut.
* **Sending never blocks and never buffers.** :meth:`UdpHost.sendto` hands
  the datagram to the kernel or drops it (counted in
  :attr:`UdpHost.dropped`) and returns False: UDP may lose datagrams anyway,
  and an unbounded queue is how a long-running daemon dies.
* **Socket errors are never fatal.** An ICMP report (``ECONNREFUSED``,
  ``EHOSTUNREACH``...) surfacing from ``recvfrom`` or ``sendto`` is counted
  in :attr:`UdpHost.errors` and logged through a storm filter, and serving
  goes on: the error queue is emptied and the socket watched afresh, because
  uvloop stops watching a descriptor for good once it reported an error.
  (Linux, like the BSDs, does not report ICMP errors for unconnected UDP
  sockets unless ``IP_RECVERR`` is set, so by default there is nothing to
  report: a datagram to a closed port simply vanishes.)
* **One wake-up reads at most** :data:`RECV_BATCH` datagrams, so a flooded
  port cannot starve the others.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from daemonkit.core.endpoints import INHERIT, Address, address_of, bind_socket
from daemonkit.core.log import StormFilter
from daemonkit.core.reactor import READ
from daemonkit.errors import ConfigError
from daemonkit.framework.hosts import EndpointHost, EndpointOwner

if TYPE_CHECKING:
    from daemonkit.core.endpoints import Endpoint
    from daemonkit.core.reactor import Reactor, Watch

__all__ = ["DEFAULT_MAX_DATAGRAM", "MAX_DATAGRAM_LIMIT", "RECV_BATCH", "UdpHost"]

#: Largest datagram delivered by default: 65,507 bytes, the IPv4 UDP maximum
#: payload (65,535 - 20 IP header - 8 UDP header); libuv reads into 64 KiB.
DEFAULT_MAX_DATAGRAM = 65_507

#: Largest ``max_datagram`` accepted: the UDP length field is 16 bits, so no
#: datagram (IPv6 jumbograms aside) carries more than 65,535 - 8 bytes.
MAX_DATAGRAM_LIMIT = 65_527

#: Datagrams read per readiness wake-up before yielding to other work: libuv
#: reads up to 32 (uv__udp_recvmsg, "prevent loop starvation").
RECV_BATCH = 32

# sendto() errors that mean "no room right now": drop, never wait.
_NO_ROOM = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})

# Linux queues ICMP reports here when IP_RECVERR is on; a non-empty queue keeps
# the socket "readable" (EPOLLERR), so it must be drained or the loop spins.
_MSG_ERRQUEUE: int | None = getattr(socket, "MSG_ERRQUEUE", None)


def _peer(addr: Any) -> str:
    """``host:port`` (``[v6]:port``) for logs."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return str(addr)


class UdpHost(EndpointHost):
    """The host of a ``udp://`` endpoint, and the ``endpoint`` object ``on_datagram`` gets.

    The handler (the daemon unless the :class:`~daemonkit.core.endpoints.Endpoint`
    names another) must define ``on_datagram(endpoint, data, addr)``:
    ``endpoint`` is this host, ``data`` the datagram's bytes (at most
    ``max_datagram`` of them) and ``addr`` the sender, as the socket module
    gives it (``(host, port)`` for IPv4, a 4-tuple for IPv6). Answer with
    ``endpoint.sendto(reply, addr)``.

    Option (``Endpoint("udp://...", max_datagram=512)``): ``max_datagram``,
    the largest datagram delivered (default :data:`DEFAULT_MAX_DATAGRAM`);
    longer ones are dropped and counted in :attr:`oversize`. Any other
    option is a :class:`~daemonkit.errors.ConfigError`, as is a handler
    without ``on_datagram``.

    An exception raised by ``on_datagram`` is logged with the sender's
    address and counted in ``daemon.stats["errors"]``; that datagram is lost
    and the next one is delivered as usual. The handler's ``on_error`` is not
    called: its ``(conn, exc)`` signature is about connections, and UDP has
    none.

    Counters (read them, e.g. for a stats line): :attr:`received`,
    :attr:`bytes_in`, :attr:`oversize`, :attr:`sent`, :attr:`bytes_out`,
    :attr:`dropped`, :attr:`errors`.
    """

    #: The endpoint options this host reads.
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"max_datagram"})

    def __init__(self, daemon: EndpointOwner, endpoint: Endpoint) -> None:
        super().__init__(daemon, endpoint)
        if endpoint.idle_timeout is not INHERIT:
            raise ConfigError(f"{endpoint}: a udp endpoint has no connections; drop idle_timeout=")
        if getattr(self.handler, "on_datagram", None) is None:
            raise ConfigError(
                f"{endpoint} (endpoint {endpoint.name!r}): {type(self.handler).__name__} has no "
                "on_datagram(endpoint, data, addr) method, which a udp endpoint needs"
            )
        self._on_datagram: Callable[[UdpHost, bytes, Any], object] = self.callback("on_datagram")
        #: The largest datagram delivered; longer ones are dropped.
        self.max_datagram: int = DEFAULT_MAX_DATAGRAM
        self.check_options()
        #: Datagrams delivered to ``on_datagram``.
        self.received = 0
        #: Bytes in the datagrams delivered.
        self.bytes_in = 0
        #: Datagrams dropped for being longer than ``max_datagram``.
        self.oversize = 0
        #: Datagrams the kernel took from :meth:`sendto`.
        self.sent = 0
        #: Bytes in the datagrams sent.
        self.bytes_out = 0
        #: Datagrams :meth:`sendto` dropped: no room in the send buffer, or the socket closed.
        self.dropped = 0
        #: Socket errors reported by ``recvfrom``/``sendto`` (ICMP reports and others).
        self.errors = 0
        self.sock: socket.socket | None = None
        self._watch: Watch | None = None
        self._closed = False
        self._buffer = bytearray(0)
        self._view = memoryview(self._buffer)
        # Our own storm filter: a flood of oversize datagrams, unreachable
        # peers or failing callbacks writes one line per second, whatever
        # handlers the logger has (setup() adds one more on its handler).
        self._storm = StormFilter()

    def check_options(self) -> None:
        """Read the options this host knows and refuse the others, naming them."""
        options = self.refuse_unknown_options()
        size = options.get("max_datagram", DEFAULT_MAX_DATAGRAM)
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or not 1 <= size <= MAX_DATAGRAM_LIMIT
        ):
            raise ConfigError(
                f"{self.endpoint}: max_datagram must be a whole number of bytes from 1 to "
                f"{MAX_DATAGRAM_LIMIT}, not {size!r}"
            )
        self.max_datagram = size

    @property
    def name(self) -> str:
        """The endpoint's name (``udp`` unless given), as in ``--listen NAME=URL``."""
        return str(self.endpoint.name)

    # -- opening and closing -------------------------------------------------

    def open(self, reactor: Reactor) -> Address:
        """Bind the socket (receiving starts with :meth:`start`); return the bound address.

        Raises ``OSError`` (address in use, permission denied) for the daemon
        to report.
        """
        if self.sock is not None or self._closed:
            raise RuntimeError(f"{self!r} was already opened")
        sock = self.daemon.take_inherited(str(self.endpoint.name))
        if sock is None:
            sock = bind_socket(self.endpoint.address)
        else:
            sock.setblocking(False)  # inherited (systemd, an upgrade), already bound
        self.sock = sock
        # One byte more than the limit: a datagram that fills it was longer.
        self._buffer = bytearray(self.max_datagram + 1)
        self._view = memoryview(self._buffer)
        self.address = address_of(sock, "udp")
        return self.address

    def start(self) -> None:
        """Begin receiving (idempotent)."""
        if self.sock is not None and self._watch is None and not self._closed:
            self._watch = self.reactor.watch(self.sock, READ, self._on_readable)

    def pause(self) -> None:
        """Stop receiving; datagrams wait in the kernel's buffer (or are lost when it is full)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def close(self) -> None:
        """Stop receiving and close the socket; idempotent. :meth:`sendto` drops afterwards."""
        if self._closed:
            return
        self._closed = True
        self.pause()
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
        self._storm.flush()

    # -- sending ---------------------------------------------------------------

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any) -> bool:
        """Send one datagram to ``addr`` now; return True if the kernel took it.

        Never blocks and never queues: when the send buffer is full
        (``EAGAIN``/``ENOBUFS``) or the endpoint is closed, the datagram is
        dropped, counted in :attr:`dropped` and False returned. Other socket
        errors (an ICMP report such as ``ECONNREFUSED``, ``EMSGSIZE`` for a
        datagram too long to send) are logged, counted in :attr:`errors`, and
        also return False. Give ``addr`` as an IP address and port (such as
        the ``addr`` of ``on_datagram``): a host name would be resolved by a
        blocking DNS lookup. A ``TypeError`` for a bad ``data`` or ``addr``
        reaches the caller.
        """
        sock = self.sock
        if sock is None:
            self.dropped += 1
            return False
        try:
            count = sock.sendto(data, addr)
        except OSError as exc:
            if exc.errno in _NO_ROOM:
                self.dropped += 1
                self._report(
                    logging.WARNING,
                    "udp %s: send buffer full; datagram to %s dropped",
                    self.address,
                    _peer(addr),
                )
            else:
                self._socket_error("sendto", exc, addr)
            return False
        self.sent += 1
        self.bytes_out += count
        return True

    # -- receiving -------------------------------------------------------------

    def _on_readable(self, watch: Watch, what: int) -> None:
        sock = self.sock
        if sock is None:
            return
        recv = sock.recvfrom_into
        buffer = self._buffer
        view = self._view
        limit = self.max_datagram
        on_datagram = self._on_datagram
        got = 0
        for _ in range(RECV_BATCH):
            try:
                size, addr = recv(buffer)
            except BlockingIOError:
                break
            except OSError as exc:
                # A pending ICMP report (only with IP_RECVERR on Linux); the
                # next recvfrom goes on with the queue.
                self._socket_error("recvfrom", exc, None)
                continue
            got += 1
            if size > limit:
                self.oversize += 1
                self._report(
                    logging.WARNING,
                    "udp %s: datagram from %s is longer than max_datagram=%d; dropped",
                    self.address,
                    _peer(addr),
                    limit,
                )
                continue
            self.received += 1
            self.bytes_in += size
            try:
                on_datagram(self, view[:size].tobytes(), addr)
            except Exception as exc:
                self.daemon.stats["errors"] += 1
                self._report(
                    logging.ERROR,
                    "udp %s: on_datagram raised %s for a datagram from %s; datagram dropped",
                    self.address,
                    type(exc).__name__,
                    _peer(addr),
                    exc_info=exc,
                )
            if self._watch is None:  # the callback paused or closed us
                return
        if not got:
            # Woken with nothing to read: an error condition, not data.
            self._recover()

    def _recover(self) -> None:
        """After a socket error: empty the error queue and watch the socket afresh.

        With IP_RECVERR, Linux queues each ICMP report on the socket's error
        queue, and a non-empty queue keeps it ready (EPOLLERR): unread, the
        loop would spin. And uvloop (libuv's uv_poll) stops watching a
        descriptor for good after it reported POLLERR, without a word, where
        asyncio's selector goes on: watching afresh makes both go on.
        """
        sock = self.sock
        if sock is None:
            return
        if _MSG_ERRQUEUE is not None:
            for _ in range(RECV_BATCH):
                try:
                    sock.recvmsg(1, 1024, _MSG_ERRQUEUE)
                except OSError:
                    break
        if self._watch is not None:
            self._watch.cancel()
            self._watch = self.reactor.watch(sock, READ, self._on_readable)

    # -- logging -----------------------------------------------------------------

    def _socket_error(self, call: str, exc: OSError, addr: Any) -> None:
        self.errors += 1
        self._recover()
        to = "" if addr is None else f" to {_peer(addr)}"
        self._report(
            logging.WARNING,
            "udp %s: %s%s failed: %s (an ICMP report for an earlier datagram, or a local "
            "error); serving goes on",
            self.address,
            call,
            to,
            exc.strerror or exc,
        )

    def _report(
        self, level: int, msg: str, *args: object, exc_info: BaseException | None = None
    ) -> None:
        """Log through the storm filter: the first of a run, then one summary a second."""
        log = self.log
        if not log.isEnabledFor(level):
            return
        fn, lno, func, _ = log.findCaller(False, 2)
        record = log.makeRecord(
            log.name,
            level,
            fn,
            lno,
            msg,
            args,
            (type(exc_info), exc_info, exc_info.__traceback__) if exc_info is not None else None,
            func,
        )
        if self._storm.filter(record):
            log.handle(record)

    def __repr__(self) -> str:
        return f"<UdpHost {self.endpoint.name} {self.address or self.endpoint}>"
