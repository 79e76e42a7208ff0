"""examples/jobqueue is compatible with beanstalkd: the same replies, byte for byte.

"Compatible" is checked three ways, each against the real beanstalkd (1.12,
the reference) and the example server (``jobqueue``), both real processes on
free ports of 127.0.0.1 (see :mod:`tests.examples.beanstalk`):

* **Scripted conversations** (:data:`SCRIPTS`): the bytes a client sends,
  step by step, over raw sockets. Each script runs against both servers at
  once and the two transcripts must be equal, reply by reply. No reply is
  written down here: beanstalkd's transcript *is* the expectation. Only what
  depends on the clock or the process (a job's age, the server's pid...) is
  normalised, and job ids are named by the order they were made in, so the
  servers may be shared by the tests of this module (each script has a tube
  of its own). Scripts that read server-wide counters get fresh servers.
* **Client-level cases** with greenstalk, the real client library: the same
  calls and the same results on each server (``server`` is parametrized over
  both).
* **Queue semantics**: ready jobs in (priority, id) order, a delayed job
  becoming ready, a client that disconnects holding a reservation.

Without beanstalkd the pairs skip and the example-only cases still run;
until ``examples/jobqueue/server.py`` exists, its side skips. Run it::

    PYTHONASYNCIODEBUG=1 .venv/bin/python -m pytest -q tests/examples/test_beanstalk_compat.py
"""

from __future__ import annotations

import itertools
import re
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import greenstalk
import pytest

from tests.examples.beanstalk import KINDS, Server, running, start_server

#: Both servers run with this max-job-size (beanstalkd -z, JOBQUEUE_MAX_JOB_SIZE),
#: small so that JOB_TOO_BIG is cheap to reach; every other script stays below it.
MAX_JOB_SIZE = 100
#: beanstalkd's command line limit, "\r\n" included (LINE_BUF_SIZE in its dat.h).
LINE_LIMIT = 224
#: Seconds one reply may take: the longest wait a script asks a server for
#: (reserve-with-timeout, a delay, a TTR) is 2 s; a passing test never waits this long.
REPLY_TIMEOUT = 10.0
#: Seconds a script pauses so that a job's TTR of 1 s has run out: half a
#: second of room for a loaded machine.
TTR_PAUSE = 1.5
#: Polls of a server's state before giving up (each REPLY_TIMEOUT-bounded).
POLLS = 200


