"""The Redis protocol (RESP) pieces both RESP benchmark servers share: a parser and a store.

Plain Python with no daemonkit import, so that the raw uvloop Protocol
(``raw_resp.py``) and the daemonkit daemon (``daemonkit_resp.py``) parse the
same frames with the same code and answer them from the same store: what
differs between them is only how a read reaches the parser and how the
replies reach the socket.

* :func:`parse_command` cuts one command out of a buffer: an array of bulk
  strings (``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``, what clients and
  ``redis-benchmark`` send) or an inline command (``PING\\r\\n``, what a
  person types into ``nc``).
* :class:`Store` answers GET, SET, PING, INCR (and CONFIG GET, with empty
  values, so that ``redis-benchmark``'s start-up query gets an answer) from
  a dict.

Every length the peer announces is bounded by a named limit; bad input raises
:class:`RespError`, after which the caller closes the connection.
"""

from __future__ import annotations

from collections.abc import Callable

#: Longest line without its CRLF (an inline command, or a ``*N``/``$N``
#: header): Redis's PROTO_INLINE_MAX_SIZE, 64 KiB.
MAX_LINE = 64 * 1024
#: Most arguments in one command: Redis's limit on a multibulk length (1024 * 1024).
MAX_ARGS = 1024 * 1024
#: Longest argument: daemonkit's DEFAULT_MAX_FRAME (1 MiB). Redis allows 512 MB
#: (proto-max-bulk-len), far more than a benchmark's store needs.
MAX_BULK = 1024 * 1024

CRLF = b"\r\n"
_STAR = ord("*")
_DOLLAR = ord("$")


class RespError(ValueError):
    """The peer sent something that is not RESP, or broke a limit; close the connection."""


class RespTooLarge(RespError):
    """A line, an array or a bulk string longer than its limit."""


def _header(data: bytes, start: int, end: int, what: str) -> int:
    """The integer of a ``*N`` or ``$N`` header line, ``data[start:end]``."""
    text = data[start:end]
    if not text or not (text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())):
        raise RespError(f"bad {what} {text[:20]!r}")
    return int(text)


def parse_command(data: bytes, pos: int) -> tuple[list[bytes] | None, int]:
    """Parse the command that starts at ``data[pos]``.

    Returns ``(args, end)``: the command's arguments (an empty list for a
    blank inline line or an empty array, which carry no command: skip it)
    and the offset just past it. When the command is not complete yet,
    returns ``(None, need)``: ``need`` is a length of ``data`` below which
    parsing again cannot get further (so a caller may wait for that much).
    Raises :class:`RespError` on input that is not RESP or breaks a limit.
    """
    total = len(data)
    end = data.find(CRLF, pos)
    if end < 0:
        if total - pos > MAX_LINE:
            raise RespTooLarge(f"line longer than MAX_LINE={MAX_LINE} bytes")
        return None, total + 1
    if data[pos] != _STAR:
        if end - pos > MAX_LINE:
            raise RespTooLarge(f"inline command longer than MAX_LINE={MAX_LINE} bytes")
        return data[pos:end].split(), end + 2
    count = _header(data, pos + 1, end, "array length")
    if count > MAX_ARGS:
        raise RespTooLarge(f"array of {count} arguments, more than MAX_ARGS={MAX_ARGS}")
    args = []
    p = end + 2
    for _ in range(count):
        end = data.find(CRLF, p)
        if end < 0:
            if total - p > MAX_LINE:
                raise RespTooLarge(f"line longer than MAX_LINE={MAX_LINE} bytes")
            return None, total + 1
        if data[p] != _DOLLAR:
            raise RespError(f"expected '$', got {data[p : p + 1]!r}")
        length = _header(data, p + 1, end, "bulk length")
        if length < 0:
            raise RespError(f"negative bulk length {length}")
        if length > MAX_BULK:
            raise RespTooLarge(f"bulk string of {length} bytes, more than MAX_BULK={MAX_BULK}")
        start = end + 2
        stop = start + length
        if stop + 2 > total:
            return None, stop + 2
        if data[stop : stop + 2] != CRLF:
            raise RespError("bulk string not followed by CRLF")
        args.append(data[start:stop])
        p = stop + 2
    return args, p


def encode_command(args: list[bytes]) -> bytes:
    """Return ``args`` as a RESP array of bulk strings (what a client sends)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL = b"$-1\r\n"
EMPTY_ARRAY = b"*0\r\n"
NOT_INTEGER = b"-ERR value is not an integer or out of range\r\n"


def _arity_error(name: bytes) -> bytes:
    return b"-ERR wrong number of arguments for '%s' command\r\n" % name.lower()


class Store:
    """An in-memory key-value store answering a few Redis commands.

    :meth:`execute` takes one parsed command and returns its encoded reply,
    so a server writes it as it is.
    """

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.commands: dict[bytes, Callable[[list[bytes]], bytes]] = {
            b"GET": self.get,
            b"SET": self.set,
            b"PING": self.ping,
            b"INCR": self.incr,
            b"CONFIG": self.config,
        }

    def execute(self, args: list[bytes]) -> bytes:
        """Run one command (``args[0]`` is its name, in any case); return the reply's bytes."""
        handler = self.commands.get(args[0]) or self.commands.get(args[0].upper())
        if handler is None:
            name = args[0][:40].decode("latin-1")
            return f"-ERR unknown command '{name}'\r\n".encode("latin-1")
        return handler(args)

    def get(self, args: list[bytes]) -> bytes:
        """GET key: the value as a bulk string, or the null bulk string."""
        if len(args) != 2:
            return _arity_error(args[0])
        value = self.data.get(args[1])
        if value is None:
            return NULL
        return b"$%d\r\n%s\r\n" % (len(value), value)

    def set(self, args: list[bytes]) -> bytes:
        """SET key value (no options): +OK."""
        if len(args) != 3:
            return _arity_error(args[0])
        self.data[args[1]] = args[2]
        return OK

    def ping(self, args: list[bytes]) -> bytes:
        """PING [message]: +PONG, or the message as a bulk string."""
        if len(args) == 1:
            return PONG
        if len(args) == 2:
            return b"$%d\r\n%s\r\n" % (len(args[1]), args[1])
        return _arity_error(args[0])

    def incr(self, args: list[bytes]) -> bytes:
        """INCR key: the incremented integer (a missing key counts as 0)."""
        if len(args) != 2:
            return _arity_error(args[0])
        old = self.data.get(args[1], b"0")
        if not (old.isdigit() or (old[:1] == b"-" and old[1:].isdigit())) or len(old) > 20:
            return NOT_INTEGER
        value = int(old) + 1
        self.data[args[1]] = b"%d" % value
        return b":%d\r\n" % value

    def config(self, args: list[bytes]) -> bytes:
        """CONFIG GET name: the name with an empty value (there are no settings)."""
        if len(args) != 3 or args[1].upper() != b"GET":
            return EMPTY_ARRAY
        return b"*2\r\n$%d\r\n%s\r\n$0\r\n\r\n" % (len(args[2]), args[2])
