"""A job queue speaking the beanstalkd protocol, as one daemonkit daemon.

Run it:   python -m daemonkit examples/jobqueue/server.py --listen tcp://127.0.0.1:11300
          (or: PYTHONPATH=examples python -m daemonkit jobqueue.server --listen ...)
Try it:   any beanstalkd client (greenstalk, pystalk, beanstalkd's own tests), or
          printf 'put 0 0 60 5\\r\\nhello\\r\\nreserve\\r\\n' | nc -q1 127.0.0.1 11300

Settings the command line has no option for come from the environment:

* ``JOBQUEUE_WAL``: a directory for the write-ahead log (see ``wal.py``);
  unset: no log, the jobs live in memory only (beanstalkd without ``-b``).
* ``JOBQUEUE_FSYNC``: ``always`` (a put is answered only once its record is
  on disk; everything logged while one fsync runs shares the next), or a
  number of milliseconds: fsync at most that often (default 50, beanstalkd's
  ``-f`` default); either way a reply waits until its record is written, and
  the fsync runs in a worker thread, so the loop never waits for the disk.
* ``JOBQUEUE_MAX_JOB_SIZE``: the largest job body in bytes (65535,
  beanstalkd's ``-z`` default).

The commands, replies and limits are beanstalkd 1.12's (``doc/protocol.txt``
and ``prot.c``): ``protocol.py`` parses, ``store.py`` keeps the tubes and jobs,
this module answers. Delays, TTRs, ``reserve-with-timeout`` and paused tubes
all run on one timer of the daemon, armed for the earliest of their
deadlines, so a ``FakeClock`` drives them in tests.
"""

from __future__ import annotations

import os
import resource
import secrets
import threading
import time
from collections import deque
from typing import Any

from daemonkit import Daemon
from daemonkit.errors import ConfigError
from daemonkit.framework.offload import OffloadFull

from .protocol import DEFAULT_MAX_JOB_SIZE, ERROR, EXPECTED_CRLF, CommandFramer
from .store import BURIED, DELAYED, INF, READY, RESERVED, Job, Session, Store
from .wal import (
    Wal,
    bury_record,
    delete_record,
    kick_record,
    put_record,
    release_record,
)

__all__ = ["DEFAULT_FSYNC_MS", "MAX_PENDING_COMMANDS", "JobQueue"]

#: Milliseconds between two fsyncs of the log by default: beanstalkd's
#: DEFAULT_FSYNC_MS (dat.h), its ``-f`` default.
DEFAULT_FSYNC_MS = 50
#: Commands a client may pipeline behind a reserve that waits before the
#: server stops reading from it (beanstalkd reads nothing while it waits).
MAX_PENDING_COMMANDS = 1024
#: beanstalkd's default binlog file size (``-s``), shown in ``stats``.
BINLOG_MAX_SIZE = 10 << 20
#: The version ``stats`` shows: the protocol's, and who serves it.
VERSION = "1.12+daemonkit"

NOT_FOUND = b"NOT_FOUND\r\n"

# The keys of `stats`, in beanstalkd 1.12's order (STATS_FMT in prot.c).
STATS_KEYS = (
    "current-jobs-urgent",
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-delayed",
    "current-jobs-buried",
    "cmd-put",
    "cmd-peek",
    "cmd-peek-ready",
    "cmd-peek-delayed",
    "cmd-peek-buried",
    "cmd-reserve",
    "cmd-reserve-with-timeout",
    "cmd-delete",
    "cmd-release",
    "cmd-use",
    "cmd-watch",
    "cmd-ignore",
    "cmd-bury",
    "cmd-kick",
    "cmd-touch",
    "cmd-stats",
    "cmd-stats-job",
    "cmd-stats-tube",
    "cmd-list-tubes",
    "cmd-list-tube-used",
    "cmd-list-tubes-watched",
    "cmd-pause-tube",
    "job-timeouts",
    "total-jobs",
    "max-job-size",
    "current-tubes",
    "current-connections",
    "current-producers",
    "current-workers",
    "current-waiting",
    "total-connections",
    "pid",
    "version",
    "rusage-utime",
    "rusage-stime",
    "uptime",
    "binlog-oldest-index",
    "binlog-current-index",
    "binlog-records-migrated",
    "binlog-records-written",
    "binlog-max-size",
    "draining",
    "id",
    "hostname",
    "os",
    "platform",
)