# -- scripted conversations ----------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a script: send ``data`` on connection ``conn``, read ``replies`` replies.

    In ``data``, ``{tube}`` is the script's own tube name and ``{1}``,
    ``{2}``... the ids of the jobs made so far (from the ``INSERTED``
    replies, in order). ``pause`` seconds pass before the step (a real
    wait: TTR expiry). ``close`` closes the connection instead of sending.
    """

    data: bytes = b""
    replies: int = 1
    conn: int = 0
    pause: float = 0.0
    close: bool = False


def s(data: bytes, replies: int = 1, **options: object) -> Step:
    """A step (short, for the tables below)."""
    return Step(data, replies, **options)  # type: ignore[arg-type]


def put(body: bytes, pri: int = 0, delay: int = 0, ttr: int = 10) -> Step:
    """A well-formed put of ``body``."""
    return s(b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body))


#: Connection 0 uses and watches only the script's tube.
SETUP = [s(b"use {tube}\r\n"), s(b"watch {tube}\r\n"), s(b"ignore default\r\n")]


@dataclass(frozen=True)
class Script:
    """A conversation: its steps, and whether it needs servers of its own."""

    steps: list[Step]
    fresh: bool = False  # reads server-wide state (stats, list-tubes): fresh servers


SCRIPTS: dict[str, Script] = {
    "tubes": Script(
        [
            s(b"list-tube-used\r\n"),
            s(b"list-tubes-watched\r\n"),
            s(b"use {tube}\r\n"),
            s(b"list-tube-used\r\n"),
            s(b"watch {tube}\r\n"),
            s(b"watch {tube}\r\n"),  # already watched: the count stays
            s(b"list-tubes-watched\r\n"),
            s(b"ignore default\r\n"),
            s(b"list-tubes-watched\r\n"),
            s(b"ignore {tube}\r\n"),  # the last one: NOT_IGNORED
            s(b"ignore nothing-{tube}\r\n"),  # not watched: still the count
            s(b"watch a+b/c;d.e$f_g(h)-{tube}\r\n"),  # every kind of name character
            s(b"list-tubes-watched\r\n"),
            s(b"use default\r\n"),
            s(b"use {tube}\r\nlist-tube-used\r\n", 2),  # pipelined
        ]
    ),
    "tube-names": Script(
        [
            s(b"use {tube}" + b"x" * 150 + b"\r\n"),
            s(b"use " + b"n" * 200 + b"\r\n"),  # 200 characters: the longest name
            s(b"list-tube-used\r\n"),
            s(b"use " + b"n" * 201 + b"\r\n"),  # one more: BAD_FORMAT
            s(b"watch " + b"n" * 201 + b"\r\n"),
            s(b"ignore " + b"n" * 201 + b"\r\n"),
            s(b"use -{tube}\r\n"),  # may not start with '-'
            s(b"watch -{tube}\r\n"),
            s(b"use {tube}!\r\n"),
            s(b"use {tube} x\r\n"),
            s(b"use \r\n"),
            s(b"use\r\n"),
            s(b"watch\r\n"),
            s(b"use fo\x00o\r\n"),  # a NUL in the line
            s(b"use foo\nlist-tube-used\r\n"),  # a bare LF does not end a line
            s(b"list-tube-used\r\n"),
        ]
    ),
    "put-reserve-delete": Script(
        [
            *SETUP,
            put(b"hello", pri=5),
            s(b"peek {1}\r\n"),
            s(b"peek-ready\r\n"),
            s(b"stats-job {1}\r\n"),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"stats-job {1}\r\n"),
            s(b"peek-ready\r\n"),
            s(b"delete {1}\r\n"),
            s(b"delete {1}\r\n"),
            s(b"peek {1}\r\n"),
            s(b"stats-job {1}\r\n"),
            s(b"reserve-with-timeout 0\r\n"),  # nothing left: TIMED_OUT
            put(b""),  # an empty body
            put(b"two\r\nlines"),  # CRLF inside a body
            s(b"reserve\r\n"),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"delete {2}\r\n"),
            s(b"delete {3}\r\n"),
            put(b"x" * MAX_JOB_SIZE),  # exactly max-job-size: taken
            s(b"peek {4}\r\n"),
            s(b"delete {4}\r\n"),
        ]
    ),
    "put-arguments": Script(
        [
            s(b"use {tube}\r\n"),
            put(b"a", pri=4294967295, delay=0, ttr=4294967295),  # the largest u32s
            s(b"stats-job {1}\r\n"),
            put(b"b", ttr=0),  # TTR 0 becomes 1
            s(b"stats-job {2}\r\n"),
            s(b"put  1  0  5  1\r\nc\r\n"),  # runs of spaces
            s(b"stats-job {3}\r\n"),
            s(b"put 007 0 5 1\r\nd\r\n"),  # leading zeros
            s(b"stats-job {4}\r\n"),
            s(b"stats-tube {tube}\r\n"),
            s(b"delete {1}\r\ndelete {2}\r\ndelete {3}\r\ndelete {4}\r\n", 4),
        ]
    ),
    "bad-format": Script(
        [
            s(b"use {tube}\r\n"),
            s(b"put 0 0 10\r\n"),  # a missing argument
            s(b"put\r\n"),
            s(b"put 0 0 10 \r\n"),
            s(b"put -1 0 10 1\r\n"),  # negative
            s(b"put 0 -1 10 1\r\n"),
            s(b"put 0 0 -10 1\r\n"),
            s(b"put 0 0 10 -1\r\n"),
            s(b"put a 0 10 1\r\n"),  # not a number
            s(b"put 0 0 10 1x\r\n"),
            s(b"put 0 0 10 1 extra\r\n"),  # trailing garbage
            s(b"put 4294967296 0 10 1\r\n"),  # past 32 bits
            s(b"put 0 4294967296 10 1\r\n"),
            s(b"put 0 0 10 99999999999999999999\r\n"),
            s(b"put +1 0 10 1\r\n"),
            s(b"delete\r\n"),
            s(b"delete \r\n"),
            s(b"delete x\r\n"),
            s(b"delete -1\r\n"),
            s(b"delete 1 2\r\n"),
            s(b"delete 18446744073709551616\r\n"),  # past 64 bits
            s(b"release 1\r\n"),
            s(b"release 1 x 0\r\n"),
            s(b"release 1 0 -1\r\n"),
            s(b"bury 1\r\n"),
            s(b"bury 1 x\r\n"),
            s(b"touch x\r\n"),
            s(b"kick\r\n"),
            s(b"kick x\r\n"),
            s(b"kick -1\r\n"),  # 1.12 takes it: KICKED 0
            s(b"kick-job x\r\n"),
            s(b"peek x\r\n"),
            s(b"peek-ready x\r\n"),  # trailing garbage
            s(b"peek-delayed x\r\n"),
            s(b"peek-buried x\r\n"),
            s(b"reserve x\r\n"),
            s(b"reserve-with-timeout\r\n"),
            s(b"reserve-with-timeout x\r\n"),  # 1.12 reads no number as 0: TIMED_OUT
            s(b"stats x\r\n"),
            s(b"stats-job x\r\n"),
            s(b"stats-tube -x\r\n"),
            s(b"list-tubes x\r\n"),
            s(b"list-tube-used x\r\n"),
            s(b"list-tubes-watched x\r\n"),
            s(b"pause-tube {tube}\r\n"),
            s(b"pause-tube {tube} x\r\n"),
            s(b"pause-tube -x 1\r\n"),
            s(b"list-tube-used\r\n"),  # and the connection still works
        ]
    ),
    "unknown-command": Script(
        [
            s(b"foo\r\n"),
            s(b"\r\n"),  # an empty line
            s(b" use default\r\n"),
            s(b"PUT 0 0 10 1\r\n"),  # commands are lower case
            s(b"List-tubes\r\n"),
            s(b"usedefault\r\n"),
            s(b"peek\r\n"),
            s(b"kick-job\r\n"),
            s(b"list-tube-used\r\n"),
        ]
    ),
    "command-prefixes": Script(
        # beanstalkd matches a command by its prefix, then checks what follows.
        [
            s(b"reservee\r\n"),
            s(b"stats-tubes\r\n"),
            s(b"statsx\r\n"),
            s(b"list-tubesx\r\n"),
            s(b"list-tube-used\r\n"),
            s(b"quit x\r\n"),  # quit, whatever follows: the connection closes
        ]
    ),
    "release-bury-kick": Script(
        [
            *SETUP,
            put(b"job", pri=10),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"release {1} 7 0\r\n"),  # a new priority
            s(b"stats-job {1}\r\n"),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"bury {1} 3\r\n"),
            s(b"peek-buried\r\n"),
            s(b"stats-job {1}\r\n"),
            s(b"stats-tube {tube}\r\n"),
            s(b"reserve-with-timeout 0\r\n"),  # buried: not reservable
            s(b"kick 1\r\n"),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"bury {1} 3\r\n"),
            s(b"kick-job {1}\r\n"),
            s(b"kick-job {1}\r\n"),  # ready: nothing to kick
            s(b"reserve-with-timeout 0\r\n"),
            s(b"release {1} 0 100\r\n"),  # with a delay: delayed
            s(b"stats-job {1}\r\n"),
            s(b"peek-delayed\r\n"),
            s(b"kick-job {1}\r\n"),  # kick-job takes a delayed job too
            s(b"stats-job {1}\r\n"),
            s(b"kick 5\r\n"),  # nothing buried or delayed
            s(b"release {1} 0 0\r\n"),  # not reserved
            s(b"bury {1} 0\r\n"),
            s(b"touch {1}\r\n"),
            s(b"kick-job 999999999\r\n"),
            s(b"delete {1}\r\n"),  # a ready job may be deleted by anyone
        ]
    ),
    "kick-buried-first": Script(
        [
            *SETUP,
            put(b"buried"),
            put(b"delayed", delay=100),
            put(b"buried too"),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"bury {1} 0\r\n"),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"bury {3} 0\r\n"),
            s(b"kick 1\r\n"),  # the buried, oldest first, before any delayed
            s(b"peek-buried\r\n"),
            s(b"kick 10\r\n"),
            s(b"kick 10\r\n"),  # now the delayed
            s(b"kick 10\r\n"),
            s(b"peek-ready\r\n"),
            s(b"delete {1}\r\ndelete {2}\r\ndelete {3}\r\n", 3),
        ]
    ),
    "priorities": Script(
        [
            *SETUP,
            put(b"a", pri=10),
            put(b"b", pri=5),
            put(b"c", pri=5),
            put(b"d", pri=4294967295),
            put(b"e", pri=0),
            put(b"f", pri=1024),  # urgent is below 1024
            s(b"stats-tube {tube}\r\n"),
            s(b"peek-ready\r\n"),
            *[s(b"reserve-with-timeout 0\r\n")] * 6,
            s(b"stats-tube {tube}\r\n"),
            *[s(b"delete {%d}\r\n" % n) for n in range(1, 7)],
        ]
    ),
    "delayed": Script(
        [
            *SETUP,
            put(b"later", delay=100),
            s(b"stats-job {1}\r\n"),
            s(b"peek-delayed\r\n"),
            s(b"peek-ready\r\n"),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"stats-tube {tube}\r\n"),
            s(b"kick 10\r\n"),
            s(b"peek-ready\r\n"),
            s(b"stats-job {1}\r\n"),
            s(b"delete {1}\r\n"),
        ]
    ),
    "delay-runs-out": Script(
        [
            *SETUP,
            put(b"soon", delay=1),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"reserve-with-timeout 2\r\n"),  # comes after about 1 s
            s(b"delete {1}\r\n"),
        ]
    ),
    "touch": Script(
        [
            *SETUP,
            put(b"t", ttr=10),
            s(b"touch {1}\r\n"),  # not reserved
            s(b"reserve-with-timeout 0\r\n"),
            s(b"touch {1}\r\n"),
            s(b"touch 999999999\r\n"),
            s(b"release {1} 0 0\r\n"),
            s(b"touch {1}\r\n"),
            s(b"delete {1}\r\n"),
        ]
    ),
    "pause-tube": Script(
        [
            *SETUP,
            put(b"p"),
            s(b"pause-tube {tube} 100\r\n"),
            s(b"reserve-with-timeout 0\r\n"),  # paused: nothing to reserve
            s(b"stats-tube {tube}\r\n"),
            s(b"pause-tube {tube} 0\r\n"),
            s(b"stats-tube {tube}\r\n"),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"pause-tube nothing-{tube} 1\r\n"),
            s(b"delete {1}\r\n"),
        ]
    ),
    "peek": Script(
        [
            s(b"use {tube}\r\n"),
            s(b"peek-ready\r\n"),
            s(b"peek-delayed\r\n"),
            s(b"peek-buried\r\n"),
            s(b"peek 0\r\n"),
            s(b"peek 999999999\r\n"),
            put(b"peeked", pri=3),
            s(b"peek {1}\r\n"),
            s(b"peek-ready\r\n"),
            s(b"stats-job 999999999\r\n"),
            s(b"stats-tube nothing-{tube}\r\n"),
            s(b"delete {1}\r\n"),
        ]
    ),
    "job-too-big": Script(
        [
            s(b"use {tube}\r\n"),
            put(b"x" * (MAX_JOB_SIZE + 1)),  # JOB_TOO_BIG; the body is skipped
            s(b"list-tube-used\r\n"),
            s(b"put 0 0 10 %d\r\n" % (MAX_JOB_SIZE + 1), 0),  # the body comes later...
            s(b"y" * (MAX_JOB_SIZE + 1) + b"\r\n"),  # ...and the reply after it
            s(b"put 0 0 10 %d\r\n" % (MAX_JOB_SIZE * 100), 0),
            s(b"z" * (MAX_JOB_SIZE * 100) + b"\r\nlist-tube-used\r\n", 2),
            s(b"peek-ready\r\n"),
        ]
    ),
    "expected-crlf": Script(
        [
            s(b"use {tube}\r\n"),
            s(b"put 0 0 10 5\r\nhelloXX"),  # the two bytes after the body are not CRLF
            s(b"list-tube-used\r\n"),
            s(b"put 0 0 10 5\r\nhelloXXlist-tube-used\r\n", 2),
            s(b"put 0 0 10 5\r\nhi\r\n", 0),  # short: the next line is taken as body
            s(b"list-tube-used\r\n", 2),
            s(b"peek-ready\r\n"),
        ]
    ),
    "line-limit": Script(
        [
            s(b"kick " + b"0" * (LINE_LIMIT - 8) + b"1\r\n"),  # exactly the limit: taken
            s(b"kick " + b"0" * (LINE_LIMIT - 6) + b"1\r\n"),  # 2 bytes over: BAD_FORMAT
            s(b"use " + b"a" * 300 + b"\r\n"),
            s(b"list-tube-used\r\n"),
            s(b"x" * 10_000 + b"\r\n"),  # one BAD_FORMAT for the whole line
            s(b"x" * 1_000, 0),  # over the limit, then...
            s(b"x" * 1_000 + b"\r\nlist-tube-used\r\n", 2),  # ...its end, and a command
        ]
    ),
    "deadline-soon-and-ttr": Script(
        [
            *SETUP,
            put(b"short", ttr=1),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"reserve-with-timeout 2\r\n"),  # within 1 s of the TTR: DEADLINE_SOON
            s(b"reserve\r\n"),  # still
            # beanstalkd 1.12 may leave a connection that holds a job out of
            # its timer heap until the connection sends something: then the
            # first command after the TTR still sees the job reserved, the
            # next one sees it timed out. So one neutral command first.
            s(b"list-tube-used\r\n", pause=TTR_PAUSE),
            s(b"stats-job {1}\r\n"),  # the TTR ran out: ready again
            s(b"reserve-with-timeout 0\r\n"),
            s(b"stats-job {1}\r\n"),
            s(b"delete {1}\r\n"),
        ],
        fresh=True,  # only this connection, as the note above needs
    ),
    "quit": Script([s(b"use {tube}\r\n"), s(b"quit\r\n")]),
    "quit-pipelined": Script([s(b"quit\r\nlist-tube-used\r\n")]),
    "two-clients": Script(
        [
            *SETUP,
            s(b"watch {tube}\r\n", conn=1),
            put(b"shared"),
            s(b"reserve-with-timeout 0\r\n", conn=1),
            s(b"delete {1}\r\n"),  # reserved by the other client
            s(b"release {1} 0 0\r\n"),
            s(b"bury {1} 0\r\n"),
            s(b"touch {1}\r\n"),
            s(b"kick-job {1}\r\n"),
            s(b"stats-job {1}\r\n"),
            s(b"reserve-with-timeout 0\r\n"),
            Step(close=True, conn=1, replies=0),  # it leaves holding the job...
            s(b"reserve-with-timeout 2\r\n"),  # ...which is ready again
            s(b"delete {1}\r\n"),
        ]
    ),
    "server-wide": Script(
        [
            s(b"list-tubes\r\n"),
            s(b"stats\r\n"),
            *SETUP,
            put(b"one", pri=2000),
            put(b"two", delay=100),
            put(b"three"),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"bury {3} 0\r\n"),
            s(b"reserve-with-timeout 0\r\n"),
            s(b"peek {1}\r\npeek-ready\r\npeek-delayed\r\npeek-buried\r\n", 4),
            s(b"watch other\r\nuse other\r\nput 0 0 10 1\r\nx\r\n", 3),
            s(b"list-tubes\r\n"),
            s(b"stats-tube {tube}\r\n"),
            s(b"stats-tube default\r\n"),
            s(b"stats-job {1}\r\n"),
            s(b"foo\r\n"),
            s(b"stats\r\n"),
            s(b"delete {1}\r\nkick 1\r\ntouch {1}\r\npause-tube other 0\r\n", 4),
            s(b"stats\r\n"),
        ],
        fresh=True,
    ),
}

#: The keys of the stats bodies (stats, stats-tube, stats-job) whose values
#: differ between two runs of the same server (clock, process, host, binlog):
#: the rest of each body must be equal. A job's ``id`` is named by its order,
#: the server's random ``id`` is starred too.
VOLATILE = {
    b"age",
    b"time-left",
    b"pause-time-left",
    b"pid",
    b"version",
    b"rusage-utime",
    b"rusage-stime",
    b"uptime",
    b"binlog-oldest-index",
    b"binlog-current-index",
    b"binlog-records-migrated",
    b"binlog-records-written",
    b"binlog-max-size",
    b"id",
    b"hostname",
    b"os",
    b"platform",
}
CLOSED = b"<connection closed>"
TIMED_OUT = b"<no reply in time>"
_WITH_BODY = (b"RESERVED", b"FOUND", b"OK")
_WITH_ID = (b"INSERTED", b"RESERVED", b"FOUND", b"BURIED")


class Replies:
    """Reads beanstalkd replies off a blocking socket: a line, and the body it announces."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed = False

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:  # reset by the peer
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def read(self) -> bytes:
        """One whole reply (line + body), or CLOSED, or TIMED_OUT."""
        while b"\r\n" not in self.buffer:
            if self.closed or not self._fill():
                return CLOSED if self.closed else TIMED_OUT
        line, _, rest = self.buffer.partition(b"\r\n")
        words = line.split(b" ")
        size = 0
        if words[0] in _WITH_BODY and words[-1].isdigit():
            size = int(words[-1]) + 2
        while len(rest) < size:
            if self.closed or not self._fill():
                return (CLOSED if self.closed else TIMED_OUT) + b" in the body of " + line
            line, _, rest = self.buffer.partition(b"\r\n")
        reply = line + b"\r\n" + rest[:size]
        self.buffer = rest[size:]
        if size and not reply.endswith(b"\r\n"):
            return reply + b" <body not followed by CRLF>"
        return reply


