"""Cron schedules: expressions, time zones, DST, missed runs, wall-clock steps.

Every test drives time with a FakeClock started at an epoch timestamp, which
the schedule reads as its wall clock too; a test that steps the wall clock
passes its own ``wall`` function. Nothing sleeps.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Any

import pytest

from daemonkit import Daemon, FakeClock
from daemonkit.core.cron import CRON_RECHECK_INTERVAL, CronJob, schedule_cron
from daemonkit.core.timers import TimerQueue
from daemonkit.errors import ConfigError
from daemonkit.framework.handler import Handler

pytest.importorskip("cronsim")

UTC = timezone.utc


def ts(*args: int) -> float:
    """Epoch seconds of a UTC date and time."""
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class Calls:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.at: list[datetime] = []
        self.args: list[tuple[object, ...]] = []

    def __call__(self, *args: object) -> None:
        self.at.append(utc(self.clock.now()))
        self.args.append(args)


def make(start: float) -> tuple[FakeClock, TimerQueue, Calls]:
    clock = FakeClock(start)
    return clock, TimerQueue(clock), Calls(clock)


def test_every_five_minutes_in_utc_with_args() -> None:
    clock, queue, calls = make(ts(2026, 1, 1, 0, 1))
    job = schedule_cron(queue, "*/5 * * * *", calls, "a", 2)
    assert job.next_run == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    clock.advance(4 * 60 - 1)
    assert calls.at == []
    clock.advance(1)
    assert calls.at == [datetime(2026, 1, 1, 0, 5, tzinfo=UTC)]
    clock.advance(10 * 60)
    assert calls.at[1:] == [
        datetime(2026, 1, 1, 0, 10, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 15, tzinfo=UTC),
    ]
    assert calls.args == [("a", 2)] * 3
    assert (job.runs, job.skipped, job.active) == (3, 0, True)
    assert job.next_run == datetime(2026, 1, 1, 0, 20, tzinfo=UTC)


def test_named_time_zone() -> None:
    clock, queue, calls = make(ts(2026, 1, 1))
    schedule_cron(queue, "0 9 * * *", calls, tz="Europe/Berlin")
    clock.advance(24 * 3600)
    assert calls.at == [datetime(2026, 1, 1, 8, 0, tzinfo=UTC)]  # 09:00 CET


def test_spring_forward_runs_a_job_in_the_missing_hour_at_its_end() -> None:
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT, so 02:30 never
    # exists that day; as Debian's cron does, the job runs once, at 03:00.
    clock, queue, calls = make(ts(2026, 3, 7, 12))
    schedule_cron(queue, "30 2 * * *", calls, tz="America/New_York")
    clock.advance(3 * 24 * 3600)
    assert calls.at == [
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # 03:00 EDT
        datetime(2026, 3, 9, 6, 30, tzinfo=UTC),  # 02:30 EDT
        datetime(2026, 3, 10, 6, 30, tzinfo=UTC),
    ]


def test_fall_back_runs_a_daily_job_once_and_an_hourly_job_twice() -> None:
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST, so 01:30 happens twice.
    clock, queue, daily = make(ts(2026, 10, 31, 12))
    hourly = Calls(clock)
    schedule_cron(queue, "30 1 * * *", daily, tz="America/New_York")
    schedule_cron(queue, "30 1 1 11 *", hourly, tz="America/New_York")
    schedule_cron(queue, "30 * 1 11 *", hourly, tz="America/New_York")
    clock.advance(2 * 24 * 3600)
    assert daily.at == [
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # 01:30 EDT, not again at 01:30 EST
        datetime(2026, 11, 2, 6, 30, tzinfo=UTC),
    ]
    # A job that runs every hour is scheduled normally: both 01:30s.
    both = (utc(ts(2026, 11, 1, 5, 30)), utc(ts(2026, 11, 1, 6, 30)))
    at_0130 = [t for t in hourly.at if t in both]
    assert at_0130 == [
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
    ]


class SteppedWall:
    """A wall clock that follows the FakeClock plus an offset a test can step."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.offset = 0.0

    def __call__(self) -> float:
        return self.clock.now() + self.offset


