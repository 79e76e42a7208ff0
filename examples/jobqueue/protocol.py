"""The beanstalkd wire protocol, sans-IO: bytes in, parsed commands out.

:class:`CommandFramer` is a daemonkit framer (``framing = CommandFramer`` on
the daemon). It cuts the stream into command lines ending in ``\\r\\n``, and
for ``put`` it also takes the job body of the declared size and its ``\\r\\n``.
It parses each command's arguments and yields one tuple per command. No
socket, clock or logger is in here: the tests feed it bytes whole, one byte
at a time and with trailing data.

Malformed input does not break the framer, unlike the stock daemonkit
framers: beanstalkd answers it (``BAD_FORMAT``...) and keeps the connection,
so an error is a frame too, ``(ERROR, reply, counted)``. Every rule below is
beanstalkd 1.12's (``prot.c``), checked against the real program:

* A command line is at most :data:`LINE_BUF_SIZE` bytes, ``\\r\\n``
  included. A longer one is thrown away up to its ``\\r\\n`` and answered
  ``BAD_FORMAT``. As beanstalkd's ``scan_line_end`` does, only the *first*
  ``\\r`` of a line may end it: a lone ``\\r`` makes the line run on.
* A line holding a NUL byte is ``BAD_FORMAT``.
* Commands are told apart by prefix, in beanstalkd's order (``reservex``
  is a malformed ``reserve``, ``quitx`` is ``quit``).
* Numbers are unsigned decimals without sign, separated by spaces; one that
  overflows its type is ``BAD_FORMAT``. ``reserve-with-timeout`` and ``kick``
  use C's ``strtol``/``strtoul`` instead, with their leniency (a sign,
  trailing garbage; ``reserve-with-timeout abc`` waits 0 s).
* ``put`` with a size over ``max_job_size`` has its body (size + 2 bytes)
  skipped, then is answered ``JOB_TOO_BIG``; a body not followed by
  ``\\r\\n`` is ``EXPECTED_CRLF`` (the bytes are consumed either way).
* Tube names are 1 to :data:`MAX_TUBE_NAME` bytes of
  :data:`NAME_CHARS`, not starting with ``-``.

The frames, by their first item (numbers are ints, names and bodies bytes;
a body keeps its trailing ``\\r\\n``, ready to send back as it is)::

    ("put", pri, delay, ttr, body)         ("reserve",)
    ("reserve-with-timeout", seconds)      ("reserve-job", id)
    ("delete", id)  ("touch", id)  ("kick-job", id)  ("peek", id)  ("stats-job", id)
    ("release", id, pri, delay)            ("bury", id, pri)
    ("kick", bound)                        ("pause-tube", name, delay)
    ("use", name)  ("watch", name)  ("ignore", name)  ("stats-tube", name)
    ("peek-ready",)  ("peek-delayed",)  ("peek-buried",)  ("stats",)
    ("list-tubes",)  ("list-tube-used",)  ("list-tubes-watched",)  ("quit",)
    (ERROR, reply, counted)   # reply: e.g. b"BAD_FORMAT\\r\\n"; counted: the
                              # command whose stats counter it still counts, or None
"""

from __future__ import annotations

import re
from typing import Any

from daemonkit.framing import Framer

__all__ = [
    "BAD_FORMAT",
    "DEFAULT_MAX_JOB_SIZE",
    "ERROR",
    "EXPECTED_CRLF",
    "JOB_TOO_BIG",
    "LINE_BUF_SIZE",
    "MAX_TUBE_NAME",
    "NAME_CHARS",
    "UNKNOWN_COMMAND",
    "CommandFramer",
    "valid_tube_name",
]

#: Longest command line, CRLF included: beanstalkd's LINE_BUF_SIZE (dat.h),
#: 11 + MAX_TUBE_NAME_LEN (201) + 12, room for the longest command with a name.
LINE_BUF_SIZE = 224
#: Longest tube name in bytes: beanstalkd's MAX_TUBE_NAME_LEN - 1 (dat.h).
MAX_TUBE_NAME = 200
#: Largest job body in bytes: beanstalkd's JOB_DATA_SIZE_LIMIT_DEFAULT, 2**16 - 1 (``-z``).
DEFAULT_MAX_JOB_SIZE = 65535
#: Bytes a tube name may hold (beanstalkd's NAME_CHARS, prot.c).
NAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"

