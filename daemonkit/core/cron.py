"""Cron schedules on the timer queue: ``schedule_cron(queue, "*/5 * * * *", fn)``.

A :class:`CronJob` is a chain of one-shot timers on a
:class:`~daemonkit.core.timers.TimerQueue`, so a
:class:`~daemonkit.core.timers.FakeClock` drives it in tests. Expressions are
parsed and evaluated by cronsim (the ``daemonkit[cron]`` extra, imported only
here, only when a schedule is made), which follows Debian's cron, DST
included.

Rules a job keeps:

* **Wall-clock time decides.** The queue's clock is monotonic; cron times are
  wall-clock times. The job reads the wall clock (``wall``, by default
  :func:`time.time`, or the :class:`FakeClock` itself) whenever it wakes, and
  sleeps at most :data:`CRON_RECHECK_INTERVAL` at a time, so a step of the
  wall clock (NTP, a suspend) is noticed within that.
* **Never early, never twice.** A run happens only once the wall clock has
  reached its time (a step backwards makes the job wait), and the next run
  is the first cron time after the one just run, so a step backwards never
  repeats a run.
* **Missed runs are skipped and counted**, as ``call_every`` skips late ticks:
  when the job wakes past several cron times, it runs once and counts the
  rest in :attr:`CronJob.skipped`.
* **An exception in the callback is logged** with its traceback; the
  schedule goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING

from daemonkit.core.timers import FakeClock, Timer, TimerQueue
from daemonkit.errors import ConfigError

if TYPE_CHECKING:
    from cronsim import CronSim

__all__ = ["CRON_EXTRA", "CRON_RECHECK_INTERVAL", "MAX_COUNTED_SKIPS", "CronJob", "schedule_cron"]

#: Longest sleep, in seconds, before a job looks at the wall clock again:
#: Vixie/Debian cron and cronie wake once a minute and read the clock, which
#: is how they notice it was stepped; one timer a minute per job costs nothing.
CRON_RECHECK_INTERVAL = 60.0

#: Missed runs counted one by one after a long sleep; past this the job
#: restarts its count from the wall clock, so `skipped` is then a lower
#: bound (a week of a per-minute job is
#: 10,080; counting costs a few microseconds each).
MAX_COUNTED_SKIPS = 100_000

#: What to install when cronsim is missing (one line, naming the extra).
CRON_EXTRA = "cron schedules need cronsim: pip install 'daemonkit[cron]'"

# A wake-up this close before a run's time counts as on time: the queue's
# 1 ms resolution, and float noise between the two clocks.
_EARLY = 1e-3

_UTC = timezone.utc


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return _UTC
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str):
        raise ConfigError(f"cron tz must be a zone name like 'Europe/Berlin', not {tz!r}")
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {tz!r}: not in the system tz database "
            "(/usr/share/zoneinfo; without one, pip install tzdata)"
        ) from None


def _parse(expression: str, start: datetime) -> Iterator[datetime]:
    try:
        from cronsim import CronSim, CronSimError
    except ImportError:
        raise ConfigError(CRON_EXTRA) from None
    try:
        it: CronSim = CronSim(expression, start)
    except CronSimError as exc:
        raise ConfigError(
            f"bad cron expression {expression!r}: {str(exc).lower() or 'invalid'}"
        ) from None
    return it


class CronJob:
    """A running cron schedule, as :func:`schedule_cron` returns it.

    Keep it to :meth:`cancel` the schedule. Read-only attributes:
    ``expression``, ``tz`` (a :class:`datetime.tzinfo`), ``runs`` (calls
    made), ``skipped`` (runs missed because the job woke past them: a wall
    clock stepped forward, a suspend, a loop running late).
    """

    def __init__(self) -> None:
        raise TypeError("cron jobs are made by schedule_cron() or Daemon.cron()")

    expression: str
    tz: tzinfo
    runs: int
    skipped: int
    _queue: TimerQueue
    _fn: Callable[..., object] | None
    _args: tuple[object, ...]
    _wall: Callable[[], float]
    _log: logging.Logger
    _due: datetime | None  # the next run, aware
    _timer: Timer | None

    @property
    def active(self) -> bool:
        """True until cancelled (or until no run is left, at the end of the calendar)."""
        return self._due is not None

    @property
    def next_run(self) -> datetime | None:
        """When the next run is due, in the job's zone; ``None`` once inactive."""
        return self._due

    def cancel(self) -> None:
        """Make sure the job never runs again. Idempotent; safe from its own callback."""
        self._due = None
        self._fn = None
        self._args = ()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        due = self._due
        assert due is not None
        delay = due.timestamp() - self._wall()
        self._timer = self._queue.call_later(min(delay, CRON_RECHECK_INTERVAL), self._wake)

    def _wake(self) -> None:
        self._timer = None
        due, fn = self._due, self._fn
        if due is None or fn is None:
            return
        now = self._wall()
        if now < due.timestamp() - _EARLY:
            self._arm()  # not yet by the wall clock (it was stepped back, or the sleep was capped)
            return
        try:
            # The next run is the first cron time after this one and after
            # now: those in between are skipped, this one is never repeated.
            self._due = self._after(due, now)
        except ConfigError as exc:
            self._log.error("cron job %r: %s; it ends", self.expression, exc)
            self._due = None
        args = self._args
        if self._due is None:
            self._fn, self._args = None, ()
        else:
            self._arm()
        self.runs += 1
        try:
            fn(*args)
        except Exception:
            self._log.exception(
                "cron job %r (%s) raised; the schedule goes on", self.expression, _name(fn)
            )

    def _after(self, start: datetime, now: float) -> datetime:
        """The first cron time after *start* that is after *now* too; counts the skipped."""
        it = _parse(self.expression, start)
        counted = 0
        try:
            nxt = next(it)
            while nxt.timestamp() <= now:
                counted += 1
                if counted >= MAX_COUNTED_SKIPS:
                    self.skipped += counted
                    counted = 0
                    it = _parse(self.expression, datetime.fromtimestamp(now, self.tz))
                nxt = next(it)
        except (StopIteration, OverflowError, ValueError):
            raise ConfigError(
                f"cron expression {self.expression!r} has no run after {start.isoformat()} "
                "(it never matches, or the calendar ends)"
            ) from None
        self.skipped += counted
        return nxt

    def __repr__(self) -> str:
        state = f"next={self._due.isoformat()}" if self._due is not None else "inactive"
        return f"<CronJob {self.expression!r} tz={self.tz} runs={self.runs} {state}>"