def normalise(reply: bytes, ids: list[bytes]) -> bytes:
    """``reply`` with job ids named by their order and volatile stats values starred."""
    line, _, body = reply.partition(b"\r\n")
    words = line.split(b" ")
    if words[0] in _WITH_ID and len(words) > 1 and words[1] in ids:
        words[1] = b"{%d}" % (ids.index(words[1]) + 1)
    if words[0] == b"OK" and body.startswith(b"---\n"):
        lines = body.split(b"\n")
        for n, entry in enumerate(lines):
            key, sep, value = entry.partition(b": ")
            if sep and key == b"id" and value in ids:
                lines[n] = b"id: {%d}" % (ids.index(value) + 1)
            elif sep and key in VOLATILE:
                lines[n] = key + b": *"
        body = b"\n".join(lines)
        words = [b"OK", b"%d" % (len(body) - 2)]
    return b" ".join(words) + (b"\r\n" + body if body else b"")


def run_script(server: Server, steps: list[Step], tube: str) -> list[str]:
    """Play ``steps`` against ``server``; return the transcript, one line per reply."""
    transcript: list[str] = []
    ids: list[bytes] = []
    conns: dict[int, tuple[socket.socket, Replies]] = {}
    try:
        for step in steps:
            if step.pause:
                time.sleep(step.pause)
            if step.conn not in conns:
                sock = socket.create_connection(server.address, timeout=REPLY_TIMEOUT)
                conns[step.conn] = (sock, Replies(sock))
            sock, replies = conns[step.conn]
            if step.close:
                sock.close()
                transcript.append(f"#{step.conn} closes")
                continue
            template = step.data.replace(b"{tube}", tube.encode())
            data = template
            for n, job_id in enumerate(ids, 1):
                data = data.replace(b"{%d}" % n, job_id)
            if not replies.closed:
                try:
                    sock.sendall(data)
                except OSError as exc:
                    transcript.append(f"#{step.conn} send failed: {type(exc).__name__}")
            # The template is shown: ids differ between servers, their names do not.
            shown = (
                template
                if len(template) <= 80
                else template[:60] + b"...(%d bytes)" % len(template)
            )
            for _ in range(step.replies):
                reply = replies.read()
                if reply.startswith(b"INSERTED "):
                    ids.append(reply.split()[1])
                transcript.append(f"#{step.conn} {shown!r} -> {normalise(reply, ids)!r}")
                if reply == CLOSED:
                    break
        # Whatever a server says beyond the script shows here, as a reply to this.
        for index, (sock, replies) in sorted(conns.items()):
            if sock.fileno() < 0 or replies.closed:
                continue
            sock.sendall(b"list-tube-used\r\n")
            transcript.append(f"#{index} end -> {replies.read()!r}")
    finally:
        for sock, _ in conns.values():
            sock.close()
    return transcript


