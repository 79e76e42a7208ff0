"""Endpoint strings: parse ``tcp://host:port`` / ``unix:///path`` and bind them.

An endpoint is how a user names a place to listen or connect: in a class
attribute (``listen = "tcp://127.0.0.1:7000"``), on the command line
(``--listen``) and in logs. Parsing is strict and its errors say what a valid
string looks like, because a typo here is the first thing a newcomer hits.

Binding is synchronous on purpose: the daemon binds every endpoint before it
enters the loop, so "address already in use" or "permission denied" is
reported at once, as one clear line, and never as a traceback from a task.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass

from daemonkit.errors import EndpointError

__all__ = ["DEFAULT_BACKLOG", "Address", "bind_socket", "parse_endpoint"]

#: Listen backlog: nginx and Node default to 511; the kernel caps it at
#: net.core.somaxconn (4096 on Linux >= 5.4), so asking for more is harmless.
DEFAULT_BACKLOG = 1024

_SCHEMES = ("tcp", "unix")
_EXAMPLES = "tcp://127.0.0.1:7000, tcp://[::1]:7000, tcp://:7000 or unix:///run/app.sock"


@dataclass(frozen=True)
class Address:
    """A parsed endpoint.

    ``scheme`` is ``"tcp"`` or ``"unix"``; TCP endpoints have ``host`` and
    ``port`` (``host == ""`` means every interface), unix endpoints have
    ``path``. ``str(address)`` gives the canonical endpoint string back.
    """

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

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

    Accepts ``tcp://HOST:PORT`` (HOST may be a name, an IPv4 address, an IPv6
    address in brackets, or empty for every interface; PORT 0 asks the kernel
    for a free port) and ``unix:///absolute/or/relative/path``.

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
    return _parse_tcp(text, rest)


def _parse_tcp(text: str, rest: str) -> Address:
    if "/" in rest:
        raise EndpointError(f"endpoint {text!r}: a tcp endpoint has no path; use e.g. {_EXAMPLES}")
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
    return Address("tcp", host=host, port=port)


def bind_socket(address: Address, *, backlog: int = DEFAULT_BACKLOG) -> socket.socket:
    """Create, bind and listen on a non-blocking socket for ``address``.

    TCP sockets get ``SO_REUSEADDR`` (restart without waiting for TIME_WAIT)
    and IPv6 ones ``IPV6_V6ONLY``. For a unix socket a stale socket file left
    by a crashed process is removed first, but only when nothing answers on it;
    a live one raises ``OSError(EADDRINUSE)`` like a TCP port in use.

    Raises ``OSError`` (EADDRINUSE, EACCES, EADDRNOTAVAIL...) unchanged so the
    caller can report it; the socket is closed on failure. The caller owns the
    returned socket.
    """
    if address.scheme == "unix":
        _remove_stale_unix_socket(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = address.path
    else:
        family = address.family
        host = address.host or ("::" if family == socket.AF_INET6 else "0.0.0.0")
        if address.host and not _is_ip_literal(address.host):
            infos = socket.getaddrinfo(
                address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, _, _, _, sockaddr = infos[0]
            host = str(sockaddr[0])
        sock = socket.socket(family, socket.SOCK_STREAM)
        target = (host, address.port)
    try:
        if address.scheme == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(target)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def address_of(sock: socket.socket) -> Address:
    """The :class:`Address` a listening socket is actually bound to (port 0 resolved)."""
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        return Address("unix", path=name if isinstance(name, str) else name.decode())
    host, port = sock.getsockname()[:2]
    return Address("tcp", host=host, port=port)


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
