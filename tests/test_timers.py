"""TimerQueue, Timer and the clocks: never early, in order, drift-free, no sleeping.

Every test drives time by hand, with a FakeClock or explicit ``run_due(now)``.
"""

from __future__ import annotations

import math
import sys
import time
import weakref
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemonkit.core import timers
from daemonkit.core.timers import Clock, FakeClock, MonotonicClock, Timer, TimerQueue

EPS = 1e-9  # the float noise the queue tolerates when deciding a deadline has passed


def nothing(*args: object) -> None:
    """A callback that does nothing."""


class ManualClock(Clock):
    """A clock set by hand that fires nothing by itself (like a real clock)."""

    def __init__(self, now: float = 0.0) -> None:
        self.time = now

    def now(self) -> float:
        return self.time


class Recorder:
    """Callbacks that log (label, clock time) when called."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[object, float]] = []

    def __call__(self, label: object) -> None:
        self.calls.append((label, self.clock.now()))

    @property
    def labels(self) -> list[object]:
        return [label for label, _ in self.calls]


def make(start: float = 0.0, **kwargs: object) -> tuple[FakeClock, TimerQueue, Recorder]:
    clock = FakeClock(start)
    queue = TimerQueue(clock, **kwargs)  # type: ignore[arg-type]
    return clock, queue, Recorder(clock)


# -- one-shot timers ---------------------------------------------------------


def test_call_later_fires_once_at_its_deadline() -> None:
    clock, queue, rec = make()
    timer = queue.call_later(2.5, rec, "a")
    assert timer.when == 2.5 and timer.interval is None and timer.skipped == 0
    assert (timer.active, len(queue)) == (True, 1)
    assert clock.advance(2.0) == 0 and rec.calls == []
    assert clock.advance(0.5) == 1
    assert rec.calls == [("a", 2.5)]
    assert (timer.active, len(queue)) == (False, 0)
    assert clock.advance(10.0) == 0
    assert rec.calls == [("a", 2.5)]


def test_call_later_passes_args() -> None:
    clock, queue, _ = make()
    got: list[tuple[object, ...]] = []
    queue.call_later(1, lambda *args: got.append(args), 1, "two", None)
    queue.call_later(1, lambda: got.append(()))
    clock.advance(1)
    assert got == [(1, "two", None), ()]


def test_call_at_is_absolute() -> None:
    clock, queue, rec = make(start=100.0)
    queue.call_at(103.0, rec, "at")
    queue.call_at(50.0, rec, "past")  # already due: fires at the next run
    assert clock.advance(0) == 1 and rec.calls == [("past", 100.0)]
    clock.advance(2.999)
    assert rec.labels == ["past"]
    clock.advance(0.001)
    assert rec.calls == [("past", 100.0), ("at", 103.0)]


def test_negative_delay_counts_as_zero() -> None:
    _clock, queue, rec = make(start=5.0)
    timer = queue.call_later(-3.0, rec, "now")
    assert timer.when == 5.0
    assert queue.run_due() == 1 and rec.calls == [("now", 5.0)]


def test_run_due_defaults_to_the_clock() -> None:
    clock = ManualClock()
    queue = TimerQueue(clock)
    rec = Recorder(clock)
    queue.call_later(1.0, rec, "x")
    assert queue.run_due() == 0
    clock.time = 1.0
    assert queue.run_due() == 1 and rec.calls == [("x", 1.0)]


@pytest.mark.parametrize("start", [0.0, 0.1, 1.0, 12345.678, 1e6 + 0.1, 3e7])
@pytest.mark.parametrize(
    "delay",
    [0.3, 0.1 * 3, 1.1, 2.675, 0.001, 0.001 * 3, 0.0035, 1e-9, 0.7, 4.35, 1 / 3, 12.345, 3600.7],
)
def test_advance_by_the_delay_fires_exactly(start: float, delay: float) -> None:
    # 0.3 * 1000 and friends are not whole numbers in binary floating point:
    # the mapping of deadlines to 1 ms buckets must not lose a timer.
    clock, queue, rec = make(start)
    queue.call_later(delay, rec, "t")
    clock.advance(delay)
    assert rec.labels == ["t"]


@pytest.mark.parametrize("start", [0.0, 1e6 + 0.1])
@pytest.mark.parametrize("delay", [0.3, 0.1 * 3, 1.1, 0.001, 0.0035, 1 / 3])
def test_never_fires_before_its_deadline(start: float, delay: float) -> None:
    _clock, queue, rec = make(start)
    timer = queue.call_later(delay, rec, "t")
    assert queue.run_due(timer.when - 1e-6) == 0
    assert queue.run_due(math.nextafter(timer.when - 2 * EPS, 0.0)) == 0
    assert queue.run_due(timer.when) == 1


# -- order ---------------------------------------------------------------------


def test_deadline_order_then_fifo() -> None:
    clock, queue, rec = make()
    for label, delay in [
        ("c1", 3.0),
        ("a1", 1.0),
        ("b1", 2.0),
        ("a2", 1.0),
        ("c2", 3.0),
        ("a3", 1.0),
        ("b2", 2.0),
    ]:
        queue.call_later(delay, rec, label)
    assert clock.advance(5.0) == 7
    assert rec.labels == ["a1", "a2", "a3", "b1", "b2", "c1", "c2"]


def test_order_inside_one_millisecond_bucket() -> None:
    # Deadlines less than 1 ms apart share a bucket; still fired by deadline.
    _clock, queue, rec = make()
    for label, when in [("d", 1.0009), ("a", 1.0001), ("c", 1.0005), ("b", 1.0003), ("b2", 1.0003)]:
        queue.call_at(when, rec, label)
    assert queue.run_due(2.0) == 5
    assert rec.labels == ["a", "b", "b2", "c", "d"]


def test_one_run_due_fires_many_buckets_in_order() -> None:
    _clock, queue, rec = make()
    whens = [0.5, 0.0015, 0.2, 0.0012, 3.0, 0.0012]
    for i, when in enumerate(whens):
        queue.call_at(when, rec, i)
    assert queue.run_due(10.0) == len(whens)
    assert rec.labels == sorted(range(len(whens)), key=lambda i: (whens[i], i))


def test_partially_due_bucket_keeps_the_rest() -> None:
    _clock, queue, rec = make()
    queue.call_at(1.0002, rec, "early")
    queue.call_at(1.0008, rec, "late")
    assert queue.run_due(1.0005) == 1 and rec.labels == ["early"]
    assert queue.next_deadline() == 1.0008 and len(queue) == 1
    assert queue.run_due(1.0008) == 1 and rec.labels == ["early", "late"]


# -- cancel --------------------------------------------------------------------


def test_cancel_before_firing() -> None:
    clock, queue, rec = make()
    keep = queue.call_later(1.0, rec, "keep")
    drop = queue.call_later(1.0, rec, "drop")
    drop.cancel()
    assert not drop.active and keep.active and len(queue) == 1
    drop.cancel()  # idempotent
    assert len(queue) == 1
    assert clock.advance(2.0) == 1 and rec.labels == ["keep"]


def test_cancel_after_firing_is_a_no_op() -> None:
    clock, queue, rec = make()
    timer = queue.call_later(1.0, rec, "x")
    clock.advance(1.0)
    timer.cancel()
    timer.cancel()
    assert rec.labels == ["x"] and len(queue) == 0 and not timer.active


class Payload:
    def method(self, arg: object) -> None:
        pass


@pytest.mark.parametrize("how", ["cancel", "fire"])
def test_callback_and_args_are_released(how: str) -> None:
    # The timer object may linger (held by the caller, or lazily in its
    # bucket), but not what it would have called.
    clock, queue, _ = make()
    callee, arg = Payload(), Payload()
    refs = [weakref.ref(callee), weakref.ref(arg)]
    timer = queue.call_later(1.0, callee.method, arg)
    del callee, arg
    if how == "cancel":
        timer.cancel()
    else:
        clock.advance(1.0)
    assert [ref() for ref in refs] == [None, None]
    assert not timer.active


def test_cancel_everything_leaves_nothing_pending() -> None:
    clock, queue, rec = make()
    made = [queue.call_later(i / 100, rec, i) for i in range(500)]
    for timer in made:
        timer.cancel()
    assert len(queue) == 0 and queue.next_deadline() is None
    assert clock.advance(10.0) == 0 and rec.calls == []


def test_buckets_emptied_by_cancel_do_not_pile_up() -> None:
    # Cancel leaves its bucket in place, empty; the queue drops empty
    # buckets before they outnumber the live ones (plus a fixed allowance).
    clock, queue, _ = make()
    live = [queue.call_later(100.0 + i / 100, nothing) for i in range(1000)]
    assert queue.run_due(99.0) == 0  # the 1 ms buckets now reach past 100 s
    for round_ in range(20):
        for i in range(5000):  # each in a bucket of its own
            queue.call_later(50.0 + round_ + i / 5000, nothing).cancel()
    assert len(queue._buckets) <= 2 * max(timers._COMPACT_MIN, len(live))
    assert len(queue) == len(live)
    assert queue.next_deadline() == live[0].when
    assert clock.advance(200.0) == len(live)
    assert len(queue._buckets) == 0


def test_coarse_buckets_emptied_by_cancel_do_not_pile_up() -> None:
    clock, queue, _ = make()
    live = [queue.call_later(100.0 + i, nothing) for i in range(100)]
    width = 2**timers._COARSE_BITS / 1000
    for round_ in range(10):
        for i in range(3000):  # each in a coarse bucket of its own
            queue.call_later(1000.0 + (round_ * 3000 + i) * width, nothing).cancel()
    assert len(queue._coarse) <= 2 * timers._COMPACT_MIN
    assert len(queue) == len(live) and queue.next_deadline() == live[0].when
    assert clock.advance(300.0) == len(live)
    assert len(queue._coarse) == len(queue._buckets) == 0


def test_callback_cancels_itself() -> None:
    clock, queue, rec = make()
    holder: list[Timer] = []

    def once() -> None:
        rec("self")
        assert not holder[0].active  # a one-shot is inactive while it runs
        holder[0].cancel()

    holder.append(queue.call_later(1.0, once))
    assert clock.advance(5.0) == 1 and rec.labels == ["self"]


def test_periodic_callback_cancels_itself() -> None:
    clock, queue, rec = make()
    holder: list[Timer] = []

    def tick() -> None:
        rec("tick")
        if len(rec.calls) == 3:
            holder[0].cancel()

    holder.append(queue.call_every(1.0, tick))
    assert clock.advance(10.0) == 3
    assert rec.calls == [("tick", 1.0), ("tick", 2.0), ("tick", 3.0)]
    assert not holder[0].active and len(queue) == 0


@pytest.mark.parametrize("victim_delay", [1.0, 1.0004, 2.0])
def test_callback_cancels_another_due_timer(victim_delay: float) -> None:
    # The victim is due in the same run_due: same deadline, same bucket, or
    # a later bucket.
    _clock, queue, rec = make()
    victim: list[Timer] = []
    queue.call_later(1.0, lambda: victim[0].cancel())
    victim.append(queue.call_later(victim_delay, rec, "victim"))
    queue.call_later(victim_delay, rec, "bystander")
    assert queue.run_due(3.0) == 2
    assert rec.labels == ["bystander"] and len(queue) == 0


def test_callback_cancels_a_timer_of_a_later_run() -> None:
    clock, queue, rec = make()
    later = queue.call_later(5.0, rec, "later")
    queue.call_later(1.0, later.cancel)
    assert clock.advance(10.0) == 1 and rec.calls == []


# -- timers added while firing ------------------------------------------------


def test_timer_added_during_run_due_fires_in_the_next_run() -> None:
    clock, queue, rec = make()
    arms: list[float | None] = []
    queue = TimerQueue(clock, arm=arms.append)

    def first() -> None:
        rec("first")
        queue.call_later(0.0, rec, "added-due")  # due now
        queue.call_at(clock.now() - 1.0, rec, "added-past")  # overdue

    queue.call_later(1.0, first)
    queue.call_later(1.0, rec, "second")
    assert queue.run_due(1.0) == 2
    assert rec.labels == ["first", "second"]  # not in this batch
    assert arms[-1] is not None and arms[-1] <= 1.0  # the backend is asked to wake at once
    assert queue.run_due(1.0) == 2
    assert rec.labels == ["first", "second", "added-past", "added-due"]


def test_timer_added_during_advance_fires_in_the_same_advance() -> None:
    clock, queue, rec = make()

    def chain(n: int) -> None:
        rec(n)
        if n < 3:
            queue.call_later(0.5, chain, n + 1)

    queue.call_later(1.0, chain, 0)
    assert clock.advance(10.0) == 4
    assert rec.calls == [(0, 1.0), (1, 1.5), (2, 2.0), (3, 2.5)]
    assert clock.now() == 10.0


def test_zero_delay_timer_added_while_firing_fires_at_the_same_time() -> None:
    clock, queue, rec = make()
    queue.call_later(1.0, lambda: queue.call_later(0, rec, "soon"))
    assert clock.advance(1.0) == 2
    assert rec.calls == [("soon", 1.0)]


def test_run_due_is_not_reentrant() -> None:
    clock, queue, _ = make()
    errors: list[BaseException] = []
    queue = TimerQueue(clock, on_error=lambda timer, exc: errors.append(exc))
    queue.call_later(1.0, queue.run_due)
    clock.advance(1.0)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "inside one of its timer callbacks" in str(errors[0])


# -- periodic timers -----------------------------------------------------------


def test_call_every_ticks_drift_free() -> None:
    clock, queue, rec = make()
    timer = queue.call_every(0.1, rec, "tick")
    assert timer.interval == 0.1 and timer.when == 0.1
    assert clock.advance(1.0) == 10
    assert [t for _, t in rec.calls] == [k * 0.1 for k in range(1, 11)]
    assert timer.skipped == 0 and timer.active
    assert timer.when == 11 * 0.1


def test_call_every_small_steps_do_not_lose_ticks() -> None:
    # 0.1 added ten times is 0.9999999999999999; the tick due at 1.0 must fire.
    clock, queue, rec = make()
    queue.call_every(0.1, rec, "tick")
    for _ in range(10):
        clock.advance(0.1)
    assert len(rec.calls) == 10
    for _ in range(70):
        clock.advance(0.03)
    assert len(rec.calls) == 31  # 3.1 s in all


def test_call_every_on_a_grid_from_start() -> None:
    clock, queue, rec = make(start=7.25)
    queue.call_every(0.7, rec, "t")
    clock.advance(100.0)
    times = [t for _, t in rec.calls]
    assert len(times) == int(100.0 / 0.7)
    assert times == [7.25 + k * 0.7 for k in range(1, len(times) + 1)]


def test_call_every_first_delay() -> None:
    clock, queue, rec = make()
    timer = queue.call_every(1.0, rec, "t", first=0.25)
    assert timer.when == 0.25
    clock.advance(3.0)
    assert [t for _, t in rec.calls] == [0.25, 1.25, 2.25]
    queue.call_every(1.0, rec, "now", first=-5.0)  # counts as 0: due at once
    assert queue.run_due() == 1 and rec.calls[-1] == ("now", 3.0)


def test_late_loop_skips_ticks_instead_of_bunching() -> None:
    _clock, queue, rec = make()
    timer = queue.call_every(1.0, rec, "tick")
    assert queue.run_due(1.0) == 1
    # The loop was busy: the next run comes at 4.5, past the ticks of 2, 3 and 4.
    assert queue.run_due(4.5) == 1  # one call, not three back to back
    assert timer.skipped == 2  # ticks 3 and 4 (tick 2 is the one that ran, late)
    assert timer.when == 5.0  # still on the grid
    assert queue.run_due(4.9) == 0
    assert queue.run_due(5.0) == 1 and timer.skipped == 2
    assert queue.run_due(6.0) == 1 and queue.run_due(7.0) == 1
    assert timer.skipped == 2 and timer.when == 8.0
    assert queue.run_due(107.0) == 1 and timer.skipped == 101 and timer.when == 108.0


def test_late_exactly_on_a_tick_skips_it() -> None:
    _clock, queue, rec = make()
    timer = queue.call_every(0.5, rec, "tick")
    assert queue.run_due(2.0) == 1  # ticks 0.5 .. 2.0 due: one call
    assert timer.skipped == 3 and timer.when == 2.5


def test_tiny_interval_cannot_loop_forever() -> None:
    _clock, queue, rec = make()
    timer = queue.call_every(1e-12, rec, "t")
    assert queue.run_due(1.0) == 1
    assert timer.when > 1.0 + EPS
    assert timer.skipped > 10**11
    timer2 = queue.call_every(1e-300, rec, "u")  # below the float resolution at 1.0
    timer3 = queue.call_every(5e-324, rec, "v")  # the smallest float: 1e6 / it overflows
    assert queue.run_due(1e6) == 3
    assert timer2.when > 1e6 and timer3.when > 1e6 and queue.run_due(1e6) == 0
    assert queue.run_due(2e6) == 3 and len(queue) == 3


def test_periodic_timer_survives_its_callback_raising() -> None:
    clock, queue, _ = make()
    errors: list[BaseException] = []
    queue = TimerQueue(clock, on_error=lambda timer, exc: errors.append(exc))
    timer = queue.call_every(1.0, lambda: 1 / 0)
    clock.advance(3.0)
    assert len(errors) == 3 and timer.active


# -- never early, exactly once: property -------------------------------------

deadline = st.floats(min_value=0.0, max_value=5.0, allow_nan=False)
offset = st.sampled_from([0.0, 1e-4, 0.3, 1000.0, 1e6 + 0.1])


@settings(max_examples=150, deadline=None)
@given(
    start=offset,
    whens=st.lists(deadline, min_size=1, max_size=40),
    steps=st.lists(st.floats(min_value=0.0, max_value=1.5, allow_nan=False), max_size=12),
    cancels=st.sets(st.integers(min_value=0, max_value=39)),
)
def test_never_early_exactly_once_cancelled_never(
    start: float, whens: list[float], steps: list[float], cancels: set[int]
) -> None:
    clock, queue, _ = make(start)
    fired: list[tuple[int, float, float]] = []  # (index, deadline, now at firing)
    made: list[Timer] = []
    for i, when in enumerate(whens):
        made.append(
            queue.call_at(start + when, lambda i=i: fired.append((i, made[i].when, clock.now())))
        )
    cancelled = {i for i in cancels if i < len(made)}
    for i in cancelled:
        made[i].cancel()
    for step in steps:
        clock.advance(step)
    clock.advance(0.0)
    for _, when, now in fired:
        assert when <= now + EPS
    indexes = [i for i, _, _ in fired]
    assert len(indexes) == len(set(indexes))
    assert not set(indexes) & cancelled
    # every timer due by now fired (those due within float noise of now may have)
    must = {i for i, t in enumerate(made) if t.when <= clock.now() and i not in cancelled}
    assert must <= set(indexes)
    # deadline order, and creation order among equal deadlines
    assert indexes == sorted(indexes, key=lambda i: (made[i].when, i))
    assert len(queue) == len(made) - len(indexes) - len(cancelled)


@settings(max_examples=100, deadline=None)
@given(
    whens=st.lists(deadline, min_size=1, max_size=30),
    nows=st.lists(st.floats(min_value=0.0, max_value=6.0, allow_nan=False), max_size=10),
)
def test_run_due_with_any_late_now_is_never_early(whens: list[float], nows: list[float]) -> None:
    _clock, queue, _ = make()
    fired: list[tuple[float, float]] = []
    current = [0.0]
    for when in whens:
        timer = queue.call_at(when, lambda: None)
        timer._fn = lambda t=timer: fired.append((t.when, current[0]))
    for now in sorted(nows):
        current[0] = now
        queue.run_due(now)
    assert all(when <= now + EPS for when, now in fired)
    last = max(nows, default=-1.0)
    assert sum(1 for when in whens if when <= last) <= len(fired)
    assert len(fired) == sum(1 for when in whens if when <= last + EPS)


# -- arm -------------------------------------------------------------------------


def test_coarse_bucket_drops_cancelled_timers_lazily() -> None:
    # cancel() only marks a timer in a coarse bucket; the bucket drops the
    # marked ones, in place and in order, once it grows past a threshold.
    clock, queue, rec = make()
    keep = [queue.call_later(100.0, rec, i) for i in range(10)]
    bucket = queue._coarse[100000 >> timers._COARSE_BITS]
    for _ in range(5 * timers._COMPACT_MIN):
        queue.call_later(100.0, rec, "x").cancel()
    assert len(bucket) < timers._COMPACT_MIN + 10 and bucket[:10] == keep
    assert all(timer._bucket is bucket for timer in bucket[:10])
    big = [queue.call_later(100.5, rec, "big") for _ in range(3 * timers._COMPACT_MIN)]
    assert queue._ccompact_at > timers._COMPACT_MIN  # many live timers: the threshold grew
    for timer in big:
        timer.cancel()
    assert len(queue) == 10 and queue.next_deadline() == 100.0
    assert clock.advance(101.0) == 10 and rec.labels == list(range(10))
    assert len(queue) == 0 and not queue._coarse and not queue._buckets


def test_arm_only_when_an_earlier_bucket_appears() -> None:
    # Deadlines within the horizon (< 2**11 ms at t=0) go to 1 ms buckets.
    clock, queue, _ = make()
    arms: list[float | None] = []
    queue = TimerQueue(clock, arm=arms.append)
    queue.call_later(1.5, nothing)
    assert arms == [1.5]
    queue.call_later(1.5, nothing)  # same bucket
    queue.call_later(1.5004, nothing)  # same bucket, later deadline
    queue.call_later(1.9, nothing)  # later bucket
    assert arms == [1.5]
    queue.call_later(0.5002, nothing)  # earlier: the wake-up is the end of its 1 ms bucket
    assert arms == [1.5, 0.501]
    queue.call_later(0.5001, nothing)  # same bucket as what is armed
    assert arms == [1.5, 0.501]
    for i in range(1000):  # many adds, later buckets
        queue.call_later(0.6 + i / 1000, nothing)
    for i in range(1000):  # many adds, far: coarse buckets cascaded later than 0.501
        queue.call_later(3.0 + i / 100, nothing)
    assert arms == [1.5, 0.501]


def test_arm_for_the_cascade_of_a_coarse_bucket() -> None:
    clock, queue, rec = make()
    arms: list[float | None] = []
    queue = TimerQueue(clock, arm=arms.append)
    queue.call_later(5.0, rec, "far")  # coarse bucket 4: fine keys 4096..5119
    assert arms == [(4 * 1024 - 1024) / 1000]  # cascaded one coarse bucket before it starts
    queue.call_later(5.1, rec, "far2")  # same coarse bucket
    queue.call_later(9.0, rec, "farther")  # a later one
    queue.call_later(1.0, rec, "near")  # 1 ms bucket, earlier than the cascade
    assert arms == [3.072, 1.0]
    assert queue.run_due(1.0) == 1 and arms[-1] == 3.072
    assert queue.run_due(3.072) == 0  # the cascade: fires nothing, arms the 1 ms bucket
    assert arms[-1] == 5.0 and not queue._coarse.get(4)
    assert rec.labels == ["near"] and len(queue) == 3 and queue.next_deadline() == 5.0
    assert queue.run_due(5.0) == 1 and arms[-1] == 5.1  # bucket 8 cascades at 7.168
    assert clock.advance(10.0) == 2
    assert rec.labels == ["near", "far", "far2", "farther"]
    assert rec.calls[2:] == [("far2", 5.1), ("farther", 9.0)]  # fired by the clock
    assert arms[-1] is None


def test_far_timer_cancelled_before_its_cascade_never_reaches_a_1ms_bucket() -> None:
    clock, queue, rec = make()
    arms: list[float | None] = []
    queue = TimerQueue(clock, arm=arms.append)
    made = [queue.call_later(30.0 + i / 1000, rec, i) for i in range(2000)]
    assert len(queue._buckets) == 0 and len(queue._coarse) == 3  # 29.696 s .. 32.768 s
    for timer in made:
        timer.cancel()
    assert len(queue) == 0 and queue.next_deadline() is None
    assert queue.run_due(29.0) == 0  # a stale cascade wake-up: nothing to cascade
    assert arms[-1] is None and len(queue._coarse) == len(queue._buckets) == 0
    assert clock.advance(60.0) == 0 and rec.calls == []


def test_fifo_between_a_cascaded_timer_and_one_added_later_to_its_1ms_bucket() -> None:
    clock, queue, rec = make()
    queue.call_at(5.0, rec, "far1")  # coarse
    queue.call_at(5.0, rec, "far2")  # coarse, same deadline
    queue.call_at(5.0003, rec, "far3")  # coarse, same 1 ms bucket
    assert len(queue._buckets) == 0
    clock.advance(4.0)
    assert queue.run_due() == 0  # the backend's wake-up, armed for the cascade at 3.072
    assert not queue._coarse and sorted(queue._buckets) == [5000, 5001]
    queue.call_at(5.0, rec, "near1")  # straight to the 1 ms bucket
    queue.call_at(4.9999, rec, "near0")
    queue.call_at(5.0003, rec, "near3")
    assert clock.advance(2.0) == 6
    assert rec.labels == ["near0", "far1", "far2", "near1", "far3", "near3"]


def test_idle_queue_puts_a_near_timer_in_a_1ms_bucket() -> None:
    # Nothing ran the queue for a long time: the frontier catches up with the
    # clock when a coarse bucket would be made, rather than making one whose
    # cascade is long past.
    clock = ManualClock()
    arms: list[float | None] = []
    queue = TimerQueue(clock, arm=arms.append)
    rec = Recorder(clock)
    old = queue.call_later(100.0, rec, "old")  # coarse bucket 97, cascade at 98.304
    assert arms == [98.304]
    clock.time = 1000.0  # the backend is late, or nobody listens
    queue.call_later(0.5, rec, "near")
    queue.call_later(50.0, rec, "far")
    assert arms == [98.304] and len(queue) == 3
    assert 1000500 in queue._buckets and old._bucket is queue._buckets[100000]
    assert queue.run_due() == 1 and rec.labels == ["old"] and arms[-1] == 1000.5
    clock.time = 1000.5
    assert queue.run_due() == 1 and rec.labels == ["old", "near"]
    assert arms[-1] == (1050000 // 1024 * 1024 - 1024) / 1000


def test_long_periodic_timer_goes_through_coarse_buckets() -> None:
    clock, queue, rec = make(start=0.25)
    timer = queue.call_every(60.0, rec, "tick")
    assert clock.advance(600.0) == 10
    assert [t for _, t in rec.calls] == [0.25 + 60.0 * k for k in range(1, 11)]
    assert timer.skipped == 0 and timer._bucket in queue._coarse.values()
    assert queue.run_due(900.0) == 1 and timer.skipped == 3 and timer.when == 900.25


def test_callback_adding_far_timers_arms_once_at_the_end() -> None:
    clock, queue, rec = make()
    arms: list[float | None] = []
    queue = TimerQueue(clock, arm=arms.append)

    def add() -> None:
        for i in range(10):
            queue.call_later(20.0 - i, rec, i)

    queue.call_later(1.0, add)
    del arms[:]
    assert clock.advance(1.0) == 1
    assert arms == [(11 * 1024 - 1024) / 1000]  # the earliest, 12.0 s, is in coarse bucket 11
    assert clock.advance(30.0) == 10 and rec.labels == list(range(9, -1, -1))


def test_len_clear_and_next_deadline_see_coarse_buckets() -> None:
    clock, queue, rec = make()
    made = [queue.call_later(d, rec, d) for d in (100.0, 1.0, 50.0)]
    queue.call_every(30.0, rec, "p")
    assert len(queue) == 4 and queue.next_deadline() == 1.0
    made[1].cancel()
    assert queue.next_deadline() == 30.0 and len(queue) == 3
    queue.clear()
    assert len(queue) == 0 and queue.next_deadline() is None
    assert not any(t.active for t in made)
    assert clock.advance(200.0) == 0 and rec.calls == []


def test_arm_after_run_due_and_clear() -> None:
    clock, queue, _ = make()
    arms: list[float | None] = []
    queue = TimerQueue(clock, arm=arms.append)
    first = queue.call_later(1.0, nothing)
    queue.call_later(3.0, nothing)
    assert arms == [1.0]
    assert queue.run_due(0.5) == 0
    assert arms == [1.0, 1.0]  # every run_due re-arms: its wake-up was used up
    first.cancel()  # lazy: no arm
    assert arms == [1.0, 1.0]
    assert queue.run_due(1.0) == 0  # a wake-up that finds nothing to do
    assert arms[-1:] == [1.024]  # the cascade of the coarse bucket holding 3.0
    assert queue.run_due(1.024) == 0  # cascaded into its 1 ms bucket
    assert arms[-1:] == [3.0]
    assert queue.run_due(3.0) == 1
    assert arms[-1:] == [None]
    queue.call_later(1.5, nothing)  # the fake clock still says 0
    assert arms[-1:] == [1.5]
    queue.clear()
    assert arms[-1:] == [None]
    count = len(arms)
    queue.clear()  # nothing armed: no call
    assert len(arms) == count


def cascade_point(queue: TimerQueue) -> float | None:
    """When the earliest coarse bucket is due to be cascaded, if there is one."""
    keys = [key for key, bucket in queue._coarse.items() if bucket]
    if not keys:
        return None
    return ((min(keys) << timers._COARSE_BITS) - timers._HORIZON) / 1000


def check_armed(queue: TimerQueue, arms: list[float | None]) -> float:
    earliest = queue.next_deadline()
    armed = arms[-1]
    assert earliest is not None and armed is not None
    # At most 1 ms after the earliest deadline; never before it, unless it
    # is the wake-up that cascades the earliest coarse bucket.
    assert armed <= earliest + 0.001 + EPS
    assert earliest - EPS <= armed or armed == cascade_point(queue)
    return armed


@settings(max_examples=100, deadline=None)
@given(whens=st.lists(deadline, min_size=1, max_size=30), start=offset)
def test_armed_wakeup_is_never_early_and_at_most_1ms_late(whens: list[float], start: float) -> None:
    clock = FakeClock(start)
    arms: list[float | None] = []
    queue = TimerQueue(clock, arm=arms.append)
    for when in whens:
        queue.call_at(start + when, nothing)
        check_armed(queue, arms)
    # Wake up when asked, as the reactor does: every wake-up fires a timer
    # or cascades a coarse bucket.
    while len(queue):
        coarse = len(queue._coarse)
        assert queue.run_due(check_armed(queue, arms)) >= 1 or len(queue._coarse) < coarse
    assert arms[-1] is None


def test_arm_is_not_called_during_run_due() -> None:
    clock, queue, _ = make()
    arms: list[float | None] = []
    queue = TimerQueue(clock, arm=arms.append)

    def add_many() -> None:
        for i in range(10):
            queue.call_later(0.5 - i / 20, nothing)

    queue.call_later(1.0, add_many)
    del arms[:]
    queue.run_due(1.0)  # the fake clock still says 0: they are due at 0.05 .. 0.5
    assert arms == [0.05]  # once, at the end: the earliest of those added


# -- errors ------------------------------------------------------------------------


def test_on_error_gets_exceptions_and_the_rest_still_run() -> None:
    clock, queue, _ = make()
    errors: list[tuple[Timer, BaseException]] = []
    queue = TimerQueue(clock, on_error=lambda timer, exc: errors.append((timer, exc)))
    rec = Recorder(clock)
    queue.call_later(1.0, rec, "before")
    bad = queue.call_later(1.0, lambda: dict[str, int]()["missing"])
    queue.call_later(1.0, rec, "after")
    queue.call_later(2.0, rec, "later")
    assert clock.advance(3.0) == 4
    assert rec.labels == ["before", "after", "later"]
    assert len(errors) == 1 and errors[0][0] is bad and isinstance(errors[0][1], KeyError)


def test_without_on_error_the_first_exception_is_reraised_after_the_batch() -> None:
    _clock, queue, rec = make()
    queue.call_later(1.0, lambda: 1 / 0)
    queue.call_later(1.0, rec, "still runs")
    queue.call_later(1.0, lambda: int("x"))
    queue.call_later(2.0, rec, "next batch")
    with pytest.raises(ZeroDivisionError) as info:
        queue.run_due(1.0)
    assert rec.labels == ["still runs"]
    if sys.version_info >= (3, 11):
        notes = "".join(getattr(info.value, "__notes__", []))
        assert "1 more timer callback(s) raised" in notes and "ValueError" in notes
    assert queue.run_due(2.0) == 1 and rec.labels == ["still runs", "next batch"]


def test_advance_propagates_and_stops_at_the_failing_deadline() -> None:
    clock, queue, rec = make()
    queue.call_later(1.0, lambda: 1 / 0)
    queue.call_later(2.0, rec, "after")
    with pytest.raises(ZeroDivisionError):
        clock.advance(5.0)
    assert clock.now() == 1.0 and rec.calls == []
    assert clock.advance(4.0) == 1 and rec.calls == [("after", 2.0)]


def test_base_exception_propagates_at_once_and_the_rest_stay_pending() -> None:
    clock, queue, rec = make()
    arms: list[float | None] = []
    queue = TimerQueue(clock, arm=arms.append)

    def interrupt() -> None:
        raise KeyboardInterrupt

    queue.call_later(1.0, rec, "a")
    queue.call_later(1.0, interrupt)
    queue.call_later(1.0, rec, "b")
    queue.call_later(1.0005, rec, "c")
    with pytest.raises(KeyboardInterrupt):
        queue.run_due(1.0005)
    assert rec.labels == ["a"] and len(queue) == 2
    assert arms[-1] is not None and arms[-1] <= 1.001
    assert queue.run_due(1.0005) == 2 and rec.labels == ["a", "b", "c"]


def test_on_error_raising_keeps_the_rest_pending() -> None:
    clock, queue, rec = make()

    def on_error(timer: Timer, exc: BaseException) -> None:
        raise RuntimeError("handler failed") from exc

    queue = TimerQueue(clock, on_error=on_error)
    queue.call_later(1.0, lambda: 1 / 0)
    queue.call_later(1.0, rec, "b")
    with pytest.raises(RuntimeError, match="handler failed"):
        queue.run_due(1.0)
    assert len(queue) == 1
    assert queue.run_due(1.0) == 1 and rec.labels == ["b"]


@pytest.mark.parametrize(
    "call",
    [
        lambda q: q.call_every(0, nothing),
        lambda q: q.call_every(-1.0, nothing),
        lambda q: q.call_every(math.nan, nothing),
        lambda q: q.call_every(math.inf, nothing),
        lambda q: q.call_every(1.0, nothing, first=math.nan),
        lambda q: q.call_every(1.0, nothing, first=math.inf),
        lambda q: q.call_at(math.nan, nothing),
        lambda q: q.call_at(math.inf, nothing),
        lambda q: q.call_later(math.nan, nothing),
        lambda q: q.call_later(math.inf, nothing),
        lambda q: q.clock.advance(-1.0),
        lambda q: q.clock.advance(math.nan),
        lambda q: q.clock.advance(math.inf),
    ],
)
def test_value_errors(call: Callable[[TimerQueue], object]) -> None:
    clock, queue, _ = make()
    with pytest.raises(ValueError):
        call(queue)
    assert len(queue) == 0 and clock.now() == 0.0


# -- len, clear, next_deadline ---------------------------------------------------------


def test_len_counts_active_timers() -> None:
    clock, queue, _ = make()
    assert len(queue) == 0
    a = queue.call_later(1.0, nothing)
    queue.call_later(2.0, nothing)
    periodic = queue.call_every(0.5, lambda: None)
    assert len(queue) == 3
    a.cancel()
    assert len(queue) == 2
    clock.advance(2.0)  # the 2.0 one fired; the periodic one is still there
    assert len(queue) == 1
    periodic.cancel()
    assert len(queue) == 0


def test_len_and_next_deadline_inside_a_callback() -> None:
    _clock, queue, _ = make()
    seen: list[tuple[int, float | None]] = []
    queue.call_later(1.0, lambda: seen.append((len(queue), queue.next_deadline())))
    queue.call_later(1.0, nothing)
    queue.call_at(1.0005, nothing)
    queue.call_later(9.0, nothing)
    queue.run_due(1.0005)
    # the two not yet run in this batch, and the one due at 9.0
    assert seen == [(3, 1.0)]


def test_clear_cancels_everything() -> None:
    clock, queue, rec = make()
    made = [queue.call_later(i, rec, i) for i in range(1, 6)]
    made.append(queue.call_every(0.5, rec, "p"))
    queue.clear()
    assert len(queue) == 0 and queue.next_deadline() is None
    assert not any(t.active for t in made)
    assert clock.advance(10.0) == 0 and rec.calls == []
    queue.call_later(1.0, rec, "again")  # the queue is still usable
    assert clock.advance(1.0) == 1


def test_clear_from_a_callback_cancels_the_rest_of_the_batch() -> None:
    _clock, queue, rec = make()
    queue.call_later(1.0, queue.clear)
    queue.call_later(1.0, rec, "same batch")
    queue.call_every(0.25, rec, "periodic")
    assert queue.run_due(1.0) == 2  # the periodic tick ran first (0.25, late)
    assert rec.labels == ["periodic"] and len(queue) == 0


def test_next_deadline() -> None:
    _clock, queue, _ = make()
    assert queue.next_deadline() is None
    a = queue.call_at(3.0004, nothing)
    queue.call_at(3.0009, nothing)
    queue.call_at(7.0, nothing)
    assert queue.next_deadline() == 3.0004
    a.cancel()
    assert queue.next_deadline() == 3.0009


# -- clocks ------------------------------------------------------------------------


def test_default_clock_is_monotonic() -> None:
    queue = TimerQueue()
    assert isinstance(queue.clock, MonotonicClock)
    before = time.monotonic()
    now = queue.clock.now()
    assert before <= now <= time.monotonic()
    timer = queue.call_later(3600.0, nothing)
    assert now + 3600.0 <= timer.when
    assert queue.run_due() == 0
    queue.clear()


def test_base_clock() -> None:
    class Fixed(Clock):
        def now(self) -> float:
            return 42.0

    queue = TimerQueue(Fixed())
    assert queue.call_later(1.0, nothing).when == 43.0
    with pytest.raises(NotImplementedError):
        Clock().now()


def test_fake_clock_fires_queues_in_deadline_order() -> None:
    clock = FakeClock(10.0)
    rec = Recorder(clock)
    q1, q2 = TimerQueue(clock), TimerQueue(clock)
    clock.attach(q1)  # attaching twice is harmless
    q1.call_later(2.0, rec, "q1@12")
    q2.call_later(1.0, rec, "q2@11")
    q1.call_later(1.0, rec, "q1@11")
    q2.call_later(3.0, rec, "q2@13")
    assert clock.advance(5.0) == 4
    assert rec.calls == [("q1@11", 11.0), ("q2@11", 11.0), ("q1@12", 12.0), ("q2@13", 13.0)]
    assert clock.now() == 15.0


def test_fake_clock_advance_zero_runs_what_is_due() -> None:
    clock, queue, rec = make(start=3.0)
    queue.call_later(0, rec, "due")
    assert clock.advance(0) == 1 and clock.now() == 3.0


def test_fake_clock_stops_a_runaway_chain_at_one_instant() -> None:
    clock, queue, _ = make()

    def again() -> None:
        queue.call_later(0, again)

    queue.call_later(1.0, again)
    with pytest.raises(RuntimeError, match="reschedules itself with no delay"):
        clock.advance(2.0)
    assert clock.now() == 1.0


def test_timers_are_made_by_the_queue_only() -> None:
    with pytest.raises(TypeError, match="TimerQueue"):
        Timer()


def test_repr() -> None:
    _clock, queue, _ = make()
    timer = queue.call_later(1.0, nothing)
    periodic = queue.call_every(2.0, nothing)
    assert "when=1.0" in repr(timer) and "active" in repr(timer)
    assert "interval=2.0" in repr(periodic)
    timer.cancel()
    assert "inactive" in repr(timer)
    assert "1 timers" in repr(queue)


def test_public_names_are_documented() -> None:
    assert sorted(timers.__all__) == ["Clock", "FakeClock", "MonotonicClock", "Timer", "TimerQueue"]
    for name in timers.__all__:
        cls = getattr(timers, name)
        assert cls.__doc__
        for attr, value in vars(cls).items():
            if not attr.startswith("_") and callable(value):
                assert value.__doc__, f"{name}.{attr} has no docstring"