def _env_settings() -> tuple[str | None, float | None, int]:
    """(WAL directory, fsync interval in seconds or None for always, max job size)."""
    directory = os.environ.get("JOBQUEUE_WAL") or None
    fsync = os.environ.get("JOBQUEUE_FSYNC", str(DEFAULT_FSYNC_MS)).strip()
    if fsync == "always":
        interval = None
    else:
        try:
            interval = float(fsync) / 1000
        except ValueError:
            interval = -1.0
        if not 0 <= interval <= 3600:
            raise ConfigError(
                f"JOBQUEUE_FSYNC={fsync!r}: give 'always' or milliseconds between fsyncs, e.g. 50"
            )
    size = os.environ.get("JOBQUEUE_MAX_JOB_SIZE", str(DEFAULT_MAX_JOB_SIZE))
    if not size.isdigit():
        raise ConfigError(f"JOBQUEUE_MAX_JOB_SIZE={size!r}: give a number of bytes, e.g. 65535")
    return directory, interval, int(size)


def _sync(lock: threading.Lock, wal: Wal) -> None:
    """fsync the log, in a worker thread; a log closed meanwhile has nothing left to sync."""
    with lock:
        if not wal.closed:
            wal.sync()


def _job_reply(word: bytes, job: Job) -> bytes:
    return b"%s %d %d\r\n" % (word, job.id, len(job.body) - 2)


