"""The Redis protocol (RESP2), server side: commands in, replies out.

A daemon that speaks RESP can be driven by every Redis client and by
``redis-benchmark``. Each frame :meth:`Resp.feed` returns is one command as a
``list`` of ``bytes`` arguments (``[b"SET", b"k", b"v"]``), from either form a
client may send:

* an **array of bulk strings**, ``*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nv\\r\\n``,
  which is what client libraries send;
* an **inline command**, ``SET k v\\r\\n`` (a line split on whitespace; quotes
  are not interpreted), which is what a person types into ``nc``.

As Redis does, an empty array (``*0``, ``*-1``) and a blank line carry no
command and give no frame. :meth:`Resp.encode` turns a Python value into a
reply (see its table). Rules this framer keeps beyond the
:mod:`~daemonkit.framing.base` contract:

* **Limits**, each named in the error it raises: a line (an inline command,
  or a ``*N``/``$N`` header) of at most ``max_inline`` bytes before its
  ``\\r\\n`` (Redis's 64 KiB), at most ``max_args`` arguments per command
  (Redis's 1,048,576), at most ``max_length`` bytes per argument, and at
  most ``max_command`` bytes per command, headers included. A length above
  its limit raises as soon as its header line is complete, before any of
  the payload is buffered.
* **Linear buffering**: a command's arguments are kept as they complete, a
  header is searched for in the new bytes only, and a long argument is
  copied once, when its last byte arrives.
* **Strict framing**: a header line ends in ``\\r\\n``, an argument is
  followed by ``\\r\\n``, and every argument of an array starts with ``$``;
  anything else is a :class:`~daemonkit.errors.ProtocolError`.

This is the server side only: it does not parse replies (use a Redis client
library for the other direction).
"""

from __future__ import annotations

import operator
from typing import Any, Final, NoReturn

from mypy_extensions import mypyc_attr

from daemonkit.errors import ConfigError, FrameTooLarge, ProtocolError
from daemonkit.framing.base import DEFAULT_MAX_FRAME, BytesLike, Framer, _to_bytes

__all__ = [
    "DEFAULT_MAX_ARGS",
    "DEFAULT_MAX_COMMAND",
    "DEFAULT_MAX_INLINE",
    "MAX_REPLY_DEPTH",
    "ErrorReply",
    "Resp",
]

#: Longest line, without its ``\r\n``: Redis's PROTO_INLINE_MAX_SIZE (64 KiB).
DEFAULT_MAX_INLINE: Final = 64 * 1024
#: Most arguments in one command: Redis's limit on a multibulk length.
DEFAULT_MAX_ARGS: Final = 1024 * 1024
#: Most bytes in one command, headers included (8 MiB): room for several
#: arguments of the default ``max_length``; Redis's own bound is its 1 GB
#: query buffer.
DEFAULT_MAX_COMMAND: Final = 8 * 1024 * 1024
#: Deepest nesting of arrays :meth:`Resp.encode` writes.
MAX_REPLY_DEPTH: Final = 64

_CR: Final = 13
_STAR: Final = 42
_DOLLAR: Final = 36
# More digits than any length within the limits can have: refused before int().
_MAX_DIGITS: Final = 19
# Digits :meth:`Resp._header` reads itself: a number that fits a machine word.
_FAST_DIGITS: Final = 18


@mypyc_attr(allow_interpreted_subclasses=True)
class ErrorReply:
    """An error reply: ``conn.send(ErrorReply("ERR unknown command"))`` writes
    ``-ERR unknown command\\r\\n``.

    By Redis's convention the first word is the error's code (``ERR``,
    ``WRONGTYPE``); clients raise it as an exception. The message must not
    contain ``\\r`` or ``\\n`` (:meth:`Resp.encode` raises ValueError).
    """

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErrorReply) and other.message == self.message

    def __hash__(self) -> int:
        return hash(self.message)

    def __repr__(self) -> str:
        return f"ErrorReply({self.message!r})"


