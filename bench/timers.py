"""Timer cost: daemonkit's TimerQueue against the event loops' own timers.

Run: ``python bench/timers.py`` (about 30 s; ``--quick`` for a 3-round smoke
run; ``--cpu N`` to pin to CPU N instead of the first CPU allowed).

With PENDING timers already scheduled over SPREAD seconds of deadlines, it
measures the cost per timer of

  (a) uvloop ``loop.call_later`` + ``handle.cancel()``
  (b) the stdlib asyncio loop's ``call_later`` + ``handle.cancel()``
  (c) ``TimerQueue.call_later`` + ``Timer.cancel()``
  (d) ``TimerQueue.call_later``, then firing them all with ``run_due()``

for BATCH new timers in three patterns of delays:

* ``random``: uniform over the SPREAD, so every timer lands in a random one
  of ~10,000 buckets -- the worst case for buckets (cache misses);
* ``fixed``: all the same delay, as idle timeouts and retry delays are in a
  daemon -- consecutive timers share a bucket;
* ``mixed``: 90 % far (as ``random``) and 10 % near (uniform over the next
  NEAR seconds, so in TimerQueue's 1 ms buckets), as a daemon's request
  deadlines and short retry delays mix. (d) is not run for it: its sweep of
  run_due() calls, one per millisecond up to the last deadline, would take
  minutes.

Every measurement is repeated ROUNDS times, the variants interleaved so that
noise from other processes hits them all alike; medians, min-max and the
ratio ours/uvloop are printed. The target (DESIGN.md, Reactor) is
schedule+cancel at most half of uvloop's.

Times are CPU time of this process (``time.process_time``), so that being
descheduled on a busy machine does not count; cache and memory-bus contention
from other processes still does, hence the interleaving and the medians. The
process is pinned to one CPU, so that every variant runs on the same core
(on a shared VM two cores can differ by more than the variants do).

Fairness: the cyclic garbage collector is paused while a batch is timed, as
``timeit`` does (with 10^5 live objects its collections would otherwise land
at random in one variant or another); the asyncio loops run one iteration
between batches, untimed, so that uvloop frees the timer handles it closed
on cancel, as a running daemon's loop would. The asyncio loops and our queue
all start each batch with the same PENDING timers (plus what earlier batches
left behind: nothing for ours, whose cancel removes the timer at once).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from _common import cpu_seconds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemonkit.core.timers import FakeClock, MonotonicClock, TimerQueue

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop missing on this platform
    uvloop = None  # type: ignore[assignment]

PENDING = 100_000  # timers already waiting, as in a busy daemon
SPREAD = 10.0  # seconds over which their deadlines spread
AHEAD = 1000.0  # ...starting this far ahead, so that none comes due during the run
BATCH = 100_000  # timers scheduled (then cancelled or fired) per measurement
ROUNDS = 7  # repetitions of every measurement; the median is reported
FIXED_DELAY = AHEAD + SPREAD / 2  # the delay of every timer in the "fixed" pattern
NEAR = 1.0  # the near delays of the "mixed" pattern spread over 0..NEAR seconds
NEAR_SHARE = 0.1  # ...and are this share of it


def _noop() -> None:
    pass


def _random_delays(seed: int, n: int) -> list[float]:
    rnd = random.Random(seed)
    return [AHEAD + rnd.random() * SPREAD for _ in range(n)]


def _mixed_delays(seed: int, n: int) -> list[float]:
    rnd = random.Random(seed)
    return [
        rnd.random() * NEAR if rnd.random() < NEAR_SHARE else AHEAD + rnd.random() * SPREAD
        for _ in range(n)
    ]


def loop_schedule_cancel(loop: asyncio.AbstractEventLoop, delays: list[float]) -> float:
    """Seconds per timer for loop.call_later + handle.cancel()."""
    call_later = loop.call_later

    def run() -> None:
        handles = [call_later(delay, _noop) for delay in delays]
        for handle in handles:
            handle.cancel()

    elapsed = cpu_seconds(run)
    loop.run_until_complete(asyncio.sleep(0))  # let the loop release what was cancelled
    return elapsed / len(delays)


def queue_schedule_cancel(queue: TimerQueue, delays: list[float]) -> float:
    """Seconds per timer for TimerQueue.call_later + Timer.cancel()."""
    call_later = queue.call_later

    def run() -> None:
        timers = [call_later(delay, _noop) for delay in delays]
        for timer in timers:
            timer.cancel()

    return cpu_seconds(run) / len(delays)


def queue_schedule_fire(delays: list[float], background: list[float]) -> float:
    """Seconds per timer for TimerQueue.call_later, then run_due() firing them all.

    A FakeClock stands still while the batch is scheduled among PENDING
    others (due later), then run_due() is called every millisecond of the
    spread, as the reactor's wake-ups would, until the whole batch has fired.
    """
    clock = FakeClock()
    queue = TimerQueue(clock, arm=lambda when: None)
    for delay in background:
        queue.call_later(delay + 2 * SPREAD, _noop)  # pending, not due in this run
    call_later = queue.call_later
    run_due = queue.run_due
    first, last = min(delays), max(delays)
    steps = [ms / 1000 for ms in range(int(first * 1000), int(last * 1000) + 2)]

    def run() -> None:
        for delay in delays:
            call_later(delay, _noop)
        fired = 0
        for now in steps:
            fired += run_due(now)
        if fired != len(delays):
            raise AssertionError(f"fired {fired} of {len(delays)}")

    return cpu_seconds(run) / len(delays)


def _summary(name: str, samples: list[float]) -> str:
    ns = sorted(s * 1e9 for s in samples)
    return (
        f"  {name:<44} median {statistics.median(ns):6.0f} ns/timer"
        f"   (min {ns[0]:.0f}, max {ns[-1]:.0f})"
    )


def _pin(argv: list[str]) -> str:
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not Linux
        return "not pinned"
    allowed = os.sched_getaffinity(0)
    cpu = int(argv[argv.index("--cpu") + 1]) if "--cpu" in argv else min(allowed)
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu} of {sorted(allowed)}"


def main(argv: list[str]) -> None:
    rounds = 3 if "--quick" in argv else ROUNDS
    pinned = _pin(argv)
    background = _random_delays(1, PENDING)
    patterns = {
        "random": [_random_delays(100 + i, BATCH) for i in range(rounds)],
        "fixed": [[FIXED_DELAY] * BATCH for _ in range(rounds)],
        "mixed": [_mixed_delays(200 + i, BATCH) for i in range(rounds)],
    }

    loops: dict[str, asyncio.AbstractEventLoop] = {}
    if uvloop is not None:
        loops["(a) uvloop call_later + cancel"] = uvloop.new_event_loop()
    loops["(b) asyncio call_later + cancel"] = asyncio.new_event_loop()
    pending = [loop.call_later(d, _noop) for loop in loops.values() for d in background]
    queue = TimerQueue(MonotonicClock(), arm=lambda when: None)
    for delay in background:
        queue.call_later(delay, _noop)

    ours = "(c) TimerQueue call_later + cancel"
    fire = "(d) TimerQueue call_later + run_due (fire)"
    variants: dict[str, Callable[[list[float]], float]] = {
        name: partial(loop_schedule_cancel, loop) for name, loop in loops.items()
    }
    variants[ours] = partial(queue_schedule_cancel, queue)
    variants[fire] = partial(queue_schedule_fire, background=background)
    names = list(variants)
    results: dict[str, dict[str, list[float]]] = {
        pattern: {name: [] for name in names} for pattern in patterns
    }
    started = time.perf_counter()
    for i in range(rounds):
        # Rotate the order every round: what ran just before (and left in the
        # caches and the allocator) changes, and hits every variant alike.
        order = names[i % len(names) :] + names[: i % len(names)]
        for pattern, batches in patterns.items():
            for name in order:
                if pattern == "mixed" and name == fire:
                    continue  # see the module docstring
                results[pattern][name].append(variants[name](batches[i]))
    elapsed = time.perf_counter() - started

    for handle in pending:
        handle.cancel()
    for loop in loops.values():
        loop.close()

    print(
        f"timers: {PENDING:,} pending over {SPREAD:g} s; batches of {BATCH:,}; "
        f"{rounds} rounds in {elapsed:.1f} s; {pinned}; Python {sys.version.split()[0]}"
        + (
            f", uvloop {getattr(uvloop, '__version__', '?')}"
            if uvloop is not None
            else ", no uvloop"
        )
    )
    for pattern, by_name in results.items():
        what = {
            "random": f"uniform over {AHEAD:g}..{AHEAD + SPREAD:g} s, as the pending ones",
            "fixed": f"all {FIXED_DELAY:g} s",
            "mixed": f"{1 - NEAR_SHARE:.0%} as random, {NEAR_SHARE:.0%} uniform over 0..{NEAR:g} s",
        }[pattern]
        print(f"delays {pattern} ({what}):")
        for name, samples in by_name.items():
            if samples:
                print(_summary(name, samples))
        ours_median = statistics.median(by_name[ours])
        for name in loops:
            ratio = ours_median / statistics.median(by_name[name])
            print(f"  ratio (c) ours / {name[4:]:<36} {ratio:5.2f}x")
        if uvloop is not None:
            uv_median = statistics.median(by_name["(a) uvloop call_later + cancel"])
            verdict = "met" if ours_median <= 0.5 * uv_median else "MISSED"
            print(f"  target (c) <= 0.50x uvloop: {verdict}")


if __name__ == "__main__":
    main(sys.argv[1:])