class JobQueue(Daemon):
    """A beanstalkd-compatible job queue (see the module docstring).

    Keyword arguments ``wal``, ``fsync`` (``"always"`` or milliseconds) and
    ``max_job_size`` override the environment; the rest are daemon settings.
    """

    listen = "tcp://127.0.0.1:11300"  # beanstalkd's port
    idle_timeout = None  # a client may wait in reserve for hours, as with beanstalkd

    def __init__(
        self,
        *,
        wal: str | os.PathLike[str] | None = None,
        fsync: str | float | None = None,
        max_job_size: int | None = None,
        **settings: Any,
    ) -> None:
        directory, interval, size = _env_settings()
        if wal is not None:
            directory = os.fspath(wal)
        if fsync is not None:
            interval = None if fsync == "always" else float(fsync) / 1000
        if max_job_size is not None:
            size = max_job_size
        settings.setdefault("framing", CommandFramer(size))
        super().__init__(**settings)
        self.max_job_size = size
        self.wal_dir = directory
        self.fsync_interval = interval  # None: fsync before every reply that needs it
        self.store = Store(self._reserved, self._wait_ended, max_job_size=size)
        self._sessions: dict[Any, Session] = {}
        # Commands counted, shown in stats or not (beanstalkd counts them all).
        counted = [k[4:] for k in STATS_KEYS if k.startswith("cmd-")]
        self._counts = dict.fromkeys([*counted, "reserve-job", "kick-job", "quit"], 0)
        self._total_connections = 0
        self._commands = {
            name[4:].replace("_", "-"): getattr(self, name)
            for name in dir(self)
            if name.startswith("cmd_")
        }
        self._timer: Any = None
        self._timer_due = 0.0
        self._resume: list[Session] = []  # sessions whose pipelined commands run next turn
        self._wal: Wal | None = None
        # Sessions with records logged since the last group went to the disk
        # (an ordered set): their replies wait for the log.
        self._held: dict[Session, None] = {}
        self._commit_soon = False
        self._last_sync = 0.0
        self._sync_timer: Any = None
        # An interval fsync runs in a worker thread, one at a time; it holds
        # the lock, which closing or compacting the log (a new descriptor) takes.
        self._syncing = False
        self._sync_lock = threading.Lock()
        self._id = secrets.token_hex(8)
        self._started = 0.0

    # -- lifecycle -----------------------------------------------------------

    def on_start(self) -> None:
        self._now = self.reactor.clock.now
        self._started = self._now()
        if self.wal_dir is not None:
            self._open_wal(self.wal_dir)
        self.log.info(
            "max-job-size %d; write-ahead log %s",
            self.max_job_size,
            "off" if self._wal is None else f"{self._wal.path} (fsync {self._fsync_text()})",
        )

    def _fsync_text(self) -> str:
        interval = self.fsync_interval
        return "always" if interval is None else f"every {interval * 1000:g} ms at most"

    def _open_wal(self, directory: str) -> None:
        wal = Wal(directory)
        jobs = wal.open()
        now, wall = self._now(), time.time()
        store = self.store
        for job in jobs:
            due = now + (job.due - wall) if job.state == DELAYED else 0.0
            store.restore(
                job.id, job.tube, job.pri, job.delay, job.ttr, job.body,
                state=job.state, due=due, now=now,
            )  # fmt: skip
        self._wal = wal
        self.cleanup(self._close_wal)
        self.log.info("replayed %d jobs from %s", len(jobs), wal.path)
        self._schedule()

    def _close_wal(self) -> None:
        if self._wal is not None:
            with self._sync_lock:  # an fsync still in its thread finishes first
                self._wal.close()
            self._wal = None

    # -- connections ---------------------------------------------------------

    def on_accept(self, conn: Any) -> None:
        self._sessions[conn] = self.store.open_session(conn)
        self._total_connections += 1

    def on_close(self, conn: Any, reason: Any) -> None:
        session = self._sessions.pop(conn)
        session.pending = None
        self.store.close_session(session, self._now())
        self._schedule()

    def on_eof(self, conn: Any) -> None:
        # beanstalkd answers a waiting reserve TIMED_OUT when the client
        # half-closes, runs what was pipelined behind it, then closes.
        session = self._sessions.get(conn)
        if session is not None and session.waiting:
            self.store.stop_waiting(session)
            self._wait_ended(session, b"TIMED_OUT\r\n")
            self._run_pending()
        conn.close()

    def on_frames(self, conn: Any, frames: list[Any]) -> None:
        session = self._sessions[conn]
        if session.pending is not None:  # behind a reserve that waits
            session.pending.extend(frames)
            if len(session.pending) > MAX_PENDING_COMMANDS:
                conn.pause_reading()
            return
        self._run(session, frames)
        self._schedule()

    def _run(self, session: Session, frames: Any) -> None:
        """Answer ``frames`` in order; stop at a reserve that waits and keep the rest."""
        commands = self._commands
        counts = self._counts
        for i, frame in enumerate(frames):
            name = frame[0]
            if name == ERROR:
                if frame[2] is not None:
                    counts[frame[2]] += 1
                if frame[1] == EXPECTED_CRLF:
                    # beanstalkd made the job (and used up its id) before it saw the body's end.
                    session.producer = True
                    self.store.next_id += 1
                self._reply(session, frame[1])
                continue
            counts[name] += 1
            commands[name](session, frame)
            if session.waiting:
                session.pending = deque(frames[i + 1 :])
                return
            if name == "quit":
                return

    def _reply(self, session: Session, data: bytes) -> None:
        held = session.held
        if held is None:
            session.conn.write(data)
        else:
            held.append(data)

    def _reply_job(self, session: Session, word: bytes, job: Job) -> None:
        # One write: the header and a body of a few hundred bytes cost less
        # joined here than as two writes to join at the flush.
        self._reply(session, _job_reply(word, job) + job.body)

    # -- waiting for jobs ---------------------------------------------------------

    def _reserved(self, session: Session, job: Job) -> None:
        """The store gave a waiting session a job."""
        self._reply_job(session, b"RESERVED", job)
        self._wake(session)

    def _wait_ended(self, session: Session, reply: bytes) -> None:
        """A wait ended without a job: TIMED_OUT or DEADLINE_SOON."""
        self._reply(session, reply)
        self._wake(session)

    def _wake(self, session: Session) -> None:
        if session.pending is not None:
            if not self._resume:
                self.reactor.call_soon(self._run_pending)
            self._resume.append(session)

    def _run_pending(self) -> None:
        """Answer what clients pipelined behind a wait that has ended."""
        resume, self._resume = self._resume, []
        for session in resume:
            pending = session.pending
            if pending is None or session.waiting:
                continue  # it left, or waits again
            session.pending = None
            if len(pending) > MAX_PENDING_COMMANDS // 2:
                session.conn.resume_reading()
            self._run(session, list(pending))
        self._schedule()

    # -- the one timer ------------------------------------------------------------

    def _schedule(self) -> None:
        """After a command: arm the timer if a deadline earlier than the armed one was added.

        The timer is always armed at or before the store's earliest deadline
        (or not at all when there is none): removing a deadline keeps that
        true (a timer that fires early finds nothing due and re-arms), and
        an added one only matters when it is earlier. So this costs O(1) per
        command, where asking the store for its next deadline would not.
        """
        store = self.store
        due = store.earliest_added
        if due == INF:
            return
        store.earliest_added = INF
        timer = self._timer
        if timer is not None:
            if self._timer_due <= due:
                return
            timer.cancel()
        self._timer_due = due
        self._timer = self.reactor.timers.call_at(due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        store = self.store
        store.expire(self._now())
        due = store.next_due()  # the full look, once per timer, not per command
        if due is not None and due < store.earliest_added:
            store.earliest_added = due
        self._schedule()

    # -- the write-ahead log ------------------------------------------------------

    def _log(self, session: Session, record: bytes, job_id: int, live: bool | None) -> None:
        """Log a change; the session's replies wait until the record is written (or synced)."""
        wal = self._wal
        if wal is None:
            return
        wal.append(record, job_id=job_id, live=live)
        if session.held is None:
            session.held = []
        self._held[session] = None  # (it may have replies waiting for an fsync already)
        if not self._commit_soon:
            self._commit_soon = True
            self.reactor.call_soon(self._commit)

    def _commit(self) -> None:
        """End of a loop turn: write the turn's records, fsync if due, then send the replies."""
        self._commit_soon = False
        wal = self._wal
        if wal is None:
            return
        wal.write()
        interval = self.fsync_interval
        if interval is None:
            self._group_soon()  # the replies go once their records are on disk
            return
        now = self._now()
        if now - self._last_sync >= interval:
            self._sync_soon()
        elif self._sync_timer is None:
            self._sync_timer = self.reactor.timers.call_at(
                self._last_sync + interval, self._sync_later
            )
        held, self._held = self._held, {}
        for session in held:
            data = b"".join(session.held or ())
            session.held = None
            session.conn.write(data)
        self._compact_if_due()

    def _compact_if_due(self) -> None:
        wal = self._wal
        if wal is not None and wal.should_compact() and not self._syncing and not wal.pending:
            with self._sync_lock:
                wal.compact(self._snapshot())

    # JOBQUEUE_FSYNC=always: group commit off the loop. What was logged until
    # now goes to the disk in one fsync in a worker thread; the replies that
    # wait for those records go once it returns; what is logged meanwhile is the
    # next group, whose fsync starts as soon as this one ends.

    def _group_soon(self) -> None:
        """Start the fsync of the records logged since the last group (one at a time)."""
        wal = self._wal
        if wal is None or self._syncing or not self._held:
            return
        group = [(session, len(session.held or ())) for session in self._held]
        self._held = {}
        future = self._sync_in_thread(wal)
        if future is None:
            self._release(group)
            return
        future.add_done_callback(lambda done: self._group_synced(done, group))

    def _group_synced(self, done: Any, group: list[tuple[Session, int]]) -> None:
        self._syncing = False
        if done.cancelled() or done.exception() is not None:
            # Not known to be on disk: no acknowledgement; the clients see the
            # connection close and retry, as after a crash.
            why = "cancelled" if done.cancelled() else done.exception()
            self.stats["errors"] += 1
            self.log.error("fsync of the write-ahead log failed (%s): closing %d client(s)",
                           why, len(group))  # fmt: skip
            for session, _ in group:
                session.held = None
                session.conn.close()
        else:
            self._release(group)
        if self._held:
            self._group_soon()
        self._compact_if_due()

    def _release(self, group: list[tuple[Session, int]]) -> None:
        """Send each session the replies its synced records had held (and what follows them,
        unless a record logged since holds it)."""
        for session, cut in group:
            held = session.held
            if held is None:
                continue
            data = b"".join(held[:cut])
            del held[:cut]
            if session not in self._held:  # nothing newer waits for the disk
                data += b"".join(held)
                session.held = None
            if data:
                session.conn.write(data)

    def _sync_later(self) -> None:
        self._sync_timer = None
        self._sync_soon()

    def _sync_soon(self) -> None:
        """Start an interval fsync in a worker thread (no reply waits for it)."""
        wal = self._wal
        if wal is None or self._syncing:
            return  # the one in flight is followed by another if more was written
        self._last_sync = self._now()
        future = self._sync_in_thread(wal)
        if future is None:
            return
        written = wal.size
        future.add_done_callback(lambda done: self._synced(done, written))

    def _sync_in_thread(self, wal: Wal) -> Any:
        """Start ``wal``'s fsync in a worker thread and return its future (``_syncing``
        is then true); None when it was done here, no thread being had (or stopping)."""
        try:
            future = self.offload(_sync, self._sync_lock, wal)
        except (OffloadFull, RuntimeError):
            with self._sync_lock:
                wal.sync()
            return None
        self._syncing = True
        return future

    def _synced(self, done: Any, written: int) -> None:
        self._syncing = False
        if not done.cancelled() and done.exception() is not None:
            self.stats["errors"] += 1
            self.log.error("fsync of the write-ahead log failed: %s", done.exception())
        wal = self._wal
        if wal is not None and wal.size != written and self._sync_timer is None:
            # Written while that fsync ran: the next one, an interval after it.
            interval = self.fsync_interval or 0.0
            self._sync_timer = self.reactor.timers.call_at(
                self._last_sync + interval, self._sync_later
            )

    def _snapshot(self) -> Any:
        """The log records of the live jobs (reserved ones as ready), buried in bury order."""
        wall, now = time.time(), self._now()
        buried = []
        for job in self.store:
            due = wall + (job.key[0] - now) if job.state == DELAYED else 0.0
            yield put_record(job.id, job.tube.name, job.pri, job.delay, job.ttr, job.body, due)
            if job.state == BURIED:
                buried.append(job)
        buried.sort(key=lambda j: j.key)
        for job in buried:
            yield bury_record(job.id, job.pri)

    def _due_wall(self, delay: int) -> float:
        return time.time() + delay if delay else 0.0

    # -- commands (each gets its session and its frame; see protocol.py) -------------

    def cmd_put(self, session: Session, frame: Any) -> None:
        _, pri, delay, ttr, body = frame
        session.producer = True
        job = self.store.put(session.use, pri, delay, ttr, body, self._now())
        if self._wal is not None:
            record = put_record(
                job.id, job.tube.name, pri, delay, job.ttr, body, self._due_wall(delay)
            )
            self._log(session, record, job.id, True)
        self._reply(session, b"INSERTED %d\r\n" % job.id)

    def cmd_reserve(self, session: Session, frame: Any) -> None:
        self._wait(session, -1)

    def cmd_reserve_with_timeout(self, session: Session, frame: Any) -> None:
        self._wait(session, frame[1])

    def _wait(self, session: Session, timeout: int) -> None:
        store = self.store
        session.worker = True
        now = self._now()
        if store.deadline_soon(session, now) and not store.has_ready(session):
            self._reply(session, b"DEADLINE_SOON\r\n")
            return
        store.wait(session, timeout, now)
        due = session.wait_due
        if session.waiting and due is not None and due[0] <= now:
            # reserve-with-timeout 0 with nothing ready: answered now, not a turn later.
            soon = store.deadline_soon(session, now)
            store.stop_waiting(session)
            self._reply(session, b"DEADLINE_SOON\r\n" if soon else b"TIMED_OUT\r\n")

    def cmd_reserve_job(self, session: Session, frame: Any) -> None:
        job = self.store.jobs.get(frame[1])
        if job is None or not self.store.reserve_job(session, job, self._now()):
            self._reply(session, NOT_FOUND)
            return
        self._reply_job(session, b"RESERVED", job)

    def cmd_delete(self, session: Session, frame: Any) -> None:
        job = self.store.delete(session, frame[1])
        if job is None:
            self._reply(session, NOT_FOUND)
            return
        if self._wal is not None:
            self._log(session, delete_record(job.id), job.id, False)
        self._reply(session, b"DELETED\r\n")

    def cmd_release(self, session: Session, frame: Any) -> None:
        _, job_id, pri, delay = frame
        job = self.store.find_reserved(session, job_id)
        if job is None:
            self._reply(session, NOT_FOUND)
            return
        self.store.release(job, pri, delay, self._now())
        self._log(session, release_record(job_id, pri, delay, self._due_wall(delay)), 0, None)
        self._reply(session, b"RELEASED\r\n")

    def cmd_bury(self, session: Session, frame: Any) -> None:
        _, job_id, pri = frame
        job = self.store.find_reserved(session, job_id)
        if job is None:
            self._reply(session, NOT_FOUND)
            return
        self.store.bury(job, pri)
        self._log(session, bury_record(job_id, pri), 0, None)
        self._reply(session, b"BURIED\r\n")

    def cmd_touch(self, session: Session, frame: Any) -> None:
        job = self.store.find_reserved(session, frame[1])
        if job is None:
            self._reply(session, NOT_FOUND)
            return
        self.store.touch(job, self._now())
        self._reply(session, b"TOUCHED\r\n")

    def cmd_kick(self, session: Session, frame: Any) -> None:
        kicked = self.store.kick(session.use, frame[1], self._now())
        for job in kicked:
            self._log(session, kick_record(job.id), 0, None)
        self._reply(session, b"KICKED %d\r\n" % len(kicked))

    def cmd_kick_job(self, session: Session, frame: Any) -> None:
        job = self.store.jobs.get(frame[1])
        if job is None or not self.store.kick_job(job, self._now()):
            self._reply(session, NOT_FOUND)
            return
        self._log(session, kick_record(job.id), 0, None)
        self._reply(session, b"KICKED\r\n")

    def cmd_peek(self, session: Session, frame: Any) -> None:
        self._found(session, self.store.jobs.get(frame[1]))

    def cmd_peek_ready(self, session: Session, frame: Any) -> None:
        self._found(session, self.store.first(session.use, READY))

    def cmd_peek_delayed(self, session: Session, frame: Any) -> None:
        self._found(session, self.store.first(session.use, DELAYED))

    def cmd_peek_buried(self, session: Session, frame: Any) -> None:
        self._found(session, self.store.first(session.use, BURIED))

    def _found(self, session: Session, job: Job | None) -> None:
        if job is None:
            self._reply(session, NOT_FOUND)
        else:
            self._reply_job(session, b"FOUND", job)

    def cmd_use(self, session: Session, frame: Any) -> None:
        self.store.use(session, frame[1])
        self._reply(session, b"USING %s\r\n" % frame[1])

    def cmd_list_tube_used(self, session: Session, frame: Any) -> None:
        self._reply(session, b"USING %s\r\n" % session.use.name)

    def cmd_watch(self, session: Session, frame: Any) -> None:
        self._reply(session, b"WATCHING %d\r\n" % self.store.watch(session, frame[1]))

    def cmd_ignore(self, session: Session, frame: Any) -> None:
        count = self.store.ignore(session, frame[1])
        self._reply(session, b"NOT_IGNORED\r\n" if count is None else b"WATCHING %d\r\n" % count)

    def cmd_pause_tube(self, session: Session, frame: Any) -> None:
        tube = self.store.tubes.get(frame[1])
        if tube is None:
            self._reply(session, NOT_FOUND)
            return
        self.store.pause(tube, frame[2], self._now())
        self._reply(session, b"PAUSED\r\n")

    def cmd_quit(self, session: Session, frame: Any) -> None:
        session.conn.close()

    # -- stats and lists: YAML documents, in beanstalkd 1.12's key order ------------

    def _ok(self, session: Session, lines: list[str]) -> None:
        body = ("---\n" + "".join(lines)).encode() + b"\r\n"
        self._reply(session, b"OK %d\r\n" % (len(body) - 2))
        self._reply(session, body)

    def cmd_list_tubes(self, session: Session, frame: Any) -> None:
        self._ok(session, [f"- {t.name.decode()}\n" for t in self.store.tube_order])

    def cmd_list_tubes_watched(self, session: Session, frame: Any) -> None:
        self._ok(session, [f"- {t.name.decode()}\n" for t in session.watch])

    def cmd_stats_job(self, session: Session, frame: Any) -> None:
        job = self.store.jobs.get(frame[1])
        if job is None:
            self._reply(session, NOT_FOUND)
            return
        now = self._now()
        left = int(job.key[0] - now) if job.state in (RESERVED, DELAYED) else 0
        fields = (
            ("id", job.id),
            ("tube", job.tube.name.decode()),
            ("state", job.state),
            ("pri", job.pri),
            ("age", int(now - job.created)),
            ("delay", job.delay),
            ("ttr", job.ttr),
            ("time-left", left),
            ("file", 0),
            ("reserves", job.reserves),
            ("timeouts", job.timeouts),
            ("releases", job.releases),
            ("buries", job.buries),
            ("kicks", job.kicks),
        )
        self._ok(session, [f"{key}: {value}\n" for key, value in fields])

    def cmd_stats_tube(self, session: Session, frame: Any) -> None:
        tube = self.store.tubes.get(frame[1])
        if tube is None:
            self._reply(session, NOT_FOUND)
            return
        left = int(tube.unpause_at - self._now()) if tube.pause or tube.unpause_at else 0
        fields = (
            ("name", tube.name.decode()),
            ("current-jobs-urgent", tube.urgent),
            ("current-jobs-ready", len(tube.ready)),
            ("current-jobs-reserved", tube.reserved),
            ("current-jobs-delayed", len(tube.delayed)),
            ("current-jobs-buried", len(tube.buried)),
            ("total-jobs", tube.total_jobs),
            ("current-using", tube.using),
            ("current-watching", tube.watching),
            ("current-waiting", tube.waiting_count),
            ("cmd-delete", tube.deletes),
            ("cmd-pause-tube", tube.pauses),
            ("pause", tube.pause),
            ("pause-time-left", max(left, 0)),
        )
        self._ok(session, [f"{key}: {value}\n" for key, value in fields])

    def cmd_stats(self, session: Session, frame: Any) -> None:
        store = self.store
        s = store.stats
        sessions = self._sessions.values()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        uname = os.uname()
        wal = self._wal
        values: dict[str, object] = {
            "current-jobs-urgent": s["urgent"],
            "current-jobs-ready": s["ready"],
            "current-jobs-reserved": s["reserved"],
            "current-jobs-delayed": len(store.delayed),
            "current-jobs-buried": s["buried"],
            **{f"cmd-{name}": count for name, count in self._counts.items()},
            "job-timeouts": s["timeouts"],
            "total-jobs": s["total_jobs"],
            "max-job-size": self.max_job_size,
            "current-tubes": len(store.tubes),
            "current-connections": len(self._sessions),
            "current-producers": sum(1 for x in sessions if x.producer),
            "current-workers": sum(1 for x in sessions if x.worker),
            "current-waiting": s["waiting"],
            "total-connections": self._total_connections,
            "pid": os.getpid(),
            "version": f'"{VERSION}"',
            "rusage-utime": f"{usage.ru_utime:.6f}",
            "rusage-stime": f"{usage.ru_stime:.6f}",
            "uptime": int(self._now() - self._started),
            "binlog-oldest-index": 0,
            "binlog-current-index": 0,
            "binlog-records-migrated": 0,
            "binlog-records-written": wal.records if wal is not None else 0,
            "binlog-max-size": BINLOG_MAX_SIZE,
            "draining": "false",
            "id": self._id,
            "hostname": uname.nodename,
            "os": uname.version,
            "platform": uname.machine,
        }
        self._ok(session, [f"{key}: {values[key]}\n" for key in STATS_KEYS])