# -- servers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Server]]:
    """The module's servers, one of each kind, started on first use and stopped at the end."""
    servers: dict[str, Server] = {}
    log_dir = tmp_path_factory.mktemp("servers")

    def get(kind: str) -> Server:
        server = servers.get(kind)
        if server is None or server.proc.poll() is not None:
            server = servers[kind] = start_server(kind, log_dir, max_job_size=MAX_JOB_SIZE)
        return server

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest, shared: Callable[[str], Server]) -> Server:
    """Each kind of server in turn (shared by the module's tests)."""
    return shared(str(request.param))


_tube_numbers = itertools.count(1)


@pytest.fixture
def tube(request: pytest.FixtureRequest) -> str:
    """A tube name of this test's own, so tests on a shared server see only their jobs."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")
    return f"t{next(_tube_numbers)}-{name}"[:60]


def both(fn: Callable[[Server], list[str]], servers: tuple[Server, Server]) -> list[list[str]]:
    """``fn`` on both servers at once (the real waits of a script overlap)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(fn, servers))


def show(server: Server) -> str:
    return f"{server.kind} log:\n{server.log()}"


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_the_same_conversation_gets_the_same_replies(
    name: str, shared: Callable[[str], Server], tube: str, tmp_path: Path
) -> None:
    script = SCRIPTS[name]
    if script.fresh:
        with (
            running("beanstalkd", tmp_path, max_job_size=MAX_JOB_SIZE) as reference,
            running("jobqueue", tmp_path, max_job_size=MAX_JOB_SIZE) as example,
        ):
            expected, got = both(
                lambda srv: run_script(srv, script.steps, tube), (reference, example)
            )
    else:
        reference, example = shared("beanstalkd"), shared("jobqueue")
        expected, got = both(lambda srv: run_script(srv, script.steps, tube), (reference, example))
    assert got == expected, show(example)


