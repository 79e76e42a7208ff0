"""Job worker: takes jobs from a beanstalkd queue and runs them without blocking the loop.

A worker daemon (``listen = []``: it serves no client). It keeps one link to
a beanstalkd-protocol server (real beanstalkd, or examples/jobqueue) with
``self.connect``, which reconnects by itself with backoff, and loops:

1. ``reserve-with-timeout`` one job from its tube (one job at a time);
2. ``stats-job`` for how often the job was released already;
3. run it with ``self.offload``: the blocking handler runs in a worker
   thread, so the loop (and the link) stays free however long it takes;
4. ``delete`` it when it worked; when it raised, ``release`` it with a
   delay that doubles with each release (``JOB_WORKER_RETRY_DELAY`` *
   2**releases seconds), or ``bury`` it after ``JOB_WORKER_MAX_FAILURES``
   failures, for a human to look at (``kick`` brings it back).

Stopping: on SIGTERM the daemon reserves nothing more and waits (up to
``shutdown_timeout``) for the job in hand; its ``delete`` (or release, or
bury) is sent before the link closes, then the process exits 0. After
``max_runtime`` (plus up to 10 % more) it stops the same way and exits 75,
for its supervisor to start a fresh one.

When the connection drops, beanstalkd puts every job that connection had
reserved back in ready: a job whose handler was running then is finished
here but neither deleted nor released (that would be on a connection that
did not reserve it); it runs again, here or on another worker. So, as with
any beanstalkd worker, make handlers safe to run twice.

Settings, from the environment:

* ``JOB_WORKER_SERVER``: the queue, ``tcp://127.0.0.1:11300`` by default;
* ``JOB_WORKER_TUBE``: the tube to watch, ``default`` by default;
* ``JOB_WORKER_MAX_FAILURES``: failures before a job is buried (5);
* ``JOB_WORKER_RETRY_DELAY``: seconds before the first retry (1; 0 retries
  at once), doubled for each release, at most an hour.

The jobs this example knows (replace ``run_job`` with your own work):
``sha256 ROUNDS TEXT`` hashes TEXT ROUNDS times; ``sleep SECONDS`` stands
for a blocking call (a database write, an HTTP request); anything else
fails.

Run it:   beanstalkd -l 127.0.0.1 -p 11300
          python -m daemonkit examples/job_worker.py
Try it:   printf 'put 0 0 60 16\\r\\nsha256 100000 hi\\r\\n' | nc -q1 127.0.0.1 11300
"""

import hashlib
import os
import time
from collections import deque
from typing import Any, NamedTuple

from daemonkit import ConfigError, Daemon, Framer, FrameTooLarge, ProtocolError

#: beanstalkd's own limit on a command line, which bounds its reply lines
#: too (LINE_BUF_SIZE = 224 bytes, "\r\n" included, in its dat.h).
MAX_REPLY_LINE = 224
#: The largest body accepted (a job, a stats page): 1 MiB, daemonkit's
#: default frame limit; beanstalkd's own default max-job-size is 65,535.
MAX_REPLY_BODY = 1024 * 1024
#: Seconds one reserve waits on the server before it answers TIMED_OUT and
#: the worker asks again: short, so the server is heard from every few seconds.
RESERVE_TIMEOUT = 5
#: Longest delay before a failed job is retried: an hour, past which a
#: failure is not going to pass by itself; JOB_WORKER_MAX_FAILURES buries it.
MAX_RETRY_DELAY = 3600
#: Most rounds a sha256 job may ask for: a few seconds of one core.
MAX_ROUNDS = 10_000_000


# -- the wire: beanstalkd's replies ---------------------------------------------------


class Reply(NamedTuple):
    """One reply of the server: ``Reply(b"RESERVED", (b"7", b"5"), b"hello")``."""

    status: bytes
    args: tuple[bytes, ...]
    body: bytes | None  # for RESERVED, FOUND and OK; None for the others


#: The replies followed by a body whose size is their last argument.
_WITH_BODY = {b"RESERVED", b"FOUND", b"OK"}