#: First item of an error frame.
ERROR = "error"
BAD_FORMAT = b"BAD_FORMAT\r\n"
UNKNOWN_COMMAND = b"UNKNOWN_COMMAND\r\n"
JOB_TOO_BIG = b"JOB_TOO_BIG\r\n"
EXPECTED_CRLF = b"EXPECTED_CRLF\r\n"

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

_NAME = re.compile(b"[" + re.escape(NAME_CHARS) + b"]+")
_VALID_NAME = re.compile(b"(?!-)[" + re.escape(NAME_CHARS) + b"]+")  # no leading "-"
# read_u32/read_u64 (prot.c): spaces, then digits; the next number needs a space first.
_PUT = re.compile(rb" *(\d+) +(\d+) +(\d+) +(\d+)")
_ONE = re.compile(rb" *(\d+)")
_TWO = re.compile(rb" *(\d+) +(\d+)")
_THREE = re.compile(rb" *(\d+) +(\d+) +(\d+)")
# C's strtol/strtoul: isspace(), an optional sign, digits.
_C_INT = re.compile(rb"[ \t\n\v\f\r]*([+-]?)(\d*)")

# Commands with one id argument, and the commands with no argument at all.
_ID_COMMANDS = {
    b"peek ": "peek",
    b"reserve-job ": "reserve-job",
    b"delete ": "delete",
    b"kick-job ": "kick-job",
    b"touch ": "touch",
    b"stats-job ": "stats-job",
}
_NAME_COMMANDS = {b"use ": "use", b"watch ": "watch", b"ignore ": "ignore"}
_BARE = {
    b"peek-ready": ("peek-ready",),
    b"peek-delayed": ("peek-delayed",),
    b"peek-buried": ("peek-buried",),
    b"reserve": ("reserve",),
    b"stats": ("stats",),
    b"list-tubes-watched": ("list-tubes-watched",),
    b"list-tube-used": ("list-tube-used",),
    b"list-tubes": ("list-tubes",),
}
# which_cmd() in prot.c: the first prefix that matches wins, in this order.
_PREFIXES = (
    b"put ",
    b"peek ",
    b"peek-ready",
    b"peek-delayed",
    b"peek-buried",
    b"reserve-with-timeout ",
    b"reserve-job ",
    b"reserve",
    b"delete ",
    b"release ",
    b"bury ",
    b"kick ",
    b"kick-job ",
    b"touch ",
    b"stats-job ",
    b"stats-tube ",
    b"stats",
    b"use ",
    b"watch ",
    b"ignore ",
    b"list-tubes-watched",
    b"list-tube-used",
    b"list-tubes",
    b"quit",
    b"pause-tube",
)
_PREFIX_SET = frozenset(_PREFIXES)
_BAD_FORMAT = (ERROR, BAD_FORMAT, None)
_UNKNOWN = (ERROR, UNKNOWN_COMMAND, None)
# Both follow a put whose numbers parsed, so beanstalkd counted it in cmd-put.
_JOB_TOO_BIG = (ERROR, JOB_TOO_BIG, "put")
_EXPECTED_CRLF = (ERROR, EXPECTED_CRLF, "put")

# Framer modes: reading a command line, a put's body, skipping a too-big
# body, or throwing away a too-long line up to its end.
_LINE, _BODY, _SKIP, _ENDLINE = range(4)


def valid_tube_name(name: bytes) -> bool:
    """True for a name beanstalkd accepts: 1-200 NAME_CHARS, not starting with ``-``."""
    return len(name) <= MAX_TUBE_NAME and _VALID_NAME.fullmatch(name) is not None