def _limit(name: str, value: int) -> int:
    """Return *value* as an int; ConfigError (a ValueError) if below 1."""
    value = operator.index(value)
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


@mypyc_attr(allow_interpreted_subclasses=True)
class Resp(Framer):
    """Frames are commands, each a ``list`` of ``bytes`` arguments.

    *max_length* bounds one argument, *max_args* the arguments of one
    command, *max_command* its bytes (headers included), *max_inline* a line (an
    inline command or a header); each below 1 raises
    :class:`~daemonkit.errors.ConfigError`.
    """

    __slots__ = (
        "_args",
        "_left",
        "_max_args",
        "_max_command",
        "_max_inline",
        "_max_length",
        "_need",
        "_size",
    )

    def __init__(
        self,
        max_length: int = DEFAULT_MAX_FRAME,
        max_args: int = DEFAULT_MAX_ARGS,
        max_command: int = DEFAULT_MAX_COMMAND,
        max_inline: int = DEFAULT_MAX_INLINE,
    ) -> None:
        max_length = _limit("max_length", max_length)
        max_args = _limit("max_args", max_args)
        max_command = _limit("max_command", max_command)
        max_inline = _limit("max_inline", max_inline)
        super().__init__(
            max_length=max_length,
            max_args=max_args,
            max_command=max_command,
            max_inline=max_inline,
        )
        self._max_length = max_length
        self._max_args = max_args
        self._max_command = max_command
        self._max_inline = max_inline
        # The array in progress: the arguments it has so far, how many are
        # still to come, and its bytes so far, headers included (None, 0, 0
        # between commands).
        self._args: list[bytes] | None = None
        self._left = 0
        self._size = 0
        # While an argument's payload is awaited: the buffer's length that
        # completes it (0 while a line is awaited).
        self._need = 0

    @property
    def max_length(self) -> int:
        """The longest argument accepted, in bytes."""
        return self._max_length

    def feed(self, data: BytesLike) -> list[Any]:
        """Append *data* and return the commands it completes, each a list of arguments.

        A partial command stays buffered for the next call. Raises
        :class:`~daemonkit.errors.ProtocolError` for input that is not RESP
        and :class:`~daemonkit.errors.FrameTooLarge` for a limit broken (see
        the module doc); the exception's ``frames`` lists the commands
        completed before it in this call.
        """
        if self._buffer or self._error is not None or type(data) is not bytes:
            return self._feed_slow(data)
        return self._parse(data, [])

    def _feed_slow(self, data: BytesLike) -> list[Any]:
        """Handle a broken framer, non-bytes input, or data after a partial element."""
        data = self._checked_input(data)
        buf = self._buffer
        if self._need:
            if len(buf) + len(data) < self._need:
                buf += data
                return []
        elif data.find(b"\n") < 0:
            # Still no end to the line: keep it, within the line limit.
            buf += data
            self._check_open_line(buf, 0, len(buf), [])
            return []
        data = bytes(buf) + data
        buf.clear()
        self._need = 0
        return self._parse(data, [])

    def _parse(self, data: bytes, frames: list[Any]) -> list[Any]:
        """Cut *data* (which starts at an element) into commands appended to *frames*."""
        total = len(data)
        pos = 0
        args = self._args
        left = self._left
        size = self._size
        while pos < total:
            if args is None:
                star = data[pos] == _STAR
                count, end = self._header(data, pos, total) if star else (0, -1)
                if end < 0:  # not the common form: the careful path decides
                    end = self._line_end(data, pos, total, frames)
                    if end < 0:
                        break
                    if not star:
                        parts = data[pos:end].split()  # the \r, if any, is whitespace
                        pos = end + 1
                        if parts:
                            frames.append(parts)
                        continue
                    count = self._number(data, pos, end, "array length", frames)
                if count > self._max_args:
                    self._fail(
                        FrameTooLarge(
                            f"RESP array of {count} arguments is more than "
                            f"max_args={self._max_args}"
                        ),
                        frames,
                    )
                if count > 0:  # *0 and *-1 carry no command
                    args = []
                    left = count
                    size = end + 1 - pos
                pos = end + 1
                continue
            if data[pos] != _DOLLAR:
                self._fail(
                    ProtocolError(
                        f"RESP expected '$' before an argument, got {data[pos : pos + 1]!r}"
                    ),
                    frames,
                )
            length, end = self._header(data, pos, total)
            if end < 0:
                end = self._line_end(data, pos, total, frames)
                if end < 0:
                    break
                length = self._number(data, pos, end, "bulk length", frames)
            if length < 0:
                self._fail(ProtocolError(f"RESP bulk length {length} is negative"), frames)
            if length > self._max_length:
                self._fail(
                    FrameTooLarge(
                        f"RESP argument of {length} bytes is more than "
                        f"max_length={self._max_length} bytes"
                    ),
                    frames,
                )
            start = end + 1
            stop = start + length
            if size + stop + 2 - pos > self._max_command:
                self._fail(
                    FrameTooLarge(
                        f"RESP command of more than {size + stop + 2 - pos} bytes is more "
                        f"than max_command={self._max_command} bytes"
                    ),
                    frames,
                )
            if stop + 2 > total:
                self._need = stop + 2 - pos
                break
            if data[stop] != _CR or data[stop + 1] != 10:
                self._fail(
                    ProtocolError(
                        f"RESP argument not followed by CRLF (found {data[stop : stop + 2]!r})"
                    ),
                    frames,
                )
            args.append(data[start:stop])
            size += stop + 2 - pos
            pos = stop + 2
            left -= 1
            if not left:
                frames.append(args)
                args = None
        self._args = args
        self._left = left
        self._size = size
        if pos < total:
            self._buffer += data[pos:]
        return frames

    def _header(self, data: bytes, pos: int, total: int) -> tuple[int, int]:
        """``(number, end)`` of the header line at *pos* in its common form, else ``(0, -1)``.

        The common form is the marker (``*`` or ``$``), 1 to 18 digits and
        CRLF, within ``max_inline``; *end* is the offset of its ``\\n``. A
        digit loop over the bytes, which compiled makes no object at all,
        where :meth:`_line_end` and :meth:`_number` search, slice and call
        ``int()``. Anything else (a sign, a stray byte, a line not complete
        yet, too many digits) returns ``(0, -1)``, and the caller takes that
        careful path, which accepts or refuses it with the right message.
        """
        first = pos + 1
        stop = min(total, first + _FAST_DIGITS)
        i = first
        number = 0
        while i < stop:
            digit = data[i] - 48
            if digit < 0 or digit > 9:
                break
            number = number * 10 + digit
            i += 1
        if (
            i == first
            or i + 1 >= total
            or data[i] != _CR
            or data[i + 1] != 10
            or i - pos > self._max_inline
        ):
            return 0, -1
        return number, i + 1

    def _number(self, data: bytes, pos: int, end: int, what: str, frames: list[Any]) -> int:
        """The integer of the header line ``data[pos:end]`` (``*N`` or ``$N``, then CRLF)."""
        if data[end - 1] != _CR or end - pos < 3:
            self._fail(
                ProtocolError(f"RESP {what} line {data[pos : end + 1]!r} is malformed"), frames
            )
        text = data[pos + 1 : end - 1]
        digits = text[1:] if text[:1] == b"-" else text
        if not digits.isdigit():
            self._fail(ProtocolError(f"RESP {what} {text[:20]!r} is not a number"), frames)
        if len(digits) > _MAX_DIGITS:
            self._fail(FrameTooLarge(f"RESP {what} {text[:20]!r}... is too large"), frames)
        return int(text)

    def _line_end(self, data: bytes, pos: int, total: int, frames: list[Any]) -> int:
        """The offset of the ``\\n`` ending the line at *pos*, or -1 if it has not come yet.

        Raises if the line is longer than ``max_inline``, or already is without its end.
        """
        end = data.find(b"\n", pos)
        if end < 0:
            self._check_open_line(data, pos, total, frames)
        elif end - pos - (data[end - 1] == _CR) > self._max_inline:
            self._line_too_long(frames)
        return end

    def _check_open_line(self, data: BytesLike, pos: int, total: int, frames: list[Any]) -> None:
        """Raise if ``data[pos:total]``, a line with no end yet, is already too long.

        Its last byte may be the ``\\r`` of its end, so a line one byte over
        the limit is refused only once that byte is known not to be ``\\r``.
        """
        over = total - pos - self._max_inline
        if over > 1 or (over == 1 and data[total - 1] != _CR):
            self._line_too_long(frames)

    def _line_too_long(self, frames: list[Any]) -> NoReturn:
        self._fail(
            FrameTooLarge(f"RESP line longer than max_inline={self._max_inline} bytes"), frames
        )

    def encode(self, frame: Any) -> bytes:
        """Return *frame* as a RESP reply.

        ================================  ===========================================
        *frame*                           reply
        ================================  ===========================================
        ``bytes`` (or bytes-like)         bulk string: ``$5\\r\\nhello\\r\\n``
        ``str``                           simple string: ``+OK\\r\\n``
        ``int`` (``bool`` too)            integer: ``:42\\r\\n``
        ``None``                          null bulk string: ``$-1\\r\\n``
        :class:`ErrorReply`               error: ``-ERR message\\r\\n``
        ``list`` or ``tuple``             array of the replies of its items
        ================================  ===========================================

        Raises :class:`ValueError` for a simple string or an error that holds
        ``\\r`` or ``\\n``, or arrays nested deeper than
        :data:`MAX_REPLY_DEPTH`; :class:`TypeError` for anything else.
        ``max_length`` is not checked: it bounds what this side reads.
        """
        return _encode(frame, 0)

    def encode_all(self, frames: list[Any]) -> bytes:
        """Return the replies of *frames*, in order, as one ``bytes``."""
        return b"".join([_encode(frame, 0) for frame in frames])

    @property
    def buffered(self) -> int:
        """Bytes of the command in progress: its complete elements and the partial one."""
        if self._error is not None:
            return 0
        return len(self._buffer) + (self._size if self._args is not None else 0)