def _name(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def schedule_cron(
    queue: TimerQueue,
    expression: str,
    fn: Callable[..., object],
    *args: object,
    tz: str | tzinfo | None = None,
    wall: Callable[[], float] | None = None,
    log: logging.Logger | None = None,
) -> CronJob:
    """Call ``fn(*args)`` at the times the cron *expression* names, on *queue*.

    *expression* has five fields (minute hour day-of-month month
    day-of-week) or six (seconds first), with cronsim's extensions (``L``,
    ``LW``, ``MON#2``). *tz* is a zone name (``"Europe/Berlin"``, from the
    system tz database) or a :class:`~datetime.tzinfo`; default UTC.
    *wall* returns wall-clock seconds since the epoch: by default
    :func:`time.time`, or the clock itself when the queue runs on a
    :class:`~daemonkit.core.timers.FakeClock` (start it at an epoch
    timestamp). *log* gets the callback's exceptions (default: the
    ``daemonkit.cron`` logger).

    Returns the :class:`CronJob`; cancel it to stop. Raises
    :class:`~daemonkit.errors.ConfigError` naming the expression and what is
    wrong with it, for an unknown zone, or when cronsim is not installed;
    :class:`TypeError` if *fn* is not callable.
    """
    if not isinstance(expression, str):
        raise ConfigError(f"cron expression must be a string, not {expression!r}")
    if not callable(fn):
        raise TypeError(f"cron needs a callable, not {fn!r}")
    if wall is None:
        clock = queue.clock
        wall = clock.now if isinstance(clock, FakeClock) else time.time
    job = object.__new__(CronJob)
    job.expression = expression
    job.tz = _zone(tz)
    job.runs = job.skipped = 0
    job._queue = queue
    job._fn = fn
    job._args = args
    job._wall = wall
    job._log = log if log is not None else logging.getLogger("daemonkit.cron")
    job._timer = None
    now = wall()
    job._due = job._after(datetime.fromtimestamp(now, job.tz), now)
    job._arm()
    return job