def _numbers(pattern: re.Pattern[bytes], line: bytes, start: int, *limits: int) -> Any:
    """The numbers ``pattern`` reads from ``line[start:]`` (all of it), or None if bad."""
    m = pattern.fullmatch(line, start)
    if m is None:
        return None
    values = tuple(map(int, m.groups()))
    for value, limit in zip(values, limits, strict=True):
        if value > limit:
            return None
    return values


def _c_integer(text: bytes) -> tuple[int, bool]:
    """C's strtol/strtoul on ``text``: (value, whether there were digits); no range check."""
    m = _C_INT.match(text)
    assert m is not None  # every part of the pattern may be empty
    sign, digits = m.groups()
    if not digits:
        return 0, False
    value = int(digits)
    return (-value if sign == b"-" else value), True


class CommandFramer(Framer):
    """Cuts a beanstalkd client's stream into parsed commands (see the module docstring).

    ``max_job_size`` is the largest body a ``put`` may declare (beanstalkd's
    ``-z``, :data:`DEFAULT_MAX_JOB_SIZE` by default). :meth:`feed` never
    raises for bad input: errors are frames.
    """

    __slots__ = ("_max_job_size", "_mode", "_need", "_put")

    def __init__(self, max_job_size: int = DEFAULT_MAX_JOB_SIZE) -> None:
        if not isinstance(max_job_size, int) or max_job_size < 0:
            raise ValueError(f"max_job_size must be a number of bytes >= 0, not {max_job_size!r}")
        super().__init__(max_job_size=max_job_size)
        self._max_job_size = max_job_size
        self._mode = _LINE
        self._need = 0  # bytes of body to take or skip
        self._put: tuple[int, int, int] = (0, 0, 0)  # pri, delay, ttr of the body awaited

    def feed(self, data: bytes) -> list[Any]:
        """Append ``data`` and return the commands (and errors) it completes, in order."""
        buf = self._buffer
        if (
            not buf
            and self._mode == _LINE
            and type(data) is bytes
            and 0 <= data.find(b"\r") == len(data) - 2 < LINE_BUF_SIZE - 2
            and data[-1:] == b"\n"
        ):
            # The common read: exactly one whole command line (a client waits for
            # each answer). Same result as the loop below, without it.
            frame = self._command(data[:-2])
            return [] if frame is None else [frame]
        if buf:
            buf += data
            if self._mode == _BODY and len(buf) < self._need:
                return []  # a body still arriving: no rescan, so buffering stays linear
            data = bytes(buf)
            buf.clear()
        elif type(data) is not bytes:
            data = bytes(data)
        frames: list[Any] = []
        pos = 0
        end = len(data)
        while pos < end:
            mode = self._mode
            if mode == _BODY:
                need = self._need
                if end - pos < need:
                    break
                body = data[pos : pos + need]
                pos += need
                self._mode = _LINE
                if body.endswith(b"\r\n"):
                    frames.append(("put", *self._put, body))
                else:
                    frames.append(_EXPECTED_CRLF)
                continue
            if mode == _SKIP:
                taken = min(self._need, end - pos)
                pos += taken
                self._need -= taken
                if self._need:
                    break
                self._mode = _LINE
                frames.append(_JOB_TOO_BIG)
                continue
            # A line (or the rest of a too-long one): only the first \r may end it.
            limit = min(end, pos + LINE_BUF_SIZE)
            cr = data.find(b"\r", pos, limit - 1)
            if cr >= 0 and data[cr + 1] == 10:  # b"\n"
                line = data[pos:cr]
                pos = cr + 2
                if mode == _ENDLINE:
                    self._mode = _LINE
                    frames.append(_BAD_FORMAT)
                else:
                    frame = self._command(line)
                    if frame is not None:  # None: a put whose body comes next
                        frames.append(frame)
                continue
            if limit - pos < LINE_BUF_SIZE:
                break  # not a whole line yet
            # LINE_BUF_SIZE bytes and no end: beanstalkd drops them and skips to the end.
            pos = limit
            self._mode = _ENDLINE
        if pos < end:
            buf += data[pos:] if pos else data
        return frames

    def _command(self, line: bytes) -> Any:
        """Parse one command line (without its CRLF) into a frame; may start a body."""
        if b"\0" in line:
            return _BAD_FORMAT
        if line.startswith(b"put "):
            return self._put_header(line)
        # The command word (with its space) usually is the prefix: one lookup.
        space = line.find(b" ")
        prefix = line[: space + 1] if space >= 0 else line
        if prefix not in _PREFIX_SET:
            for prefix in _PREFIXES:
                if line.startswith(prefix):
                    break
            else:
                return _UNKNOWN
        bare = _BARE.get(prefix)
        if bare is not None:
            return bare if len(line) == len(prefix) else _BAD_FORMAT
        name = _ID_COMMANDS.get(prefix)
        if name is not None:
            rest = line[len(prefix) :]
            if rest.isdigit():
                value = int(rest)
                return (name, value) if value <= _U64 else _BAD_FORMAT
            values = _numbers(_ONE, line, len(prefix), _U64)
            return _BAD_FORMAT if values is None else (name, values[0])
        name = _NAME_COMMANDS.get(prefix)
        if name is not None or prefix == b"stats-tube ":
            tube = line[len(prefix) :]
            if not valid_tube_name(tube):
                return _BAD_FORMAT
            return (name or "stats-tube", tube)
        if prefix == b"release ":
            values = _numbers(_THREE, line, 8, _U64, _U32, _U32)
            return _BAD_FORMAT if values is None else ("release", *values)
        if prefix == b"bury ":
            values = _numbers(_TWO, line, 5, _U64, _U32)
            return _BAD_FORMAT if values is None else ("bury", *values)
        if prefix == b"reserve-with-timeout ":
            parsed = _c_integer(line[21:])
            if not _LONG_MIN <= parsed[0] <= _LONG_MAX:  # ERANGE
                return _BAD_FORMAT
            # The long is stored in a C int: keep its low 32 bits, signed.
            timeout = parsed[0] & _U32
            return ("reserve-with-timeout", timeout - (1 << 32) if timeout >> 31 else timeout)
        if prefix == b"kick ":
            parsed = _c_integer(line[5:])
            if not parsed[1] or abs(parsed[0]) > _U64:  # no digits, or ERANGE
                return _BAD_FORMAT
            return ("kick", parsed[0] & _U32)  # strtoul wraps a negative; a uint keeps 32 bits
        if prefix == b"quit":
            return ("quit",)
        return self._pause_tube(line)

    def _put_header(self, line: bytes) -> Any:
        parts = line.split(b" ")
        if (
            len(parts) == 5
            and parts[1].isdigit()
            and parts[2].isdigit()
            and parts[3].isdigit()
            and parts[4].isdigit()
        ):  # the usual "put 1024 0 60 100": no generator, it runs once per put
            pri, delay, ttr, size = int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])
            tail = b""
        else:
            m = _PUT.match(line, 4)
            if m is None:
                return _BAD_FORMAT
            pri, delay, ttr, size = map(int, m.groups())
            tail = line[m.end() :]
        if pri > _U32 or delay > _U32 or ttr > _U32 or size > _U32:
            return _BAD_FORMAT
        if size > self._max_job_size:
            self._mode = _SKIP  # the body and its CRLF go, then JOB_TOO_BIG
            self._need = size + 2
            return None
        if tail:
            return (ERROR, BAD_FORMAT, "put")  # counted, and the body is read as commands
        self._mode = _BODY
        self._need = size + 2
        self._put = (pri, delay, ttr)
        return None

    def _pause_tube(self, line: bytes) -> Any:
        start = 10  # just after "pause-tube": spaces, then the name
        while line[start : start + 1] == b" ":
            start += 1
        m = _NAME.match(line, start)
        if m is None:
            return _BAD_FORMAT
        values = _numbers(_ONE, line, m.end(), _U32)
        if values is None:
            return _BAD_FORMAT
        tube = m.group()
        if not valid_tube_name(tube):
            return (ERROR, BAD_FORMAT, "pause-tube")
        return ("pause-tube", tube, values[0])

    def encode(self, frame: Any) -> bytes:
        """Replies are written ready-made: return ``frame`` as bytes."""
        return bytes(frame)