def test_missed_runs_are_skipped_and_counted_after_a_forward_step() -> None:
    clock, queue, _ = make(ts(2026, 1, 1, 0, 0, 30))
    wall = SteppedWall(clock)
    seen: list[datetime] = []
    job = schedule_cron(queue, "* * * * *", lambda: seen.append(utc(wall())), wall=wall)
    wall.offset = 600.0  # NTP steps the clock 10 minutes forward (or a suspend)
    clock.advance(30)
    assert seen == [datetime(2026, 1, 1, 0, 11, tzinfo=UTC)]  # one run, late
    assert job.skipped == 10  # 00:02 ... 00:11
    assert job.next_run == datetime(2026, 1, 1, 0, 12, tzinfo=UTC)
    clock.advance(60)
    assert len(seen) == 2
    assert (job.runs, job.skipped) == (2, 10)


def test_a_forward_step_is_noticed_within_the_recheck_interval() -> None:
    clock, queue, calls = make(ts(2026, 1, 1, 0, 0))
    wall = SteppedWall(clock)
    job = schedule_cron(queue, "0 * * * *", calls, wall=wall)
    wall.offset = 3000.0  # 00:50
    clock.advance(CRON_RECHECK_INTERVAL * 10 - 1)  # wall 00:59:59
    assert calls.at == []
    clock.advance(CRON_RECHECK_INTERVAL)
    assert len(calls.at) == 1
    assert (job.runs, job.skipped) == (1, 0)


def test_a_backward_step_never_fires_early_nor_twice() -> None:
    clock, queue, _ = make(ts(2026, 1, 1, 0, 59, 30))
    wall = SteppedWall(clock)
    seen: list[datetime] = []
    job = schedule_cron(queue, "0 * * * *", lambda: seen.append(utc(wall())), wall=wall)
    wall.offset = -600.0  # 00:59:30 becomes 00:49:30
    clock.advance(30)
    assert seen == []  # the monotonic delay elapsed, the wall clock is not at 01:00
    clock.advance(600)
    assert seen == [datetime(2026, 1, 1, 1, 0, tzinfo=UTC)]
    wall.offset -= 1800.0  # back to 00:30 after the 01:00 run
    clock.advance(3600)  # wall 01:30: the 01:00 run is not repeated
    assert seen == [datetime(2026, 1, 1, 1, 0, tzinfo=UTC)]
    clock.advance(1800)
    assert seen[1:] == [datetime(2026, 1, 1, 2, 0, tzinfo=UTC)]
    assert (job.runs, job.skipped) == (2, 0)


def test_an_exception_is_logged_with_its_traceback_and_the_schedule_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, queue, _ = make(ts(2026, 1, 1))
    runs: list[int] = []

    def boom() -> None:
        runs.append(1)
        raise RuntimeError("bad job")

    log = logging.getLogger("daemonkit.test_cron")
    job = schedule_cron(queue, "* * * * *", boom, log=log)
    with caplog.at_level(logging.ERROR, logger="daemonkit.test_cron"):
        clock.advance(120)
    assert len(runs) == 2 and job.active and job.runs == 2
    records = [r for r in caplog.records if r.name == "daemonkit.test_cron"]
    assert len(records) == 2
    assert "'* * * * *'" in records[0].getMessage()
    assert records[0].exc_info is not None and records[0].exc_info[0] is RuntimeError


def test_cancel_stops_it_even_from_its_own_callback() -> None:
    clock, queue, calls = make(ts(2026, 1, 1))
    job = schedule_cron(queue, "* * * * *", calls)
    clock.advance(60)
    job.cancel()
    job.cancel()  # idempotent
    clock.advance(600)
    assert len(calls.at) == 1 and not job.active and job.next_run is None
    assert len(queue) == 0

    jobs: list[CronJob] = []
    own = schedule_cron(queue, "* * * * *", lambda: jobs[0].cancel())
    jobs.append(own)
    clock.advance(600)
    assert own.runs == 1 and not own.active and len(queue) == 0
    assert "inactive" in repr(own) and "'* * * * *'" in repr(own)


def test_seconds_field() -> None:
    clock, queue, calls = make(ts(2026, 1, 1))
    schedule_cron(queue, "*/15 * * * * *", calls)
    clock.advance(60)
    assert [t.second for t in calls.at] == [15, 30, 45, 0]


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("61 * * * *", "bad minute"),
        ("* * *", "wrong number of fields"),
        ("0 0 30 2 *", "bad day-of-month"),
        ("* * */20 * 1L", "it never matches"),
    ],
)
def test_a_bad_expression_is_a_config_error_naming_it(expr: str, why: str) -> None:
    _, queue, calls = make(ts(2026, 1, 1))
    with pytest.raises(ConfigError) as info:
        schedule_cron(queue, expr, calls)
    assert repr(expr) in str(info.value) and why in str(info.value)
    assert len(queue) == 0


