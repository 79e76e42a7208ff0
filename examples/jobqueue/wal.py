"""The job queue's write-ahead log: every change that must survive a crash, in one file.

The log is ``<dir>/jobqueue.wal``, a sequence of records, each::

    length (4 bytes, big-endian) | CRC-32 of the payload (4 bytes) | payload

and each payload a one-letter kind and its fields (``!`` = big-endian):

    P  put       id Q, pri I, delay I, ttr I, due d (wall clock, 0: ready),
                 name length B, name, body (the rest, CRLF included)
    D  delete    id Q
    B  bury      id Q, pri I
    K  kick      id Q
    R  release   id Q, pri I, delay I, due d (wall clock, 0: ready)

A reserve is not logged: as in beanstalkd, a job reserved when the server
died is ready again after the restart. Delays are kept as wall-clock due
times, since the monotonic clock starts again with the process.

:meth:`Wal.open` replays the file. A record cut short or failing its CRC
ends the replay (a crash mid-write leaves exactly that at the tail): the
rest is dropped with a warning and the file truncated there, never a crash.
:meth:`Wal.append` gathers records; :meth:`Wal.write` hands them to the
kernel in one ``write``, :meth:`Wal.sync` fsyncs. When the file has grown to
:data:`COMPACT_RATIO` times the size of the live jobs' records (and at least
:data:`COMPACT_MIN_BYTES`), :meth:`Wal.compact` writes a snapshot of the live
jobs to a new file, fsyncs it and renames it over the old one.

This module does file I/O and nothing else: when to write and sync is the
server's decision.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["COMPACT_MIN_BYTES", "COMPACT_RATIO", "LoggedJob", "Wal"]

#: Compact once the log is this many times the size of what it must keep:
#: rewriting costs the live size, so each rewrite is paid by 3x as many bytes
#: appended (Bitcask and LevelDB also merge at a fixed garbage ratio).
COMPACT_RATIO = 4
#: ...and never below this size: compacting a tiny log gains nothing
#: (beanstalkd's binlog files are 10 MiB; 1 MiB keeps restarts quick).
COMPACT_MIN_BYTES = 1 << 20

FILE_NAME = "jobqueue.wal"
_HEAD = struct.Struct("!II")  # length, crc32
_PUT = struct.Struct("!cQIIIdB")
_ID = struct.Struct("!cQ")
_BURY = struct.Struct("!cQI")
_RELEASE = struct.Struct("!cQIId")

log = logging.getLogger("daemonkit.jobqueue.wal")


@dataclass
class LoggedJob:
    """A live job as the log describes it (what :meth:`Wal.open` returns)."""

    id: int
    tube: bytes
    pri: int
    delay: int
    ttr: int
    body: bytes
    state: str = "ready"  # ready, delayed or buried
    due: float = 0.0  # wall-clock time a delayed job becomes ready
    bury_seq: int = 0  # order among the buried jobs
    size: int = 0  # bytes of its put record


def _record(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def put_record(
    job_id: int, tube: bytes, pri: int, delay: int, ttr: int, body: bytes, due: float = 0.0
) -> bytes:
    """The record of a put (``due``: wall-clock time a delayed job becomes ready)."""
    return _record(_PUT.pack(b"P", job_id, pri, delay, ttr, due, len(tube)) + tube + body)


def delete_record(job_id: int) -> bytes:
    """The record of a delete."""
    return _record(_ID.pack(b"D", job_id))


def kick_record(job_id: int) -> bytes:
    """The record of a kick (the job is ready)."""
    return _record(_ID.pack(b"K", job_id))


def bury_record(job_id: int, pri: int) -> bytes:
    """The record of a bury with its new priority."""
    return _record(_BURY.pack(b"B", job_id, pri))


def release_record(job_id: int, pri: int, delay: int, due: float = 0.0) -> bytes:
    """The record of a release with its new priority and delay."""
    return _record(_RELEASE.pack(b"R", job_id, pri, delay, due))


class Wal:
    """The log file of a directory: replay it, append to it, sync it, compact it.

    Call :meth:`open` first; it returns the live jobs. Not thread-safe: use
    it from the loop thread.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, FILE_NAME)
        self._fd = -1
        self._pending = bytearray()
        self.size = 0  # bytes in the file
        self.live = 0  # bytes the live jobs' records take
        self.records = 0  # records written since open (beanstalkd's binlog-records-written)
        self._sizes: dict[int, int] = {}  # put record size of each live job

    # -- replay --------------------------------------------------------------

    def open(self) -> list[LoggedJob]:
        """Replay the log (made if missing) and open it for appending; return the live jobs.

        The jobs come in id order, the buried ones in the order they were
        buried. A damaged tail is dropped with a warning.
        """
        os.makedirs(self.directory, exist_ok=True)
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        jobs, good = _replay(data)
        if good < len(data):
            log.warning(
                "%s: dropping a damaged tail of %d bytes at offset %d "
                "(a write cut short by a crash); %d jobs recovered",
                self.path,
                len(data) - good,
                good,
                len(jobs),
            )
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if good < len(data):
            os.ftruncate(self._fd, good)
            os.fsync(self._fd)
        self.size = good
        self._sizes = {job.id: job.size for job in jobs}
        self.live = sum(self._sizes.values())
        ordered = sorted(jobs, key=lambda j: (j.state == "buried", j.bury_seq, j.id))
        return ordered

    # -- writing -------------------------------------------------------------

    def append(self, record: bytes, *, job_id: int = 0, live: bool | None = None) -> None:
        """Gather ``record`` for the next :meth:`write`.

        ``live=True`` says it is the put record of ``job_id`` (now live),
        ``live=False`` that ``job_id`` is gone: that is how the log knows
        when it is worth compacting.
        """
        self._pending += record
        self.records += 1
        if live:
            self._sizes[job_id] = len(record)
            self.live += len(record)
        elif live is not None:
            self.live -= self._sizes.pop(job_id, 0)

    @property
    def pending(self) -> int:
        """Bytes gathered and not written yet."""
        return len(self._pending)

    def write(self) -> None:
        """Hand what was gathered to the kernel (one write; no fsync)."""
        data = self._pending
        if not data:
            return
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        finally:
            view.release()
        self.size += len(data)
        data.clear()

    @property
    def closed(self) -> bool:
        """Has :meth:`close` run?"""
        return self._fd < 0

    def sync(self) -> None:
        """Wait until what was written is on disk (fdatasync)."""
        os.fdatasync(self._fd)

    def should_compact(self) -> bool:
        """Has the log grown enough past its live records to be rewritten?"""
        return self.size >= COMPACT_MIN_BYTES and self.size > COMPACT_RATIO * max(self.live, 1)

    def compact(self, snapshot: Iterable[bytes]) -> None:
        """Replace the log by ``snapshot`` (the records of the live jobs), atomically.

        Writes a new file, fsyncs it, renames it over the log and fsyncs the
        directory: a crash at any point leaves the old log or the new one.
        Call it right after :meth:`write`, with nothing gathered.
        """
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        size = 0
        try:
            chunk = bytearray()
            for record in snapshot:
                chunk += record
                if len(chunk) >= 1 << 20:
                    size += os.write(fd, chunk)
                    chunk.clear()
            while chunk:
                n = os.write(fd, chunk)
                size += n
                del chunk[:n]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        log.info("%s compacted: %d bytes (was %d)", self.path, size, self.size)
        self.size = size

    def close(self) -> None:
        """Write what is gathered, sync and close; idempotent."""
        if self._fd < 0:
            return
        try:
            self.write()
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1


