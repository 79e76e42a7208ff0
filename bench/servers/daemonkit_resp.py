"""Benchmark target: a Redis-protocol daemon on daemonkit's public API, per-frame dispatch.

A request/reply protocol written the way a daemonkit user writes one: a
sans-IO framer (:class:`Resp`, a :class:`daemonkit.framing.Framer` that cuts
the stream into commands) set as ``framing``, and ``on_read(conn, command)``
answering each command with one ``conn.write(reply)``; daemonkit gathers the
replies of one read into one write. The parser and the store are the ones
the raw uvloop reference (``raw_resp.py``) uses (``_resp.py``), so the two
differ only in what sits between the socket and the parser. bench/run.py
starts it as::

    python -m daemonkit bench/servers/daemonkit_resp.py \\
        --listen tcp://127.0.0.1:PORT --backend uvloop --log-level warning

and drives it with ``redis-benchmark -t get,set``; try it with
``redis-cli -p PORT set k v``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from _resp import RespError, RespTooLarge, Store, encode_command, parse_command

from daemonkit import Daemon
from daemonkit.errors import FrameTooLarge, ProtocolError
from daemonkit.framing import Framer

if TYPE_CHECKING:
    from daemonkit.core.connection import Connection


class Resp(Framer):
    """RESP commands in, each as a list of ``bytes`` arguments.

    Arrays of bulk strings and inline commands, as a Redis server reads them
    (``_resp.parse_command``); blank lines and empty arrays are skipped. Bad
    input raises :class:`~daemonkit.errors.ProtocolError` (past one of
    ``_resp``'s limits: :class:`~daemonkit.errors.FrameTooLarge`).
    A large argument that arrives in pieces is parsed once, when its last
    byte is in; a partial command of many small pieces is parsed again from
    its start on each read (the benchmark's commands are a few dozen bytes).
    """

    __slots__ = ("_need",)

    def __init__(self) -> None:
        super().__init__()
        # Bytes the buffered partial command needs before parsing it can get further.
        self._need = 0

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Append ``data``; return the commands it completes (see :class:`Resp`)."""
        if self._buffer or self._error is not None or type(data) is not bytes:
            return self._feed_slow(data)
        return self._split(data)

    def _feed_slow(self, data: Any) -> list[list[bytes]]:
        data = self._checked_input(data)
        buf = self._buffer
        buf += data
        if len(buf) < self._need:
            return []
        whole = bytes(buf)
        buf.clear()
        return self._split(whole)

    def _split(self, data: bytes) -> list[list[bytes]]:
        """Cut ``data`` into commands; keep a partial one. The buffer must be empty."""
        commands: list[list[bytes]] = []
        pos, total = 0, len(data)
        try:
            while pos < total:
                args, end = parse_command(data, pos)
                if args is None:
                    self._need = end - pos
                    self._buffer += data[pos:]
                    break
                if args:
                    commands.append(args)
                pos = end
        except RespTooLarge as exc:
            self._fail(FrameTooLarge(str(exc)), commands)
        except RespError as exc:
            self._fail(ProtocolError(str(exc)), commands)
        return commands

    def encode(self, frame: Any) -> bytes:
        """Return the command ``frame`` (a list of bytes-like arguments) as a RESP array.

        Raises :class:`TypeError` if ``frame`` is not a list or tuple of
        bytes-like arguments.
        """
        if not isinstance(frame, (list, tuple)):
            raise TypeError(f"a RESP command is a list of bytes, not {type(frame).__name__}")
        return encode_command([bytes(memoryview(arg)) for arg in frame])


class RespDaemon(Daemon):
    """A tiny Redis: GET, SET, PING, INCR, one ``conn.write`` per command."""

    framing = Resp
    execute: Callable[[list[bytes]], bytes]

    def on_start(self) -> None:
        self.execute = Store().execute

    def on_read(self, conn: Connection, command: list[bytes]) -> None:
        conn.write(self.execute(command))