def _encode(frame: Any, depth: int) -> bytes:
    kind = type(frame)
    if kind is bytes:
        return b"$%d\r\n%s\r\n" % (len(frame), frame)
    if kind is str:
        return b"+%s\r\n" % _line(frame, "simple string")
    if kind is int or kind is bool:
        return b":%d\r\n" % frame
    if frame is None:
        return b"$-1\r\n"
    if isinstance(frame, ErrorReply):
        return b"-%s\r\n" % _line(frame.message, "error")
    if isinstance(frame, list | tuple):
        if depth >= MAX_REPLY_DEPTH:
            raise ValueError(f"RESP arrays nested deeper than {MAX_REPLY_DEPTH}")
        items = [_encode(item, depth + 1) for item in frame]
        return b"*%d\r\n%s" % (len(items), b"".join(items))
    if isinstance(frame, int):
        return b":%d\r\n" % frame
    if isinstance(frame, str):
        return b"+%s\r\n" % _line(frame, "simple string")
    payload = _to_bytes(frame)  # TypeError unless bytes-like
    return b"$%d\r\n%s\r\n" % (len(payload), payload)


def _line(text: str, what: str) -> bytes:
    """*text* as UTF-8 for a one-line reply; ValueError if it holds CR or LF."""
    if "\r" in text or "\n" in text:
        raise ValueError(f"a RESP {what} cannot hold CR or LF: {text[:40]!r}")
    return text.encode()