def _replay(data: bytes) -> tuple[list[LoggedJob], int]:
    """The live jobs of a log's bytes, and how many bytes of it were sound."""
    jobs: dict[int, LoggedJob] = {}
    pos = 0
    end = len(data)
    bury_seq = 0
    while pos < end:
        if end - pos < _HEAD.size:
            break
        length, crc = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc or not payload:
            break
        try:
            kind = payload[:1]
            if kind == b"P":
                _, job_id, pri, delay, ttr, due, name_len = _PUT.unpack_from(payload)
                head = _PUT.size
                name = payload[head : head + name_len]
                body = payload[head + name_len :]
                state = "delayed" if due else "ready"
                size = _HEAD.size + length
                jobs[job_id] = LoggedJob(job_id, name, pri, delay, ttr, body, state, due, 0, size)
            elif kind in (b"D", b"K"):
                _, job_id = _ID.unpack(payload)
                if kind == b"D":
                    jobs.pop(job_id, None)
                elif job_id in jobs:
                    jobs[job_id].state = "ready"
                    jobs[job_id].due = 0.0
            elif kind == b"B":
                _, job_id, pri = _BURY.unpack(payload)
                if job_id in jobs:
                    bury_seq += 1
                    job = jobs[job_id]
                    job.state, job.pri, job.bury_seq = "buried", pri, bury_seq
            elif kind == b"R":
                _, job_id, pri, delay, due = _RELEASE.unpack(payload)
                if job_id in jobs:
                    job = jobs[job_id]
                    job.pri, job.delay, job.due = pri, delay, due
                    job.state = "delayed" if due else "ready"
            else:
                break
        except struct.error:
            break  # a record that passed its CRC but does not parse: written by a bug
        pos = start + length
    return list(jobs.values()), pos