# -- the real client library ---------------------------------------------------------


@pytest.fixture
def client(server: Server, tube: str) -> Iterator[greenstalk.Client]:
    """A greenstalk client of ``server`` that uses and watches only the test's tube."""
    with greenstalk.Client(server.address, encoding=None, use=tube, watch=tube) as client:
        yield client


def test_greenstalk_put_reserve_delete(client: greenstalk.Client) -> None:
    job_id = client.put(b"hello", priority=7, ttr=30)
    assert isinstance(job_id, int)
    job = client.reserve(timeout=0)
    assert (job.id, job.body) == (job_id, b"hello")
    stats = client.stats_job(job)
    assert (stats["state"], stats["pri"], stats["ttr"], stats["reserves"]) == ("reserved", 7, 30, 1)
    client.touch(job)
    client.delete(job)
    with pytest.raises(greenstalk.NotFoundError):
        client.delete(job)
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=0)


def test_greenstalk_tubes(client: greenstalk.Client, tube: str) -> None:
    assert client.using() == tube
    assert client.watching() == [tube]
    with pytest.raises(greenstalk.NotIgnoredError):
        client.ignore(tube)
    assert client.watch(f"{tube}-b") == 2
    assert client.ignore(tube) == 1
    assert client.watching() == [f"{tube}-b"]
    client.use(f"{tube}-b")
    assert client.using() == f"{tube}-b"
    tubes = client.tubes()
    assert f"{tube}-b" in tubes
    assert tube not in tubes  # neither used nor watched, and empty: gone
    client.put(b"in b")
    stats = client.stats_tube(f"{tube}-b")
    assert (stats["name"], stats["current-jobs-ready"], stats["current-watching"]) == (
        f"{tube}-b",
        1,
        1,
    )
    client.delete(client.reserve(timeout=0))
    with pytest.raises(greenstalk.NotFoundError):
        client.stats_tube(f"{tube}-nothing")


