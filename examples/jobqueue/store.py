"""Tubes and jobs: the job queue's state, with no I/O and no clock.

:class:`Store` holds every job and tube and moves jobs between their states
(ready, delayed, reserved, buried) exactly as beanstalkd 1.12 does. The
caller passes the time (``now``, seconds on the daemon's monotonic clock)
to whatever depends on it, and learns from :meth:`Store.next_due` when it
must call :meth:`Store.expire` next; a :class:`Session` is one client's
state (its tubes, its reserved jobs, whether it waits for a job).

The ordered sets are ``sortedcontainers.SortedList`` objects of sort keys:
ready jobs per tube by (priority, id), delayed jobs by (due time, id),
reserved jobs by (TTR deadline, id), buried jobs by (bury order, id). Every
job remembers its key (``job.key``), so taking *any* job out of its set
(delete, kick-job, touch, a release, a disconnect) is a bisection, O(log n).
A binary heap (``heapq``) would give the first job as cheaply but can only
remove an arbitrary one by a linear search or by leaving tombstones behind;
beanstalkd's own heap keeps each job's index for that, which Python's heapq
cannot. Ready keys are single ints, ``pri << 64 | id``, which compare in C
and cost less memory than tuples: the ready set is the big one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sortedcontainers import SortedList

#: "No deadline": later than any time.
INF = float("inf")

__all__ = [
    "BURIED",
    "DELAYED",
    "READY",
    "RESERVED",
    "SAFETY_MARGIN",
    "URGENT_THRESHOLD",
    "Job",
    "Session",
    "Store",
    "Tube",
]

#: Jobs with a priority below this are "urgent" in the stats (beanstalkd's URGENT_THRESHOLD).
URGENT_THRESHOLD = 1024
#: Seconds before a reserved job's TTR deadline when a reserve gets DEADLINE_SOON
#: instead of waiting (beanstalkd's SAFETY_MARGIN, conn.c: 1 s).
SAFETY_MARGIN = 1.0
#: Stale entries a tube's queue of waiting sessions may hold (sessions that
#: stopped waiting) beyond twice the live ones before it is rebuilt.
WAITING_SLACK = 64

READY = "ready"
DELAYED = "delayed"
RESERVED = "reserved"
BURIED = "buried"

_ID_MASK = (1 << 64) - 1


class Job:
    """One job: its body (with the trailing CRLF), its settings and its counters.

    ``key`` is the job's sort key in the set its state puts it in (see the
    module docstring); ``reserver`` the :class:`Session` holding it reserved.
    Times are seconds on the store's clock.
    """

    __slots__ = (
        "body",
        "buries",
        "created",
        "delay",
        "id",
        "key",
        "kicks",
        "pri",
        "releases",
        "reserver",
        "reserves",
        "state",
        "timeouts",
        "ttr",
        "tube",
    )

    def __init__(
        self, job_id: int, tube: Tube, pri: int, delay: int, ttr: int, body: bytes, now: float
    ) -> None:
        self.id = job_id
        self.tube = tube
        self.pri = pri
        self.delay = delay
        self.ttr = ttr
        self.body = body
        self.created = now
        self.state = READY
        self.key: Any = None
        self.reserver: Session | None = None
        self.reserves = self.timeouts = self.releases = self.buries = self.kicks = 0

    @property
    def deadline(self) -> float:
        """When a delayed job becomes ready, or a reserved job's TTR runs out."""
        return float(self.key[0]) if self.state in (DELAYED, RESERVED) else 0.0

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.tube.name.decode()} {self.state} pri={self.pri}>"


