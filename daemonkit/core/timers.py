"""The timer queue every daemonkit timer lives in.

A :class:`TimerQueue` holds one-shot and periodic timers and fires them when
told to: the reactor arms *one* backend timer for the earliest deadline (the
queue tells it which, through ``arm``) and calls :meth:`TimerQueue.run_due`
when it expires. Nothing here does I/O or imports asyncio, so a
:class:`FakeClock` can drive every timer in a test without sleeping.

Rules the queue keeps:

* **Never early.** A timer fires only once the clock has reached its deadline
  (float noise of at most ``1e-9`` s aside, so that ``advance(0.1)`` ten
  times reaches a tick due at ``1.0``).
* **At most about 1 ms late** with a real clock: timers are grouped into 1 ms
  buckets and the backend is armed for the end of the earliest bucket, when
  every timer in it is due. libuv's own timers have 1 ms resolution too.
* **Deterministic order.** One :meth:`~TimerQueue.run_due` fires what is due
  in deadline order, first scheduled first among equal deadlines.
* **Drift-free periodic timers.** :meth:`~TimerQueue.call_every` ticks at
  ``start + k * interval``; ticks missed because the loop ran late are skipped
  and counted in :attr:`Timer.skipped`, never run back to back.
* **Callbacks may do anything to the queue.** They may add and cancel timers,
  including their own; a timer added while :meth:`~TimerQueue.run_due` is
  firing runs in the *next* call, even if it is already due, so a callback
  that keeps rescheduling itself cannot starve the loop.

How it is built: a two-level (hierarchical) timing wheel, as the Linux
kernel's timers, Netty's ``HashedWheelTimer`` and Kafka's purgatory are.

* **Fine buckets** hold the timers due soon: each is a ``dict`` (timer ->
  None, in the order the timers were added) keyed by the deadline in whole
  milliseconds rounded up (the *fine key*); the keys sit in a binary heap
  (:mod:`heapq`), touched (O(log B)) only when a new bucket appears or the
  earliest one is fired.
* **Coarse buckets** hold the timers due later: a ``list`` of timers in the
  order they were added, keyed by ``fine key >> 10`` (2**10 ms, about 1 s,
  per bucket), the keys in a heap of their own. A coarse bucket is
  *cascaded* -- its timers moved, in the order they were added, into the
  fine buckets -- when time reaches its start minus a horizon of 2**10 ms,
  so before any of its timers can be due.

Why two levels: timers that are far away (idle timeouts, request deadlines)
are most of a daemon's timers, and most are cancelled long before they come
due. With 1 ms buckets only, each add and cancel touched one of thousands of
cold dicts (10 s of deadlines: 10,000 buckets), a cache miss or two each;
the ten coarse buckets that 10 s of deadlines need stay hot in the cache.
A far timer cancelled before its bucket cascades never reaches the fine
level at all; one that survives is moved once, about a second before it is
due. Order is kept: a coarse bucket covers fine keys that no fine bucket
holds yet, and is cascaded in insertion order before any timer is added
directly to those fine keys.

Why lists for coarse buckets: a coarse bucket gathers every timer added
during a whole second (100,000 in the benchmark), and inserting into and
deleting from a dict that size cost more than the cache misses saved
(measured: 530-780 ns per add+cancel with dicts, 430-460 with lists).
Appending is cheap, and cancel() on a timer in a coarse bucket only marks it
(``timer._bucket = None``); the bucket skips marked timers when it cascades
and drops them, in place, whenever its length reaches a threshold (at least
4096, and twice the live timers any earlier clean-up left): memory stays
proportional to the live timers, at O(1) amortised per add. A coarse bucket
whose timers were all cancelled still gets its cascade wake-up (once,
cheap); one with nothing left is dropped.

Where a new timer goes is decided by the *cascade frontier*, the first fine
key that the fine level does not cover yet: a fine key below it goes to a
fine bucket, any other to a coarse one. The frontier only moves forward, a
whole coarse bucket at a time: in :meth:`TimerQueue.run_due`, which first
cascades every coarse bucket whose time has come, and when a new coarse
bucket would be made for a deadline that the clock has already brought
within the horizon (the queue was idle: nothing ran it for a while).

Adding and cancelling a timer are O(1): a dict operation, or a list append
and a mark. Cancelling is lazy about buckets: one left empty stays until it
is reached, or until empty buckets pile up and are dropped at once. The backend is armed for the
earliest of the end of the earliest fine bucket and the cascade point of the
earliest coarse bucket; a cascade wake-up may fire nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sized
from heapq import heapify, heappop, heappush
from operator import attrgetter
from typing import TypeVar

__all__ = ["Clock", "FakeClock", "MonotonicClock", "Timer", "TimerQueue"]

# Bucket width: 1 ms, the resolution of libuv's timers (uv_now() is in ms),
# so a finer grid would buy no precision under uvloop.
_PER_SECOND = 1000.0

# Float noise tolerated when deciding that a deadline has passed: sums of
# float steps (0.1 added ten times is 0.9999999999999999) must still reach a
# deadline computed as a product (10 * 0.1 == 1.0). One nanosecond is far
# below any clock's real resolution and above the rounding error of
# monotonic times up to ~10^6 s.
_EPSILON = 1e-9

# Coarse buckets: 2**_COARSE_BITS fine keys (ms) each, about 1 s. A coarse
# bucket starting at fine key S is cascaded into the fine buckets once time
# reaches S - _HORIZON (in ms): one coarse bucket ahead, so the fine level
# always covers at least the next second, and timers due within it (retry
# delays, short timeouts) go straight to their fine bucket.
_COARSE_BITS = 10
_HORIZON = 1 << _COARSE_BITS

# Buckets emptied by cancel() are left in place (dropped when reached);
# once the queue holds twice as many buckets as after the last clean-up (and
# at least _COMPACT_MIN), the empty ones are dropped all at once: memory
# stays proportional to the live buckets, at O(1) amortised per bucket.
_COMPACT_MIN = 4096

# FakeClock.advance() gives up after this many rounds of timers due at one
# instant: only a timer chain rescheduling itself with no delay gets there,
# and a test should fail with a message rather than hang.
_SAME_INSTANT_LIMIT = 100_000

# Tick numbers of periodic timers stop at 2**53, where floats stop counting
# one by one; only an interval far below the clock's resolution gets there.
_MAX_TICK = 2.0**53

_ceil = math.ceil
_WHEN = attrgetter("when")
_INF = math.inf


def _compact(buckets: dict[int, dict[Timer, None]], keys: list[int]) -> int:
    """Drop the buckets cancel() emptied; return the size for the next clean-up.

    The heap of keys is rebuilt in place: run_due() may hold a reference to it.
    """
    for key in [key for key, bucket in buckets.items() if not bucket]:
        del buckets[key]
    keys[:] = buckets
    heapify(keys)
    return max(_COMPACT_MIN, 2 * len(buckets))


_Bucket = TypeVar("_Bucket", bound=Sized)


def _first_nonempty(keys: list[int], buckets: dict[int, _Bucket]) -> int | None:
    """The smallest key in the heap ``keys`` whose bucket is not empty.

    Empty buckets met on the way are dropped from ``buckets`` and the heap.
    """
    while keys:
        if buckets[keys[0]]:
            return keys[0]
        del buckets[heappop(keys)]
    return None


def _noop(*args: object) -> None:
    """Stand-in callback of fired and cancelled timers (drops the real one)."""


class Clock:
    """A source of monotonic time, in seconds, for a :class:`TimerQueue`.

    Subclass it to drive timers from another time source; the queue reads
    :meth:`now` on every ``call_later``/``call_every`` and in ``run_due()``.
    """

    __slots__ = ()

    def now(self) -> float:
        """Return the current time in seconds; it never goes backwards."""
        raise NotImplementedError

    def attach(self, queue: TimerQueue) -> None:
        """Be told that *queue* reads this clock (called by ``TimerQueue()``).

        The base class ignores it; :class:`FakeClock` remembers the queue so
        that :meth:`FakeClock.advance` can fire its timers.
        """


class MonotonicClock(Clock):
    """The real clock: :func:`time.monotonic`, as the asyncio loops use."""

    __slots__ = ()

    # The builtin itself, so the queue calls it without a Python frame.
    now = staticmethod(time.monotonic)


class FakeClock(Clock):
    """A clock for tests: time moves only when :meth:`advance` is called.

    Every :class:`TimerQueue` built with this clock attaches itself, and
    :meth:`advance` fires their timers as time passes. Nothing ever sleeps.
    The clock keeps the queues it has been attached to for its lifetime.
    """

    __slots__ = ("_now", "_queues")

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._queues: list[TimerQueue] = []

    def now(self) -> float:
        """Return the fake current time, in seconds."""
        return self._now

    def attach(self, queue: TimerQueue) -> None:
        """Remember *queue*, so that :meth:`advance` fires its timers."""
        if all(q is not queue for q in self._queues):
            self._queues.append(queue)

    def advance(self, seconds: float) -> int:
        """Move time forward by *seconds*, firing timers that come due.

        Time is stepped to each due deadline in turn, so every callback sees
        ``now()`` equal to its own deadline and a periodic timer ticks once
        per interval, exactly as it would with a punctual loop. Timers of all
        attached queues fire in deadline order (queues in attach order among
        equal deadlines). Timers that callbacks add on the way fire too if
        they come due before the end. A timer due within float noise
        (``1e-9`` s) past the end fires too, and ``now()`` then ends at its
        deadline.

        Returns the number of callbacks run. Raises :class:`ValueError` if
        *seconds* is negative, NaN or infinite; :class:`RuntimeError` if
        timers keep coming due at one instant (a callback that reschedules
        itself with no delay), rather than loop forever; and whatever a
        callback raises on a queue without ``on_error`` (the clock then
        stays at that timer's deadline).
        """
        if not 0.0 <= seconds < _INF:
            raise ValueError(
                f"FakeClock.advance() needs a finite number of seconds >= 0, got {seconds!r}"
            )
        target = self._now + seconds
        ran = 0
        queues = self._queues
        rounds = 0  # run_due() rounds without time moving
        while True:
            earliest: float | None = None
            for queue in queues:
                deadline = queue.next_deadline()
                if deadline is not None and (earliest is None or deadline < earliest):
                    earliest = deadline
            if earliest is None or earliest > target + _EPSILON:
                break
            if earliest > self._now:
                self._now = earliest
                rounds = 0
            rounds += 1
            if rounds > _SAME_INSTANT_LIMIT:
                raise RuntimeError(
                    f"FakeClock.advance(): timers kept coming due at t={self._now!r} for "
                    f"{_SAME_INSTANT_LIMIT} rounds; a callback reschedules itself with no delay"
                )
            for queue in queues:
                ran += queue.run_due(self._now)
        if target > self._now:
            self._now = target
        return ran


class Timer:
    """A scheduled call, as returned by the :class:`TimerQueue` methods.

    Keep it to cancel the call with :meth:`cancel`; drop it otherwise (the
    queue keeps what it needs). Only the queue makes timers.

    Attributes:
        when: deadline of the next firing, in the queue's clock seconds. For a
            periodic timer, while its callback runs this is already the
            deadline of the following tick.
        interval: seconds between ticks of a periodic timer; ``None`` for a
            one-shot timer.
        skipped: ticks of a periodic timer that were skipped because the
            queue ran late past them (always 0 for one-shot timers).
    """

    __slots__ = ("_args", "_bucket", "_fn", "when")

    when: float
    interval: float | None = None
    skipped: int = 0

    # What holds the timer while it is pending: its 1 ms bucket (a dict), the
    # batch run_due() is firing (a dict), or its coarse bucket (a list, which
    # cancel() leaves it in). None once fired or cancelled.
    _bucket: dict[Timer, None] | list[Timer] | None
    _fn: Callable[..., object]
    _args: tuple[object, ...]

    def __init__(self) -> None:
        raise TypeError("timers are made by TimerQueue.call_at(), call_later() and call_every()")

    @property
    def active(self) -> bool:
        """True until the timer has fired (one-shot) or been cancelled."""
        return self._bucket is not None

    def cancel(self) -> None:
        """Make sure the timer never fires (again). Idempotent, O(1).

        Safe from inside any timer callback, the timer's own included: a
        periodic timer that cancels itself from its callback does not tick
        again. Cancelling a timer that already fired does nothing.
        """
        bucket = self._bucket
        if bucket is not None:
            self._bucket = None
            if type(bucket) is dict:
                del bucket[self]
            # else a coarse bucket: it drops the timer lazily, seeing that
            # timer._bucket is no longer itself.
            # Drop the references to the callback, as asyncio's handles do.
            self._fn = _noop
            self._args = ()

    def __repr__(self) -> str:
        state = "active" if self._bucket is not None else "inactive"
        kind = "" if self.interval is None else f" interval={self.interval!r}"
        return f"<Timer when={self.when!r}{kind} {self._fn!r} {state}>"


# The queue makes its timers through these subclasses, whose __init__ is
# object's own: as fast as no __init__ at all, while Timer() itself refuses.


class _OneShotTimer(Timer):
    """A timer made by :meth:`TimerQueue.call_at` or :meth:`TimerQueue.call_later`."""

    __slots__ = ()
    __init__ = object.__init__


class _PeriodicTimer(Timer):
    """A timer made by :meth:`TimerQueue.call_every`: ticks at base + k*interval."""

    __slots__ = ("_base", "_tick", "interval", "skipped")
    __init__ = object.__init__

    _base: float
    _tick: int
    interval: float | None
    skipped: int


class TimerQueue:
    """The timers of one reactor, kept in 1 ms buckets and, when far, ~1 s ones.

    *clock* is where time comes from (default :class:`MonotonicClock`); the
    queue calls ``clock.attach(self)``.

    *arm* is the backend hook: ``arm(when)`` asks the backend to call
    :meth:`run_due` once its clock reaches *when* (``None``: nothing is
    pending, drop the wake-up). It is called when a timer lands in a bucket
    whose wake-up is earlier than the one armed, at the end of every
    :meth:`run_due` (whose backend wake-up has been used up) and by
    :meth:`clear` -- not on every add. *when* is the earlier of the end of
    the earliest 1 ms bucket (never before its earliest deadline, at most
    1 ms after it) and the point where the earliest coarse bucket of far
    timers is to be moved into 1 ms buckets, about a second before any of
    them is due: so never after the earliest deadline plus 1 ms. It may
    already be past; wake up at once then. Cancelling never calls *arm*, so
    a wake-up may find nothing to do, and a cascade wake-up fires nothing;
    :meth:`run_due` then simply arms the next one.

    *on_error* receives ``(timer, exception)`` for every :class:`Exception`
    a callback raises, and the other due timers still run. Without it,
    :meth:`run_due` runs the whole due batch and then re-raises the first
    exception (the others are listed in its notes on Python 3.11+).
    """

    __slots__ = (
        "_arm",
        "_armed",
        "_buckets",
        "_cbuckets_at",
        "_ccompact_at",
        "_ckeys",
        "_coarse",
        "_compact_at",
        "_detached",
        "_keys",
        "_limit",
        "_now",
        "_on_error",
        "_running",
        "clock",
    )

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        arm: Callable[[float | None], None] | None = None,
        on_error: Callable[[Timer, BaseException], None] | None = None,
    ) -> None:
        if clock is None:
            clock = MonotonicClock()
        self.clock: Clock = clock
        self._now: Callable[[], float] = clock.now
        self._arm = arm
        self._on_error = on_error
        # bucket key (deadline in ms, rounded up) -> {timer: None} in the order added
        self._buckets: dict[int, dict[Timer, None]] = {}
        # Heap of the keys of self._buckets (the same set, always). A heap, not
        # the sortedcontainers.SortedSet DESIGN.md first named: buckets only
        # ever leave from the front, and heappush took 60-90 ns here against
        # 500-1700 ns for SortedSet.add (which a new bucket pays).
        self._keys: list[int] = []
        # coarse key (fine key >> _COARSE_BITS) -> [timer, ...] in the order
        # added, cancelled ones included until dropped; and the heap of keys
        self._coarse: dict[int, list[Timer]] = {}
        self._ckeys: list[int] = []
        # The cascade frontier: the first fine key the fine buckets do not
        # cover; always a multiple of 2**_COARSE_BITS once set. -inf until the
        # first coarse bucket would be made, which reads the clock and sets it.
        self._limit: float = -_INF
        # fine key (ms) of the wake-up the backend is armed for: the end of a
        # fine bucket or the cascade point of a coarse one; +inf when
        # disarmed, -inf while run_due() runs (it arms once, at its end)
        self._armed: float = _INF
        self._running = False
        # while run_due() fires: the dicts holding the due timers not run yet
        self._detached: list[dict[Timer, None]] = []
        # bucket count at which the buckets emptied by cancel() are dropped
        self._compact_at = _COMPACT_MIN
        # length at which a coarse bucket drops its cancelled timers; and the
        # number of coarse buckets at which those left with none are dropped
        self._ccompact_at = _COMPACT_MIN
        self._cbuckets_at = _COMPACT_MIN
        clock.attach(self)

    # -- scheduling -----------------------------------------------------------

    def call_at(self, when: float, fn: Callable[..., object], *args: object) -> Timer:
        """Schedule ``fn(*args)`` at the clock time *when*, in seconds.

        Returns the :class:`Timer`; call its :meth:`~Timer.cancel` if the call
        is no longer wanted. A *when* already past fires at the next
        :meth:`run_due`. Raises :class:`ValueError` if *when* is NaN or
        infinite.
        """
        timer: Timer = _OneShotTimer()
        timer.when = when
        timer._fn = fn
        timer._args = args
        try:
            self._insert(timer)
        except (ValueError, OverflowError):
            raise ValueError(f"timer deadline must be a finite number, got {when!r}") from None
        return timer

    def call_later(self, delay: float, fn: Callable[..., object], *args: object) -> Timer:
        """Schedule ``fn(*args)`` *delay* seconds from now.

        A negative *delay* counts as 0. Returns the :class:`Timer`; call its
        :meth:`~Timer.cancel` if the call is no longer wanted. Raises
        :class:`ValueError` if *delay* is NaN or infinite.
        """
        # call_at() and _insert() inlined: this is the hot path (see bench/timers.py).
        if delay < 0.0:
            delay = 0.0
        when = self._now() + delay
        timer: Timer = _OneShotTimer()
        timer.when = when
        timer._fn = fn
        timer._args = args
        try:
            key = _ceil(when * _PER_SECOND)
        except (ValueError, OverflowError):
            raise ValueError(f"timer delay must be a finite number, got {delay!r}") from None
        if key >= self._limit:
            far = self._coarse.get(key >> _COARSE_BITS)
            if far is not None or (far := self._new_coarse(key)) is not None:
                far.append(timer)
                timer._bucket = far
                if len(far) >= self._ccompact_at:
                    self._shrink(far)
                return timer
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._new_bucket(key)
        bucket[timer] = None
        timer._bucket = bucket
        return timer

    def call_every(
        self,
        interval: float,
        fn: Callable[..., object],
        *args: object,
        first: float | None = None,
    ) -> Timer:
        """Call ``fn(*args)`` every *interval* seconds, drift-free.

        Ticks fall at ``start + k * interval`` (``start`` is now, and the
        first tick is one *interval* away), or, with *first*, at
        ``now + first + k * interval`` for k = 0, 1, 2... (a negative *first*
        counts as 0). The schedule never drifts, whatever the callbacks cost.
        When the queue runs late past whole ticks, one call is made and the
        ticks missed are skipped (counted in :attr:`Timer.skipped`), never
        run back to back.

        The timer keeps ticking after its callback raises (the error goes to
        ``on_error`` or is re-raised by :meth:`run_due`); cancel it to stop.
        Returns the :class:`Timer`. Raises :class:`ValueError` if *interval*
        is not a positive finite number, or *first* is NaN or infinite.
        """
        if not 0.0 < interval < _INF:
            raise ValueError(
                f"call_every() needs a positive, finite interval in seconds, got {interval!r}"
            )
        if first is not None and not -_INF < first < _INF:
            raise ValueError(f"call_every() needs a finite first delay, got {first!r}")
        timer: _PeriodicTimer = _PeriodicTimer()
        timer.interval = interval
        timer.skipped = 0
        timer._fn = fn
        timer._args = args
        now = self._now()
        if first is None:
            timer._base = now
            timer._tick = 1
            timer.when = now + interval
        else:
            timer._base = timer.when = now + max(first, 0.0)
            timer._tick = 0
        self._insert(timer)
        return timer

    # -- firing ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Return the earliest deadline of any pending timer, or ``None``.

        Exact (not rounded to a bucket); O(size of the earliest bucket).
        """
        earliest = _INF
        # Every fine bucket comes before every coarse one.
        if self._first_key() is not None:
            earliest = min(map(_WHEN, self._buckets[self._keys[0]]))
        else:
            ckeys, coarse = self._ckeys, self._coarse
            while ckeys:
                far = coarse[ckeys[0]]
                whens = [timer.when for timer in far if timer._bucket is far]
                if whens:
                    earliest = min(whens)
                    break
                del coarse[heappop(ckeys)]  # every timer in it was cancelled
        for batch in self._detached:
            for timer in batch:
                if timer.when < earliest:
                    earliest = timer.when
        return None if earliest == _INF else earliest

    def run_due(self, now: float | None = None) -> int:
        """Fire every timer due at *now* (default: ``clock.now()``).

        Due timers run in deadline order, first scheduled first among equal
        deadlines. Timers that callbacks add are not part of this batch, even
        if already due: they run at the next call, which ``arm`` asks for.
        A periodic timer is rescheduled (skipping the ticks already past)
        before its callback runs. Ends by calling ``arm`` with the next
        wake-up time, or ``None`` when nothing is pending.

        Returns the number of callbacks run. Exceptions from callbacks go to
        ``on_error``; without it the first one is re-raised once the batch
        has run. A :class:`BaseException` that is not an :class:`Exception`
        (KeyboardInterrupt, SystemExit) propagates at once; the due timers
        not yet run stay pending. Raises :class:`RuntimeError` if called
        from inside one of this queue's callbacks.
        """
        if self._running:
            raise RuntimeError(
                "TimerQueue.run_due() called from inside one of its timer callbacks; "
                "schedule a timer instead"
            )
        if now is None:
            now = self._now()
        horizon = now + _EPSILON
        limit = _ceil(horizon * _PER_SECOND)
        self._armed = -_INF  # no arm() from the cascade: _fire() arms once, at its end
        if limit + (_HORIZON + 1) >= self._limit:
            self._advance(limit)
        # Keys at or below limit may hold due timers; 2 ms below it every
        # timer is due, whatever the float rounding of the keys.
        sure = limit - 2
        keys, buckets = self._keys, self._buckets
        due: list[Timer] = []
        batches: list[dict[Timer, None]] = []
        kept: list[int] = []
        while keys and keys[0] <= limit:
            key = heappop(keys)
            bucket = buckets.pop(key)
            if not bucket:
                continue  # emptied by cancel()
            if key > sure:
                if min(map(_WHEN, bucket)) > horizon:  # nothing due in it yet
                    buckets[key] = bucket
                    kept.append(key)
                    continue
                if max(map(_WHEN, bucket)) > horizon:
                    # Partly due: the rest stay, in a fresh bucket under the same key.
                    rest = {timer: None for timer in bucket if timer.when > horizon}
                    for timer in rest:
                        del bucket[timer]
                        timer._bucket = rest
                    buckets[key] = rest
                    kept.append(key)
            due += bucket
            batches.append(bucket)
        for key in kept:
            heappush(keys, key)
        if len(due) > 1:
            due.sort(key=_WHEN)  # stable: first added first among equal deadlines
        return self._fire(due, batches, horizon)

    def _fire(self, due: list[Timer], batches: list[dict[Timer, None]], horizon: float) -> int:
        # The due timers wait in their bucket dicts, now detached from the
        # queue: cancel() still works on them, and len(), next_deadline()
        # and clear() see them through self._detached.
        self._running = True
        self._armed = -_INF  # no arm() from adds: arm once, at the end
        self._detached = batches
        on_error = self._on_error
        errors: list[Exception] = []
        ran = 0
        try:
            for timer in due:
                holder = timer._bucket
                if type(holder) is not dict:
                    continue  # None: cancelled by an earlier callback of this batch
                del holder[timer]
                fn = timer._fn
                args = timer._args
                if type(timer) is _OneShotTimer:
                    timer._bucket = None
                    timer._fn = _noop
                    timer._args = ()
                else:
                    self._reschedule(timer, horizon)
                ran += 1
                try:
                    fn(*args)
                except Exception as exc:
                    if on_error is None:
                        errors.append(exc)
                    else:
                        on_error(timer, exc)
        finally:
            self._running = False
            self._detached = []
            if any(batches):
                # Something escaped (KeyboardInterrupt, or on_error raised):
                # what the batch did not reach stays pending.
                pending = {id(batch) for batch in batches}
                for timer in due:
                    holder = timer._bucket
                    if type(holder) is dict and id(holder) in pending:
                        del holder[timer]
                        self._insert(timer)
            self._rearm()
        if errors:
            first = errors[0]
            if len(errors) > 1:
                add_note = getattr(first, "add_note", None)
                if add_note is not None:
                    others = ", ".join(repr(exc) for exc in errors[1:])
                    add_note(f"{len(errors) - 1} more timer callback(s) raised too: {others}")
            raise first
        return ran

    def _reschedule(self, timer: Timer, horizon: float) -> None:
        assert isinstance(timer, _PeriodicTimer)
        interval = timer.interval
        assert interval is not None
        base = timer._base
        tick = timer._tick + 1
        when = base + tick * interval
        if when <= horizon:
            # The queue ran late past whole ticks: skip them, never bunch.
            behind = (horizon - base) // interval  # inf if interval is tiny enough
            late = max(tick, int(min(behind, _MAX_TICK)) + 1)
            when = base + late * interval
            if when <= horizon:  # float rounding of the division
                late += 1
                when = base + late * interval
            timer.skipped += late - tick
            tick = late
            if when <= horizon:
                # interval is below the float resolution of the clock here:
                # restart the grid from now rather than spin.
                timer._base = base = horizon
                tick = 1
                when = max(base + interval, math.nextafter(base, _INF))
        timer._tick = tick
        timer.when = when
        self._insert(timer)

    # -- bookkeeping ----------------------------------------------------------

    def _insert(self, timer: Timer) -> None:
        key = _ceil(timer.when * _PER_SECOND)
        if key >= self._limit:
            far = self._coarse.get(key >> _COARSE_BITS)
            if far is not None or (far := self._new_coarse(key)) is not None:
                far.append(timer)
                timer._bucket = far
                if len(far) >= self._ccompact_at:
                    self._shrink(far)
                return
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._new_bucket(key)
        bucket[timer] = None
        timer._bucket = bucket

    def _new_bucket(self, key: int) -> dict[Timer, None]:
        buckets = self._buckets
        if len(buckets) >= self._compact_at:
            self._compact()
        bucket: dict[Timer, None] = {}
        buckets[key] = bucket
        heappush(self._keys, key)
        if key < self._armed:
            self._armed = key
            if self._arm is not None:
                self._arm(key / _PER_SECOND)
        return bucket

    def _new_coarse(self, key: int) -> list[Timer] | None:
        # The new coarse bucket for a timer with fine key *key*, or None if
        # the timer goes to a fine bucket after all: if the clock has moved on
        # since the frontier last did (nothing ran run_due() for a while),
        # the frontier moves first.
        self._advance(_ceil(self._now() * _PER_SECOND))
        if key < self._limit:
            return None
        coarse = self._coarse
        if len(coarse) >= self._cbuckets_at:
            # Drop the coarse buckets whose timers were all cancelled.
            for ck in [ck for ck, far in coarse.items() if all(t._bucket is not far for t in far)]:
                del coarse[ck]
            self._ckeys[:] = coarse
            heapify(self._ckeys)
            self._cbuckets_at = max(_COMPACT_MIN, 2 * len(coarse))
        ckey = key >> _COARSE_BITS
        bucket: list[Timer] = []
        coarse[ckey] = bucket
        heappush(self._ckeys, ckey)
        point = (ckey << _COARSE_BITS) - _HORIZON  # its cascade point
        if point < self._armed:
            self._armed = point
            if self._arm is not None:
                self._arm(point / _PER_SECOND)
        return bucket

    def _shrink(self, far: list[Timer]) -> None:
        # Drop the cancelled timers from coarse bucket *far*, in place (its
        # timers refer to it). The threshold never shrinks, so a bucket is
        # scanned again only after at least half as many adds: O(1) amortised.
        far[:] = [timer for timer in far if timer._bucket is far]
        self._ccompact_at = max(self._ccompact_at, 2 * len(far))

    def _advance(self, reached: int) -> None:
        # Time has reached fine key *reached*: cascade the coarse buckets
        # whose cascade point that is (1 ms early, for float rounding of the
        # armed time) and move the frontier past them.
        top = (reached + (_HORIZON + 1)) >> _COARSE_BITS  # last coarse key due
        limit = (top + 1) << _COARSE_BITS
        if limit <= self._limit:
            return
        self._limit = limit
        ckeys, coarse, buckets = self._ckeys, self._coarse, self._buckets
        while ckeys and ckeys[0] <= top:
            # In key order, each in the order its timers were added: the fine
            # keys it covers are in no fine bucket yet, so FIFO is kept.
            far = coarse.pop(heappop(ckeys))
            for timer in far:
                if timer._bucket is not far:
                    continue  # cancelled: never reaches the fine buckets
                key = _ceil(timer.when * _PER_SECOND)
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = self._new_bucket(key)
                bucket[timer] = None
                timer._bucket = bucket

    def _compact(self) -> None:
        # Drop the fine buckets cancel() emptied.
        self._compact_at = _compact(self._buckets, self._keys)

    def _first_key(self) -> int | None:
        # The key of the earliest bucket with a timer in it, dropping the
        # empty buckets met on the way (this is when they are "reached").
        return _first_nonempty(self._keys, self._buckets)

    def _first_coarse(self) -> int | None:
        # The same for the coarse level. Not scanned: a coarse bucket whose
        # timers were all cancelled still gets its (cheap, once) cascade wake-up.
        return _first_nonempty(self._ckeys, self._coarse)

    def _rearm(self) -> None:
        wake: float = _INF
        key = self._first_key()
        if key is not None:
            wake = key
        ckey = self._first_coarse()
        if ckey is not None:
            wake = min(wake, (ckey << _COARSE_BITS) - _HORIZON)
        self._armed = wake
        if self._arm is not None:
            self._arm(None if wake == _INF else wake / _PER_SECOND)

    def __len__(self) -> int:
        """Return the number of active timers (not fired, not cancelled).

        O(number of 1 ms buckets + timers in coarse buckets): meant for
        statistics and tests, not hot paths.
        """
        return (
            sum(map(len, self._buckets.values()))
            + sum(timer._bucket is far for far in self._coarse.values() for timer in far)
            + sum(map(len, self._detached))
        )

    def clear(self) -> None:
        """Cancel every timer (the reactor calls it when it stops).

        Idempotent. Calls ``arm(None)`` if a wake-up was armed. Safe from
        inside a callback: the rest of the batch being fired is cancelled too.
        """
        for bucket in [*self._buckets.values(), *self._detached]:
            for timer in bucket:
                timer._bucket = None
                timer._fn = _noop
                timer._args = ()
            bucket.clear()
        for far in self._coarse.values():
            for timer in far:  # the cancelled ones it still lists are reset already
                timer._bucket = None
                timer._fn = _noop
                timer._args = ()
            far.clear()
        self._buckets.clear()
        self._keys.clear()
        self._coarse.clear()
        self._ckeys.clear()
        self._compact_at = self._ccompact_at = self._cbuckets_at = _COMPACT_MIN
        if not self._running and self._armed != _INF:
            self._armed = _INF
            if self._arm is not None:
                self._arm(None)

    def __repr__(self) -> str:
        return f"<TimerQueue {len(self)} timers clock={self.clock!r}>"