def test_greenstalk_bury_kick_peek(client: greenstalk.Client) -> None:
    first, second = client.put(b"one"), client.put(b"two", delay=100)
    assert client.peek(first).body == b"one"
    assert client.peek_ready().id == first
    assert client.peek_delayed().id == second
    client.bury(client.reserve(timeout=0), priority=3)
    assert client.peek_buried().id == first
    assert client.stats_job(first)["state"] == "buried"
    with pytest.raises(greenstalk.NotFoundError):
        client.peek_ready()
    assert client.kick(10) == 1  # the buried job only
    assert client.kick(10) == 1  # then the delayed one
    with pytest.raises(greenstalk.NotFoundError):
        client.kick_job(second)  # ready now: nothing to kick
    assert client.stats_job(first)["kicks"] == 1
    client.release(client.reserve(timeout=0), priority=9, delay=100)
    with pytest.raises(greenstalk.NotFoundError):
        client.peek_buried()
    for job_id in (first, second):
        client.delete(job_id)
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(first)


def test_greenstalk_errors(client: greenstalk.Client) -> None:
    with pytest.raises(greenstalk.JobTooBigError):
        client.put(b"x" * (MAX_JOB_SIZE + 1))
    with pytest.raises(greenstalk.BadFormatError):
        client.use("-starts-with-a-dash")
    with pytest.raises(greenstalk.NotFoundError):
        client.kick_job(999_999_999)
    client.pause_tube(client.using(), 100)
    client.put(b"paused")
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=0)
    client.pause_tube(client.using(), 0)
    client.delete(client.reserve(timeout=0))