class Tube:
    """A named queue: its ready, delayed and buried jobs and its waiting sessions."""

    __slots__ = (
        "buried",
        "delayed",
        "deletes",
        "jobs",
        "name",
        "pause",
        "pauses",
        "ready",
        "reserved",
        "total_jobs",
        "unpause_at",
        "urgent",
        "using",
        "waiting",
        "waiting_count",
        "watching",
    )

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.ready = SortedList()  # ints: pri << 64 | id
        self.delayed = SortedList()  # (due, id)
        self.buried = SortedList()  # (bury order, id)
        # Sessions waiting for a job here, oldest first, with the number of
        # their wait: an entry whose session stopped (or started another
        # wait) is stale and skipped. Only what is in the queue is O(1).
        self.waiting: deque[tuple[Session, int]] = deque()
        self.waiting_count = 0
        self.urgent = self.reserved = 0
        self.jobs = 0  # jobs of any state in this tube
        self.using = self.watching = 0
        self.total_jobs = self.deletes = self.pauses = 0
        self.pause = 0  # seconds of the last pause-tube, 0 when not paused
        self.unpause_at = 0.0

    def __repr__(self) -> str:
        return f"<Tube {self.name.decode()} ready={len(self.ready)}>"


class Session:
    """One client's protocol state: the tube it uses, those it watches, its reserved jobs.

    ``conn`` is whatever the server wants back with :attr:`Store.on_reserved`
    (the connection); the store never looks at it.
    """

    __slots__ = (
        "conn",
        "held",
        "pending",
        "producer",
        "reserved",
        "use",
        "wait_due",
        "wait_seq",
        "waiting",
        "watch",
        "worker",
    )

    def __init__(self, conn: Any, tube: Tube) -> None:
        self.conn = conn
        self.use = tube
        self.watch = [tube]  # in beanstalkd's order (a removal moves the last one in)
        self.reserved: dict[int, Job] = {}
        self.waiting = False
        self.wait_seq = 0
        self.wait_due: Any = None  # the key in Store.timeouts while it waits with a deadline
        self.producer = self.worker = False
        # For the server: commands that came behind a waiting reserve, and
        # replies held until the write-ahead log has them on disk.
        self.pending: deque[Any] | None = None
        self.held: list[bytes] | None = None

    def soonest(self) -> float | None:
        """The earliest TTR deadline of this session's reserved jobs, or None."""
        if not self.reserved:
            return None
        return min(job.key[0] for job in self.reserved.values())


