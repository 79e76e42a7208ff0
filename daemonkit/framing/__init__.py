"""Sans-IO framers: cut a byte stream into frames, and frames into bytes.

A framer is pure: it imports only the standard library and
:mod:`daemonkit.errors`, and never touches a socket, a clock, a logger or an
event loop. The daemon feeds it what the transport reads and writes what it
encodes; tests and fuzzers drive it directly. The contract every framer keeps
is written in :mod:`daemonkit.framing.base`.

* :class:`Raw`: one chunk in, one frame out; no wire format.
* :class:`Lines`: delimited lines (``b"\\n"``, ``b"\\r\\n"``...).
* :class:`LengthPrefixed`: an unsigned integer header, then the payload.
* :class:`Netstrings`: ``b"5:hello,"``.
* :class:`Resp`: the Redis protocol, server side: commands in (each a list
  of arguments), replies out; :class:`ErrorReply` is an error reply.

Each limit has a named default: :data:`DEFAULT_MAX_LINE` for lines and
:data:`DEFAULT_MAX_FRAME` for length-delimited frames.
"""

from __future__ import annotations

from daemonkit.framing.base import DEFAULT_MAX_FRAME, Framer
from daemonkit.framing.length import LengthPrefixed
from daemonkit.framing.lines import DEFAULT_MAX_LINE, Lines
from daemonkit.framing.netstring import Netstrings
from daemonkit.framing.raw import Raw
from daemonkit.framing.resp import ErrorReply, Resp

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_LINE",
    "ErrorReply",
    "Framer",
    "LengthPrefixed",
    "Lines",
    "Netstrings",
    "Raw",
    "Resp",
]