class BeanstalkReplies(Framer):
    """A client's framer for beanstalkd: a reply line, plus its body when it has one.

    Frames read are :class:`Reply` tuples; frames sent are command lines
    (``b"delete 7"``), to which ``encode`` adds the ``"\\r\\n"``. A line
    over MAX_REPLY_LINE or a body over ``max_body`` raises FrameTooLarge; a
    body not followed by ``"\\r\\n"``, or a bad size, raises ProtocolError.
    """

    __slots__ = ("_max_body", "_need", "_reply")

    def __init__(self, max_body: int = MAX_REPLY_BODY) -> None:
        super().__init__(max_body=max_body)
        self._max_body = max_body
        self._need = 0  # bytes of body + "\r\n" awaited for self._reply
        self._reply: Reply | None = None

    def feed(self, data: bytes) -> list[Reply]:
        """Append ``data``; return the replies it completes (see the class docstring)."""
        buf = self._buffer
        buf += self._checked_input(data)
        frames: list[Reply] = []
        while buf:
            if self._reply is not None:  # a body is due
                need = self._need
                if len(buf) < need:
                    break
                if buf[need - 2 : need] != b"\r\n":
                    self._fail(ProtocolError("reply body not followed by CRLF"), frames)
                frames.append(self._reply._replace(body=bytes(buf[: need - 2])))
                del buf[:need]
                self._reply = None
                continue
            end = buf.find(b"\r\n", 0, MAX_REPLY_LINE)
            if end < 0:
                if len(buf) >= MAX_REPLY_LINE:
                    self._fail(
                        FrameTooLarge(f"reply line longer than {MAX_REPLY_LINE} bytes"), frames
                    )
                break
            status, *args = bytes(buf[:end]).split(b" ")
            del buf[: end + 2]
            reply = Reply(status, tuple(args), None)
            if status not in _WITH_BODY:
                frames.append(reply)
                continue
            if not args or not args[-1].isdigit():
                self._fail(ProtocolError(f"{status.decode()} reply without a body size"), frames)
            size = int(args[-1])
            if size > self._max_body:
                self._fail(
                    FrameTooLarge(f"reply body of {size} bytes, over max_body={self._max_body}"),
                    frames,
                )
            self._reply, self._need = reply, size + 2
        return frames

    def encode(self, frame: Any) -> bytes:
        """Return the command line ``frame`` with its ``"\\r\\n"``."""
        line = bytes(frame)
        if b"\r" in line or b"\n" in line:
            raise ValueError(f"a command line cannot hold CR or LF: {line[:40]!r}")
        return line + b"\r\n"


# -- the work: blocking, in a worker thread -----------------------------------------------


def run_job(body: bytes) -> tuple[bool, str]:
    """Run one job; return ``(True, result)``, or ``(False, why)`` when it failed.

    This runs in a worker thread (``self.offload``): block as you like. It
    never raises, so the loop always learns what happened to the job.
    """
    try:
        kind, _, rest = body.decode().partition(" ")
        if kind == "sha256":
            rounds_text, _, text = rest.partition(" ")
            rounds = int(rounds_text)
            if not 0 < rounds <= MAX_ROUNDS:
                raise ValueError(f"rounds must be 1..{MAX_ROUNDS}, not {rounds}")
            digest = text.encode()
            for _ in range(rounds):
                digest = hashlib.sha256(digest).digest()
            return True, digest.hex()
        if kind == "sleep":
            time.sleep(float(rest))  # your blocking call: a database write, an HTTP request
            return True, f"slept {float(rest):g}s"
        raise ValueError(f"unknown job {kind!r}")
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def retry_delay(releases: int, first: int) -> int:
    """Seconds before the retry of a job released ``releases`` times: ``first * 2**releases``."""
    return min(MAX_RETRY_DELAY, first * 2 ** min(releases, 32))


# -- the daemon -------------------------------------------------------------------------


class Job:
    """A job in hand: its id, body, and the connection that reserved it."""

    def __init__(self, job_id: int, body: bytes, conn: Any) -> None:
        self.id = job_id
        self.body = body
        self.conn = conn
        self.priority = 0
        self.releases = 0


def _setting(name: str, default: int, minimum: int) -> int:
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: expected a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value}: must be at least {minimum}")
    return value