class Store:
    """Every tube and job, and the rules that move jobs between states.

    ``on_reserved(session, job)`` is called whenever a waiting session gets
    a job (from :meth:`wait`, or when a job becomes ready for it); the
    session has stopped waiting by then. ``on_timeout(session, reply)`` is
    called by :meth:`expire` when a wait ends without a job, with
    ``b"TIMED_OUT\\r\\n"`` or ``b"DEADLINE_SOON\\r\\n"``.
    """

    def __init__(
        self,
        on_reserved: Callable[[Session, Job], object],
        on_timeout: Callable[[Session, bytes], object],
        *,
        max_job_size: int,
    ) -> None:
        self.on_reserved = on_reserved
        self.on_timeout = on_timeout
        self.max_job_size = max_job_size
        self.jobs: dict[int, Job] = {}
        self.tubes: dict[bytes, Tube] = {}
        self.tube_order: list[Tube] = []  # beanstalkd's list order (a removal moves the last in)
        self.next_id = 1
        self._bury_seq = 0
        self.reserved = SortedList()  # (deadline, id) of every reserved job
        self.delayed = SortedList()  # (due, id) of every delayed job
        self.timeouts = SortedList()  # (due, seq, session id) of waits with a deadline
        # The earliest deadline added to any of the sets above (or a pause's end)
        # since the caller last reset it to INF: the caller re-arms its timer only
        # when this is earlier than the armed one, in O(1) per command.
        self.earliest_added = INF
        self._waits: dict[int, Session] = {}  # by id(), for the timeouts set
        self.paused: set[Tube] = set()
        self.waiting_tubes: set[Tube] = set()  # tubes with a waiting session
        self.default = self.tube(b"default")  # never dropped, as in beanstalkd
        self.stats = dict.fromkeys(
            (
                "urgent",
                "ready",
                "reserved",
                "buried",
                "waiting",
                "timeouts",
                "total_jobs",
            ),
            0,
        )

    # -- tubes ---------------------------------------------------------------

    def tube(self, name: bytes) -> Tube:
        """The tube ``name``, made if it does not exist."""
        tube = self.tubes.get(name)
        if tube is None:
            tube = self.tubes[name] = Tube(name)
            self.tube_order.append(tube)
        return tube

    def drop_if_unused(self, tube: Tube) -> None:
        """Forget ``tube`` once nothing refers to it (no user, watcher or job), as beanstalkd."""
        if tube.using or tube.watching or tube.jobs or tube is self.default:
            return
        del self.tubes[tube.name]
        order = self.tube_order
        i = order.index(tube)
        last = order.pop()
        if last is not tube:
            order[i] = last
        self.paused.discard(tube)
        self.waiting_tubes.discard(tube)

    def open_session(self, conn: Any) -> Session:
        """A new client: it uses and watches ``default``."""
        session = Session(conn, self.default)
        self.default.using += 1
        self.default.watching += 1
        return session

    def close_session(self, session: Session, now: float) -> None:
        """A client left: forget its wait; its reserved jobs return to ready."""
        self.stop_waiting(session)
        for job in list(session.reserved.values()):
            self._unreserve(job)
            self._make_ready(job)
        session.use.using -= 1
        self.drop_if_unused(session.use)
        for tube in session.watch:
            tube.watching -= 1
            self.drop_if_unused(tube)
        session.watch = []
        self.process_queue(now)

    def use(self, session: Session, name: bytes) -> None:
        """``use name``: the session's puts go to that tube."""
        old = session.use
        session.use = tube = self.tube(name)
        tube.using += 1
        old.using -= 1
        self.drop_if_unused(old)

    def watch(self, session: Session, name: bytes) -> int:
        """``watch name``; returns how many tubes the session watches."""
        tube = self.tube(name)
        if tube not in session.watch:
            session.watch.append(tube)
            tube.watching += 1
        return len(session.watch)

    def ignore(self, session: Session, name: bytes) -> int | None:
        """``ignore name``; the tubes watched now, or None when it is the last one."""
        watch = session.watch
        tube = self.tubes.get(name)
        if tube is None or tube not in watch:
            return len(watch)
        if len(watch) < 2:
            return None
        i = watch.index(tube)
        last = watch.pop()
        if last is not tube:
            watch[i] = last
        tube.watching -= 1
        self.drop_if_unused(tube)
        return len(watch)

    def pause(self, tube: Tube, seconds: int, now: float) -> None:
        """``pause-tube``: no job of ``tube`` is reserved for ``seconds`` (0: an instant)."""
        tube.pause = seconds
        tube.unpause_at = now + (seconds or 1e-9)
        tube.pauses += 1
        self.paused.add(tube)
        if tube.unpause_at < self.earliest_added:
            self.earliest_added = tube.unpause_at

    # -- putting jobs in ---------------------------------------------------------

    def put(self, tube: Tube, pri: int, delay: int, ttr: int, body: bytes, now: float) -> Job:
        """A new job (``ttr`` below 1 s becomes 1 s, as beanstalkd does); ready or delayed."""
        job = Job(self.next_id, tube, pri, delay, max(ttr, 1), body, now)
        self.next_id += 1
        self.jobs[job.id] = job
        tube.jobs += 1
        tube.total_jobs += 1
        self.stats["total_jobs"] += 1
        if delay:
            self._make_delayed(job, now + delay)
        else:
            self._make_ready(job)
            if tube.waiting_count:
                self.process_queue(now)
        return job

    def restore(
        self,
        job_id: int,
        name: bytes,
        pri: int,
        delay: int,
        ttr: int,
        body: bytes,
        *,
        state: str,
        due: float,
        now: float,
    ) -> Job:
        """Put back a job read from the log, with its id, as ``state`` (ready, delayed, buried)."""
        tube = self.tube(name)
        job = Job(job_id, tube, pri, delay, ttr, body, now)
        self.next_id = max(self.next_id, job_id + 1)
        self.jobs[job_id] = job
        tube.jobs += 1
        if state == BURIED:
            self._make_buried(job)
        elif state == DELAYED and due > now:
            self._make_delayed(job, due)
        else:
            self._make_ready(job)
        return job

    def _make_ready(self, job: Job) -> None:
        tube = job.tube
        job.state = READY
        job.key = key = job.pri << 64 | job.id
        tube.ready.add(key)
        stats = self.stats
        stats["ready"] += 1
        if job.pri < URGENT_THRESHOLD:
            tube.urgent += 1
            stats["urgent"] += 1

    def _unready(self, job: Job) -> None:
        tube = job.tube
        tube.ready.remove(job.key)
        stats = self.stats
        stats["ready"] -= 1
        if job.pri < URGENT_THRESHOLD:
            tube.urgent -= 1
            stats["urgent"] -= 1

    def _make_delayed(self, job: Job, due: float) -> None:
        job.state = DELAYED
        job.key = key = (due, job.id)
        job.tube.delayed.add(key)
        self.delayed.add(key)
        if due < self.earliest_added:
            self.earliest_added = due

    def _undelay(self, job: Job) -> None:
        job.tube.delayed.remove(job.key)
        self.delayed.remove(job.key)

    def _make_buried(self, job: Job) -> None:
        self._bury_seq += 1
        job.state = BURIED
        job.key = key = (self._bury_seq, job.id)
        job.tube.buried.add(key)
        self.stats["buried"] += 1

    def _unbury(self, job: Job) -> None:
        job.tube.buried.remove(job.key)
        self.stats["buried"] -= 1

    def _reserve(self, session: Session, job: Job, now: float) -> None:
        job.state = RESERVED
        job.reserver = session
        job.reserves += 1
        job.key = key = (now + job.ttr, job.id)
        self.reserved.add(key)
        if key[0] < self.earliest_added:
            self.earliest_added = key[0]
        session.reserved[job.id] = job
        job.tube.reserved += 1
        self.stats["reserved"] += 1

    def _unreserve(self, job: Job) -> None:
        self.reserved.remove(job.key)
        session = job.reserver
        assert session is not None
        del session.reserved[job.id]
        job.reserver = None
        job.tube.reserved -= 1
        self.stats["reserved"] -= 1

    # -- reserving -------------------------------------------------------------

    def deadline_soon(self, session: Session, now: float) -> bool:
        """Has the session a reserved job within :data:`SAFETY_MARGIN` of its deadline?"""
        soonest = session.soonest()
        return soonest is not None and now >= soonest - SAFETY_MARGIN

    def has_ready(self, session: Session) -> bool:
        """Has a tube the session watches a ready job (paused or not, as beanstalkd asks)?"""
        return any(tube.ready for tube in session.watch)

    def wait(self, session: Session, timeout: int, now: float) -> None:
        """``reserve`` (``timeout`` < 0) or ``reserve-with-timeout``: wait for a job.

        Gives the session a job at once if one is ready (``on_reserved``),
        else it waits in every tube it watches until a job comes, its
        timeout passes, or a job it holds nears its deadline (``on_timeout``
        from :meth:`expire`).
        """
        session.wait_seq += 1
        if not self.waiting_tubes and self._reserve_now(session, now):
            return  # nobody else waits: the common case, without queueing
        session.waiting = True
        entry = (session, session.wait_seq)
        for tube in session.watch:
            tube.waiting.append(entry)
            tube.waiting_count += 1
            self.waiting_tubes.add(tube)
        self.stats["waiting"] += 1
        # When the wait ends by itself: the timeout, or a second before the
        # soonest deadline of the jobs it holds (then DEADLINE_SOON).
        due = None if timeout < 0 else now + timeout
        soonest = session.soonest()
        if soonest is not None:
            soon = soonest - SAFETY_MARGIN
            due = soon if due is None else min(due, soon)
        if due is not None:
            session.wait_due = key = (due, session.wait_seq, id(session))
            self.timeouts.add(key)
            if due < self.earliest_added:
                self.earliest_added = due
            self._waits[id(session)] = session
        self.process_queue(now)

    def _reserve_now(self, session: Session, now: float) -> bool:
        """Reserve the best ready job of the session's tubes when no session waits.

        What :meth:`process_queue` would do for a lone waiter, without the
        queueing: with nobody else waiting, the best (priority, id) ready job
        of the tubes it watches (paused ones left out) is the one it gets.
        """
        best = self._best_ready(session.watch, now)
        if best is None:
            return False
        job = self.jobs[best.ready[0] & _ID_MASK]
        self._unready(job)
        session.worker = True
        self._reserve(session, job, now)
        self.on_reserved(session, job)
        return True

    def stop_waiting(self, session: Session) -> None:
        """The session waits no more (it got a job, timed out, or left)."""
        if not session.waiting:
            return
        session.waiting = False
        self.stats["waiting"] -= 1
        for tube in session.watch:
            tube.waiting_count -= 1
            waiting = tube.waiting
            if len(waiting) > 2 * tube.waiting_count + WAITING_SLACK:
                tube.waiting = deque(e for e in waiting if e[0].waiting and e[0].wait_seq == e[1])
            if not tube.waiting_count:
                self.waiting_tubes.discard(tube)
        if session.wait_due is not None:
            self.timeouts.remove(session.wait_due)
            del self._waits[id(session)]
            session.wait_due = None

    def process_queue(self, now: float) -> None:
        """Give ready jobs to waiting sessions: the best (priority, id) first, as beanstalkd.

        Paused tubes are left out; ``now`` starts the TTR of each reservation.
        """
        while self.waiting_tubes:
            best = self._best_ready(self.waiting_tubes, now)
            if best is None:
                return
            session = self._take_waiter(best)
            job = self.jobs[best.ready[0] & _ID_MASK]
            self._unready(job)
            self.stop_waiting(session)
            session.worker = True
            self._reserve(session, job, now)
            self.on_reserved(session, job)

    def _best_ready(self, tubes: Iterable[Tube], now: float) -> Tube | None:
        """The tube of ``tubes`` whose first ready job is the best (priority, id), or None.

        Paused tubes are left out; one whose pause is over resumes here,
        lazily, as in beanstalkd's ``next_awaited_job``.
        """
        best = None
        best_key = 0
        for tube in tubes:
            if not tube.ready:
                continue
            if tube in self.paused:
                if tube.unpause_at > now:
                    continue
                self._unpause(tube)
            key = tube.ready[0]
            if best is None or key < best_key:
                best, best_key = tube, key
        return best

    def _unpause(self, tube: Tube) -> None:
        self.paused.discard(tube)
        tube.pause = 0
        tube.unpause_at = 0.0

    def _take_waiter(self, tube: Tube) -> Session:
        waiting = tube.waiting
        while True:
            session, seq = waiting.popleft()
            if session.waiting and session.wait_seq == seq:
                return session

    def reserve_job(self, session: Session, job: Job, now: float) -> bool:
        """``reserve-job id``: reserve this job if it is ready, delayed or buried."""
        if job.state == READY:
            self._unready(job)
        elif job.state == DELAYED:
            self._undelay(job)
        elif job.state == BURIED:
            self._unbury(job)
        else:
            return False
        session.worker = True
        self._reserve(session, job, now)
        return True

    # -- what a worker does with a job -----------------------------------------

    def find_reserved(self, session: Session, job_id: int) -> Job | None:
        """The job ``job_id`` if this session holds it reserved, else None."""
        return session.reserved.get(job_id)

    def delete(self, session: Session, job_id: int) -> Job | None:
        """``delete``: a job reserved by this session, or ready, delayed or buried."""
        job = session.reserved.get(job_id)
        if job is not None:
            self._unreserve(job)
        else:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            state = job.state
            if state == READY:
                self._unready(job)
            elif state == DELAYED:
                self._undelay(job)
            elif state == BURIED:
                self._unbury(job)
            else:
                return None  # reserved by another client
        del self.jobs[job_id]
        tube = job.tube
        tube.deletes += 1
        tube.jobs -= 1
        self.drop_if_unused(tube)
        return job

    def release(self, job: Job, pri: int, delay: int, now: float) -> None:
        """``release``: a job this session reserved goes back, ready or delayed."""
        self._unreserve(job)
        job.pri = pri
        job.delay = delay
        job.releases += 1
        if delay:
            self._make_delayed(job, now + delay)
        else:
            self._make_ready(job)
            if job.tube.waiting_count:
                self.process_queue(now)

    def bury(self, job: Job, pri: int) -> None:
        """``bury``: a job this session reserved waits, buried, for a kick."""
        self._unreserve(job)
        job.pri = pri
        job.buries += 1
        self._make_buried(job)

    def touch(self, job: Job, now: float) -> None:
        """``touch``: the job's TTR starts again."""
        self.reserved.remove(job.key)
        job.key = key = (now + job.ttr, job.id)
        self.reserved.add(key)
        if key[0] < self.earliest_added:
            self.earliest_added = key[0]

    def kick(self, tube: Tube, bound: int, now: float) -> list[Job]:
        """``kick``: up to ``bound`` buried jobs of ``tube`` (or, if none, delayed) become ready."""
        source = tube.buried if tube.buried else tube.delayed
        kicked = [self.jobs[key[1]] for key in source.islice(0, bound)]
        for job in kicked:
            self.kick_job(job, now)
        return kicked

    def kick_job(self, job: Job, now: float) -> bool:
        """``kick-job``: a buried or delayed job becomes ready; False in any other state."""
        if job.state == BURIED:
            self._unbury(job)
        elif job.state == DELAYED:
            self._undelay(job)
        else:
            return False
        job.kicks += 1
        self._make_ready(job)
        if job.tube.waiting_count:
            self.process_queue(now)
        return True

    # -- time ------------------------------------------------------------------

    def next_due(self) -> float | None:
        """When :meth:`expire` has something to do next, or None."""
        times = []
        if self.delayed:
            times.append(self.delayed[0][0])
        if self.reserved:
            times.append(self.reserved[0][0])
        if self.timeouts:
            times.append(self.timeouts[0][0])
        times.extend(tube.unpause_at for tube in self.paused)
        return min(times) if times else None

    def expire(self, now: float) -> None:
        """Do what is due at ``now``, in beanstalkd's order (``prottick``).

        Delayed jobs come due and become ready; paused tubes resume;
        reserved jobs past their TTR return to ready (counted in
        ``timeouts``); waits that reached their end get ``on_timeout``.
        """
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            job = self.jobs[delayed[0][1]]
            self._undelay(job)
            self._make_ready(job)
        for tube in [t for t in self.paused if t.unpause_at <= now]:
            self._unpause(tube)
        self.process_queue(now)
        reserved = self.reserved
        while reserved and reserved[0][0] <= now:
            job = self.jobs[reserved[0][1]]
            self._unreserve(job)
            job.timeouts += 1
            self.stats["timeouts"] += 1
            self._make_ready(job)
            self.process_queue(now)
        timeouts = self.timeouts
        while timeouts and timeouts[0][0] <= now:
            session = self._waits[timeouts[0][2]]
            soon = self.deadline_soon(session, now)
            self.stop_waiting(session)
            self.on_timeout(session, b"DEADLINE_SOON\r\n" if soon else b"TIMED_OUT\r\n")

    # -- looking ---------------------------------------------------------------

    def first(self, tube: Tube, state: str) -> Job | None:
        """The job ``peek-ready``/``-delayed``/``-buried`` shows for ``tube``, or None."""
        if state == READY:
            return self.jobs[tube.ready[0] & _ID_MASK] if tube.ready else None
        keys = tube.delayed if state == DELAYED else tube.buried
        return self.jobs[keys[0][1]] if keys else None

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs.values())

    def __len__(self) -> int:
        return len(self.jobs)
