"""Endpoints: where a daemon listens, and with which protocol and handler.

An endpoint string is how a user names a place to listen or connect: in a
class attribute (``listen = "tcp://127.0.0.1:7000"``), on the command line
(``--listen``) and in logs. Its scheme says the protocol: ``tcp``, ``unix``
and ``tls`` carry the daemon's framing, ``http``/``https`` (and their
WebSocket aliases ``ws``/``wss``) carry HTTP/1.1, ``udp`` carries datagrams.
Parsing is strict and its errors say what a valid string looks like, because
a typo here is the first thing a newcomer hits.

An :class:`Endpoint` adds what differs per endpoint: a name (for the CLI's
``--listen NAME=URL``), its own framing, its own handler object, TLS files
and protocol options. A plain string is an Endpoint with the daemon's
defaults.

Binding is synchronous on purpose: the daemon binds every endpoint before it
enters the loop, so "address already in use" or "permission denied" is
reported at once, as one clear line, and never as a traceback from a task.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import stat
from dataclasses import dataclass
from typing import Any

from daemonkit.errors import ConfigError, EndpointError

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "INHERIT",
    "Address",
    "Endpoint",
    "bind_socket",
    "parse_endpoint",
]

#: Listen backlog: nginx and Node default to 511; the kernel caps it at
#: net.core.somaxconn (4096 on Linux >= 5.4), so asking for more is harmless.
DEFAULT_BACKLOG = 1024

#: asyncio waits 60 s for a TLS handshake; a client that opens a connection
#: and never finishes its handshake holds a slot all that time (the TLS form
#: of slowloris), so ours gives up after 10 s, as HAProxy's default
#: ``timeout client`` examples and Go's tls handshake deadlines commonly do.
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 10.0

_SCHEMES = ("tcp", "unix", "tls", "http", "https", "ws", "wss", "udp")
_TLS_SCHEMES = frozenset({"tls", "https", "wss"})
_HTTP_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_EXAMPLES = "tcp://127.0.0.1:7000, tcp://[::1]:7000, tcp://:7000 or unix:///run/app.sock"


@dataclass(frozen=True)
class Address:
    """A parsed endpoint string.

    ``scheme`` is one of ``tcp``, ``unix``, ``tls``, ``http``, ``https``,
    ``ws``, ``wss``, ``udp``. Every scheme but ``unix`` has ``host`` and
    ``port`` (``host == ""`` means every interface); unix endpoints have
    ``path``. ``str(address)`` gives the canonical endpoint string back.
    """

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def tls(self) -> bool:
        """True for ``tls``, ``https`` and ``wss``: connections are encrypted."""
        return self.scheme in _TLS_SCHEMES

    @property
    def http(self) -> bool:
        """True for ``http``, ``https``, ``ws`` and ``wss``: connections speak HTTP/1.1."""
        return self.scheme in _HTTP_SCHEMES

    @property
    def datagram(self) -> bool:
        """True for ``udp``."""
        return self.scheme == "udp"

    @property
    def family(self) -> socket.AddressFamily:
        """The socket family this address needs."""
        if self.scheme == "unix":
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_endpoint(text: str) -> Address:
    """Parse an endpoint string into an :class:`Address`.

    Accepts ``SCHEME://HOST:PORT`` (HOST may be a name, an IPv4 address, an
    IPv6 address in brackets, or empty for every interface; PORT 0 asks the
    kernel for a free port) for every scheme but ``unix``, and
    ``unix:///absolute/or/relative/path``.

    Raises :class:`~daemonkit.errors.EndpointError` with a message that shows
    valid examples; fix the string and try again.
    """
    if not isinstance(text, str):
        raise EndpointError(f"endpoint must be a string like {_EXAMPLES}, not {text!r}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise EndpointError(f"endpoint {text!r} has no scheme; use one like {_EXAMPLES}")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise EndpointError(
            f"endpoint {text!r}: unknown scheme {scheme!r}; supported: "
            f"{', '.join(_SCHEMES)} (e.g. {_EXAMPLES})"
        )
    if scheme == "unix":
        if not rest:
            raise EndpointError(f"endpoint {text!r} has no path; use e.g. unix:///run/app.sock")
        if "\0" in rest:
            raise EndpointError(f"endpoint {text!r}: a unix socket path cannot contain NUL")
        return Address("unix", path=rest)
    return _parse_host_port(text, scheme, rest)


def _parse_host_port(text: str, scheme: str, rest: str) -> Address:
    if "/" in rest:
        raise EndpointError(
            f"endpoint {text!r}: a {scheme} endpoint has no path; use e.g. {_EXAMPLES}"
        )
    if rest.startswith("["):
        host, bracket, port_part = rest[1:].partition("]")
        if not bracket or not port_part.startswith(":"):
            raise EndpointError(f"endpoint {text!r}: write IPv6 as tcp://[::1]:7000")
        port_text = port_part[1:]
        if ":" not in host:
            raise EndpointError(f"endpoint {text!r}: brackets are only for IPv6 addresses")
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise EndpointError(f"endpoint {text!r} has no port; use e.g. tcp://127.0.0.1:7000")
        if ":" in host:
            raise EndpointError(
                f"endpoint {text!r}: put IPv6 addresses in brackets, tcp://[::1]:7000"
            )
    if not port_text.isdigit():
        raise EndpointError(
            f"endpoint {text!r}: port {port_text!r} is not a number from 0 to 65535"
        )
    port = int(port_text)
    if port > 65535:
        raise EndpointError(f"endpoint {text!r}: port {port} is out of range 0-65535")
    return Address(scheme, host=host, port=port)


#: The default of an :class:`Endpoint` setting: use the daemon's.
INHERIT: Any = type("Inherit", (), {"__repr__": lambda self: "INHERIT", "__slots__": ()})()


class Endpoint:
    """One place a daemon listens, with its own protocol, handler and options.

    ``Endpoint(url, name=None, framing=INHERIT, handler=None, certfile=None,
    keyfile=None, ssl_context=None, idle_timeout=INHERIT, **options)``:

    * ``url`` — an endpoint string; its scheme picks the protocol.
    * ``name`` — for ``--listen NAME=URL`` and the logs; default: the scheme
      (``tcp``, ``http``...), numbered when several share it.
    * ``framing`` — the framer of this endpoint's connections (stream
      schemes only); default: the daemon's ``framing``.
    * ``handler`` — the object whose callbacks serve this endpoint
      (``on_accept``, ``on_read``, ``on_request``, ``on_datagram``...);
      default: the daemon itself.
    * ``certfile``/``keyfile`` or ``ssl_context`` — required by ``tls``,
      ``https`` and ``wss``, refused by the others.
    * ``idle_timeout`` — overrides the daemon's for this endpoint.
    * ``options`` — protocol settings (e.g. ``max_body`` for HTTP,
      ``max_datagram`` for UDP), checked by the protocol when the daemon is
      created. Every stream endpoint (``tcp``, ``unix``, ``tls``, HTTP) takes
      ``send_timeout`` (overrides the daemon's), ``sndbuf`` and ``rcvbuf``
      (bytes: ``SO_SNDBUF``/``SO_RCVBUF`` of each accepted socket, which
      bound what the kernel queues for one client); the framed ones take
      ``frame_timeout`` (HTTP bounds a request with ``header_timeout``).

    ``str(endpoint)`` is its address; ``conn.endpoint`` is the Endpoint a
    connection came in on.
    """

    __slots__ = (
        "_ssl",
        "address",
        "certfile",
        "framing",
        "handler",
        "idle_timeout",
        "keyfile",
        "name",
        "options",
        "url",
    )

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        framing: Any = INHERIT,
        handler: Any = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: Any = INHERIT,
        **options: Any,
    ) -> None:
        self.url = url
        self.address = parse_endpoint(url)
        self.name = name
        self.framing = framing
        self.handler = handler
        self.certfile = certfile
        self.keyfile = keyfile
        self.idle_timeout = idle_timeout
        self.options = options
        self._ssl = ssl_context
        if name is not None and (not name or not name.replace("-", "_").isidentifier()):
            raise ConfigError(f"endpoint name {name!r}: use letters, digits, '_' and '-'")
        tls_given = certfile is not None or keyfile is not None or ssl_context is not None
        if self.address.tls:
            if ssl_context is None and (certfile is None or keyfile is None):
                raise ConfigError(
                    f"{url}: a {self.address.scheme} endpoint needs certfile= and keyfile= "
                    "(or ssl_context=)"
                )
        elif tls_given:
            raise ConfigError(
                f"{url}: certificates are for tls://, https:// and wss:// endpoints only"
            )
        if self.address.http and framing is not INHERIT:
            raise ConfigError(f"{url}: an HTTP endpoint frames HTTP itself; drop framing=")
        if self.address.http and "frame_timeout" in options:
            raise ConfigError(
                f"{url}: an HTTP endpoint bounds a request head with header_timeout; "
                "drop frame_timeout="
            )
        if self.address.datagram and framing is not INHERIT:
            raise ConfigError(f"{url}: a udp endpoint receives whole datagrams; drop framing=")

    def replace(self, url: str | None = None, **changes: Any) -> Endpoint:
        """A copy with another ``url`` and/or other settings."""
        settings: dict[str, Any] = {
            "name": self.name,
            "framing": self.framing,
            "handler": self.handler,
            "certfile": self.certfile,
            "keyfile": self.keyfile,
            "ssl_context": self._ssl,
            "idle_timeout": self.idle_timeout,
            **self.options,
        }
        settings.update(changes)
        return Endpoint(self.url if url is None else url, **settings)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context (built from certfile/keyfile once), or None.

        Raises :class:`~daemonkit.errors.ConfigError` when the files cannot be loaded.
        """
        if self._ssl is None and self.address.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(str(self.certfile), str(self.keyfile))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"{self.url}: cannot load certfile={self.certfile!r} "
                    f"keyfile={self.keyfile!r}: {exc}"
                ) from exc
            self._ssl = context
        return self._ssl

    def __str__(self) -> str:
        return str(self.address)

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r}, name={self.name!r})"


