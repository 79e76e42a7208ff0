"""The framer contract shared by every wire format.

A framer turns a byte stream into frames and frames into bytes. It is
*sans-IO*: no socket, clock, logger or event loop inside, only the standard
library and :mod:`daemonkit.errors`. That keeps it fuzzable and lets the
daemon, the bots and the tests drive the same code.

Rules every framer keeps:

* :meth:`Framer.feed` returns the complete frames in order, as ``bytes``
  objects, and keeps the partial remainder for the next call. Any split of a
  stream yields the same frames.
* Every read is bounded by a named limit. Bad input raises
  :class:`~daemonkit.errors.FrameTooLarge` or
  :class:`~daemonkit.errors.ProtocolError` as soon as it is seen, with a
  message that names the limit.
* The raised exception carries a ``frames`` attribute: the list of complete
  frames that came before the bad input in the same ``feed()`` call. The
  caller delivers them and then closes the connection.
* After an error the framer is broken: every later ``feed()`` raises the same
  kind of error again (with empty ``frames``). Make a new framer with
  :meth:`Framer.fresh` for a new connection.
* Buffering is linear: a frame that arrives one byte at a time costs time
  proportional to its length, never to its square.
"""

from __future__ import annotations

import abc
import operator
from typing import Any, NoReturn, TypeAlias, TypeVar

from mypy_extensions import mypyc_attr

from daemonkit.errors import ConfigError, FramingError

__all__ = ["DEFAULT_MAX_FRAME", "BytesLike", "Framer"]

# websockets' default max_size and nginx's client_max_body_size are both 1 MiB.
DEFAULT_MAX_FRAME = 1024 * 1024
"""Default ``max_length`` of the framers with an explicit length (1 MiB)."""

_F = TypeVar("_F", bound="Framer")

#: What the built-in framers' ``feed()`` takes: ``bytes`` (the fast path), or
#: any bytes-like object, copied to ``bytes`` first. Compiled, an annotation
#: is enforced at the call, so it names every type that is accepted.
BytesLike: TypeAlias = "bytes | bytearray | memoryview"


@mypyc_attr(allow_interpreted_subclasses=True)
class Framer:
    """Abstract base of the sans-IO framers.

    Call :meth:`feed` with data as it arrives, until it raises; from then on
    the framer is broken and every later ``feed()`` raises again.
    :meth:`encode` may be called at any time, even on a broken framer.

    A framer given as a setting (``framing = Lines(max_length=100)``) is a
    prototype: each connection gets its own :meth:`fresh` copy.

    Subclasses pass their constructor arguments to ``Framer.__init__`` as
    keywords, which is what :meth:`fresh` and ``repr()`` replay, keep partial
    input in ``self._buffer`` (a ``bytearray`` that is only ever changed in
    place) and report bad input through ``_fail()``.
    """

    __slots__ = ("_buffer", "_error", "_settings")

    def __init__(self, **settings: Any) -> None:
        cls = type(self)
        if cls.feed is Framer.feed or cls.encode is Framer.encode:
            # abc.ABC's check, done by hand: not an ABC, because compiled it is
            # a native class, and mypyc's native subclasses of an ABC share
            # its isinstance cache (isinstance(x, Raw) being False would make
            # isinstance(x, Framer) False too).
            raise TypeError(f"{cls.__name__} is abstract: it must define feed() and encode()")
        self._settings = settings
        self._buffer = bytearray()
        self._error: FramingError | None = None

    @abc.abstractmethod
    def feed(self, data: bytes) -> list[Any]:
        """Append *data* to the stream and return every frame it completes.

        Returns the complete frames in order (``bytes`` objects for the
        built-in framers), possibly an empty list; a trailing partial frame
        is kept for the next call (see :attr:`buffered`).

        Raises :class:`~daemonkit.errors.FrameTooLarge` or
        :class:`~daemonkit.errors.ProtocolError` (both
        :class:`~daemonkit.errors.FramingError`) when the peer's input breaks
        a limit or the wire format. The exception's ``frames`` attribute
        lists the complete frames that came before the bad input in this
        call: deliver them, then close the connection. The framer is broken
        from then on: further calls raise the same kind of error with empty
        ``frames``.
        """

    @abc.abstractmethod
    def encode(self, frame: Any) -> bytes:
        """Return the bytes to write so that the peer's framer reads *frame*.

        Raises :class:`ValueError` (or a subclass) when *frame* cannot be
        represented in the wire format, and :class:`TypeError` when it is
        not bytes-like. Nothing is sent in that case; fix the frame.
        """

    def encode_all(self, frames: list[Any]) -> bytes:
        """Return the bytes of every frame of *frames*, in order, as one ``bytes``.

        What :meth:`~daemonkit.core.connection.Connection.send_all` writes.
        The same as joining :meth:`encode` of each frame (which this does);
        a framer may override it with a faster equivalent.
        """
        return b"".join([self.encode(frame) for frame in frames])

    @property
    def buffered(self) -> int:
        """Number of bytes held waiting for the rest of their frame (0 after an error)."""
        return len(self._buffer)

    def fresh(self: _F) -> _F:
        """Return a new, empty framer with the same settings as this one.

        Use it to give each connection its own framer from a prototype. The
        copy shares no state with this framer, even if this one is broken,
        but the settings dict, which is never changed once a constructor has
        returned: sharing it saves a dict (~200 bytes) per connection.
        """
        settings = self._settings
        framer = type(self)(**settings)
        framer._settings = settings
        return framer

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self._settings.items())
        return f"{type(self).__name__}({args})"

    def _fail(self, error: FramingError, frames: list[Any]) -> NoReturn:
        """Break the framer, attach *frames* to *error* and raise it."""
        error.frames = frames
        self._error = error
        self._buffer.clear()
        raise error

    def _checked_input(self, data: Any) -> bytes:
        """Start of every slow path: raise if broken, else return *data* as bytes."""
        if self._error is not None:
            self._raise_broken()
        return data if type(data) is bytes else _to_bytes(data)

    def _raise_broken(self) -> NoReturn:
        """Raise again the kind of error that broke the framer, with no frames."""
        assert self._error is not None
        error = type(self._error)(f"framer already failed: {self._error}")
        error.frames = []
        raise error


def _to_bytes(frame: Any) -> bytes:
    """Return *frame* as ``bytes``; TypeError unless it is bytes-like."""
    if type(frame) is bytes:
        return frame
    # memoryview() rejects int and str, which bytes() would silently accept.
    return bytes(memoryview(frame))


def _check_max_length(max_length: int) -> int:
    """Return *max_length* as an int; ConfigError (a ValueError) if below 1."""
    value = operator.index(max_length)
    if value < 1:
        raise ConfigError(f"max_length must be at least 1 byte, got {value}")
    return value