def test_bad_arguments_are_config_errors() -> None:
    _, queue, calls = make(ts(2026, 1, 1))
    with pytest.raises(ConfigError, match="cron expression must be a string"):
        schedule_cron(queue, 5, calls)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        schedule_cron(queue, "* * * * *", calls, tz="Mars/Olympus")
    with pytest.raises(TypeError, match="callable"):
        schedule_cron(queue, "* * * * *", "not callable")  # type: ignore[arg-type]


def test_a_tzinfo_object_is_taken_as_is() -> None:
    clock, queue, calls = make(ts(2026, 1, 1))
    schedule_cron(queue, "0 1 * * *", calls, tz=UTC)
    clock.advance(3600)
    assert calls.at == [datetime(2026, 1, 1, 1, 0, tzinfo=UTC)]


def test_the_end_of_the_calendar_ends_the_job(caplog: pytest.LogCaptureFixture) -> None:
    clock, queue, calls = make(ts(9999, 12, 31, 23, 58, 30))
    log = logging.getLogger("daemonkit.test_cron")
    job = schedule_cron(queue, "* * * * *", calls, log=log)
    with caplog.at_level(logging.ERROR, logger="daemonkit.test_cron"):
        clock.advance(120)
    assert len(calls.at) == 1 and not job.active
    assert any("no run after" in r.getMessage() for r in caplog.records)
    _, late_queue, _ = make(ts(9999, 12, 31, 23, 59, 30))
    with pytest.raises(ConfigError, match="no run after"):
        schedule_cron(late_queue, "* * * * *", calls)


def test_without_cronsim_one_line_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _, queue, calls = make(ts(2026, 1, 1))
    monkeypatch.setitem(sys.modules, "cronsim", None)
    with pytest.raises(ConfigError, match=r"pip install 'daemonkit\[cron\]'") as info:
        schedule_cron(queue, "* * * * *", calls)
    assert "\n" not in str(info.value)


class Sub(Handler):
    pass


class Cronned(Daemon):
    listen = "tcp://127.0.0.1:0"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.ran: list[datetime] = []
        self.jobs: list[CronJob] = []

    def on_start(self) -> None:
        self.jobs.append(self.cron("*/5 * * * *", self.tick, tz="UTC"))
        helper = Sub()
        helper.daemon = self
        self.jobs.append(helper.cron("0 * * * *", self.tick))

    def tick(self) -> None:
        self.ran.append(utc(self.reactor.time()))


def test_daemon_cron_runs_on_its_timer_queue_and_dies_at_stop(run_daemon: Any) -> None:
    clock = FakeClock(ts(2026, 1, 1, 0, 1))
    d = Cronned()
    runner = run_daemon(d, clock=clock)
    runner.advance(58 * 60)
    assert runner.call(lambda: list(d.ran)) == [
        datetime(2026, 1, 1, 0, m, tzinfo=UTC) for m in range(5, 60, 5)
    ]
    runner.advance(60)
    assert runner.call(lambda: len(d.ran)) == 13  # 01:00 twice: both jobs
    assert all(job.active for job in d.jobs)
    runner.stop()
    assert not any(job.active for job in d.jobs)


def test_handler_cron_needs_a_daemon() -> None:
    with pytest.raises(ConfigError, match="serves no daemon"):
        Sub().cron("* * * * *", print)


def test_past_max_counted_skips_the_count_jumps_to_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("daemonkit.core.cron.MAX_COUNTED_SKIPS", 5)
    clock, queue, _ = make(ts(2026, 1, 1, 0, 0, 30))
    wall = SteppedWall(clock)
    job = schedule_cron(queue, "* * * * *", lambda: None, wall=wall)
    wall.offset = 3600.0
    clock.advance(30)
    assert job.runs == 1 and job.skipped == 5  # a lower bound past the limit
    assert job.next_run == datetime(2026, 1, 1, 1, 2, tzinfo=UTC)