class JobWorker(Daemon):
    listen = []  # a worker daemon: no endpoint
    max_runtime = 3600.0  # recycle every hour (plus up to 10 %): exit 75, restarted fresh
    shutdown_timeout = 30.0  # how long a job in hand may take to finish after SIGTERM

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.server = os.environ.get("JOB_WORKER_SERVER", "tcp://127.0.0.1:11300")
        self.tube = os.environ.get("JOB_WORKER_TUBE", "default")
        self.max_failures = _setting("JOB_WORKER_MAX_FAILURES", 5, 1)
        self.first_delay = _setting("JOB_WORKER_RETRY_DELAY", 1, 0)
        self.conn = None  # the live connection to the server (set by on_connect)
        self.waiting = deque()  # per command sent, in order: what to do with its reply
        self.job = None  # the job in hand, if any
        self.link = None

    def on_start(self):
        # Handler: the daemon itself (on_connect, on_read, on_close below).
        self.link = self.connect(self.server, framing=BeanstalkReplies)

    # -- the link's callbacks ------------------------------------------------------------

    def on_connect(self, conn):
        self.conn = conn
        self.command(b"watch " + self.tube.encode(), self.expect(b"WATCHING"))
        if self.tube != "default":
            self.command(b"ignore default", self.expect(b"WATCHING"))
        if self.job is None:  # else: reserve once the job in hand is finished
            self.reserve()

    def on_read(self, conn, reply):
        if not self.waiting:
            conn.log.error("unexpected reply %r; closing", reply)
            conn.close()
            return
        self.waiting.popleft()(reply)

    def on_close(self, conn, reason):
        # Whatever we had asked is lost; the server puts the jobs we had
        # reserved back in ready. The link reconnects by itself.
        self.conn = None
        self.waiting.clear()
        if not self.is_stopping():
            conn.log.warning("queue connection closed (%s); reconnecting", reason)

    # -- talking to the queue ------------------------------------------------------------

    def command(self, line, then):
        """Send one command; ``then(reply)`` gets its reply."""
        self.conn.send(line)
        self.waiting.append(then)

    def expect(self, status):
        def check(reply):
            if reply.status != status:
                self.log.error("expected %s, got %r", status.decode(), reply)

        return check

    def reserve(self):
        if self.conn is not None and not self.is_stopping():
            self.command(b"reserve-with-timeout %d" % RESERVE_TIMEOUT, self.on_reserved)

    def on_reserved(self, reply):
        if reply.status == b"RESERVED":
            job = Job(int(reply.args[0]), reply.body, self.conn)
            if self.is_stopping():
                return  # not started: it goes back to ready when the link closes
            self.job = job
            self.command(b"stats-job %d" % job.id, lambda stats: self.on_stats(job, stats))
        else:  # TIMED_OUT, or DEADLINE_SOON (a job of ours is close to its TTR)
            self.reserve()

    def on_stats(self, job, reply):
        if reply.status == b"OK":
            for line in reply.body.decode().splitlines():
                key, _, value = line.partition(": ")
                if key == "pri":
                    job.priority = int(value)
                elif key == "releases":
                    job.releases = int(value)
        if self.is_stopping():
            self.job = None  # not started: it goes back to ready when the link closes
            return
        self.log.info("job %d: running (released %d times before)", job.id, job.releases)
        # A graceful stop waits for run_job, then for on_done, before the link closes.
        self.offload(run_job, job.body, callback=lambda outcome: self.on_done(job, outcome))

    def on_done(self, job, outcome):
        ok, result = outcome
        self.job = None
        if job.conn is not self.conn:
            self.log.warning(
                "job %d %s, but the connection that reserved it is gone: the server "
                "has put it back in ready; it will run again",
                job.id,
                "done" if ok else "failed",
            )
            self.reserve()
            return
        if ok:
            self.log.info("job %d done: %s", job.id, result)
            self.command(b"delete %d" % job.id, self.next_job(b"DELETED"))
            return
        failures = job.releases + 1
        if failures >= self.max_failures:
            self.log.error("job %d failed %d times, burying it: %s", job.id, failures, result)
            self.command(b"bury %d %d" % (job.id, job.priority), self.next_job(b"BURIED"))
            return
        delay = retry_delay(job.releases, self.first_delay)
        self.log.warning("job %d failed (%s); retry in %ds", job.id, result, delay)
        self.command(
            b"release %d %d %d" % (job.id, job.priority, delay), self.next_job(b"RELEASED")
        )

    def next_job(self, status):
        def then(reply):
            if reply.status != status:  # NOT_FOUND: its TTR ran out meanwhile
                self.log.warning("expected %s, got %r", status.decode(), reply)
            self.reserve()

        return then