def test_greenstalk_stats_have_beanstalkds_keys_in_order(
    shared: Callable[[str], Server], tube: str
) -> None:
    found = {}
    for kind in KINDS:
        with greenstalk.Client(shared(kind).address, use=tube, watch=tube) as client:
            job_id = client.put("x")
            found[kind] = (
                list(client.stats()),
                list(client.stats_tube(tube)),
                list(client.stats_job(job_id)),
            )
            client.delete(job_id)
    assert found["jobqueue"] == found["beanstalkd"]


# -- queue semantics -----------------------------------------------------------------


def test_ready_jobs_come_by_priority_then_id(client: greenstalk.Client) -> None:
    priorities = [5, 1, 5, 0, 4294967295, 1, 1024]
    ids = [client.put(b"%d" % n, priority=pri) for n, pri in enumerate(priorities)]
    expected = [job_id for _, job_id in sorted(zip(priorities, ids, strict=True))]
    got = []
    for _ in ids:
        job = client.reserve(timeout=0)
        got.append(job.id)
        client.delete(job)
    assert got == expected


def test_a_delayed_job_becomes_ready(client: greenstalk.Client) -> None:
    job_id = client.put(b"later", delay=1)
    assert client.stats_job(job_id)["state"] == "delayed"
    job = client.reserve(timeout=3)  # a real wait of about a second
    assert job.id == job_id
    assert client.stats_job(job_id)["state"] == "reserved"
    client.delete(job)


def test_a_client_that_leaves_gives_its_reserved_jobs_back(server: Server, tube: str) -> None:
    with greenstalk.Client(server.address, encoding=None, use=tube, watch=tube) as keeper:
        ids = [keeper.put(b"a"), keeper.put(b"b")]
        with greenstalk.Client(server.address, encoding=None, watch=tube) as leaver:
            held = [leaver.reserve(timeout=0).id, leaver.reserve(timeout=0).id]
            assert sorted(held) == ids
            assert [keeper.stats_job(i)["state"] for i in ids] == ["reserved", "reserved"]
        # The server notices the close on its own time: wait for the jobs, bounded.
        got = sorted(keeper.reserve(timeout=5).id for _ in ids)
        assert got == ids
        assert all(keeper.stats_job(i)["reserves"] == 2 for i in ids)
        for job_id in ids:
            keeper.delete(job_id)