def bind_socket(address: Address, *, backlog: int = DEFAULT_BACKLOG) -> socket.socket:
    """Create, bind and listen on a non-blocking socket for ``address``.

    A ``udp`` address gets a bound datagram socket (no listen).
    TCP sockets get ``SO_REUSEADDR`` (restart without waiting for TIME_WAIT)
    and IPv6 ones ``IPV6_V6ONLY``. For a unix socket a stale socket file left
    by a crashed process is removed first, but only when nothing answers on it;
    a live one raises ``OSError(EADDRINUSE)`` like a TCP port in use.

    Raises ``OSError`` (EADDRINUSE, EACCES, EADDRNOTAVAIL...) unchanged so the
    caller can report it; the socket is closed on failure. The caller owns the
    returned socket.
    """
    kind = socket.SOCK_DGRAM if address.datagram else socket.SOCK_STREAM
    if address.scheme == "unix":
        _remove_stale_unix_socket(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = address.path
    else:
        family = address.family
        host = address.host or ("::" if family == socket.AF_INET6 else "0.0.0.0")
        if address.host and not _is_ip_literal(address.host):
            infos = socket.getaddrinfo(
                address.host, address.port, type=kind, flags=socket.AI_PASSIVE
            )
            family, _, _, _, sockaddr = infos[0]
            host = str(sockaddr[0])
        sock = socket.socket(family, kind)
        target = (host, address.port)
    try:
        if address.scheme != "unix" and not address.datagram:
            # Not for UDP: there SO_REUSEADDR lets a second process share the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(target)
        if not address.datagram:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def address_of(sock: socket.socket, scheme: str = "tcp") -> Address:
    """The :class:`Address` a socket is actually bound to (port 0 resolved).

    ``scheme`` is kept for non-unix sockets (``udp`` for a datagram socket).
    """
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        return Address("unix", path=name if isinstance(name, str) else name.decode())
    host, port = sock.getsockname()[:2]
    if sock.type == socket.SOCK_DGRAM:
        scheme = "udp"
    return Address(scheme, host=host, port=port)


def _is_ip_literal(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


def _remove_stale_unix_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EADDRINUSE, f"{path} exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another process is listening on {path}", path)
