"""In-process micro-benchmarks of bench/run.py: timers, and the per-read cost of idle timeouts.

Run by bench/run.py in a child process pinned to the server core; prints one
JSON object per line (one per variant and round) and nothing else on stdout.

``timers``: N timers scheduled with delays spread over 10 s (1,000 s ahead,
so none fires), among 100,000 already pending, then all cancelled. Variants:

* ``uvloop call_later+cancel`` -- the reference of the target;
* ``asyncio call_later+cancel`` -- the stdlib loop;
* ``pyuv call_later+cancel`` -- the pyuv backend's loop, when pyuv is installed;
* ``daemonkit TimerQueue.call_later+cancel`` -- daemonkit's timer queue
  itself (what bench/timers.py measures, and the target);
* ``daemonkit Daemon.after+cancel`` -- the same through the method a
  daemon's callbacks call (two more Python calls: ``Daemon.after`` then
  ``Reactor.call_later``), on the reactor's uvloop;
* ``twisted callLater+cancel`` -- when Twisted is installed.

``idle-timeout``: N connection objects in one process, each with a 60 s idle
timeout, and R reads delivered round-robin by calling the protocol's
``data_received`` directly (no sockets, so the figure is the callback's CPU
alone). Each variant runs with the timeout on and off; the difference is the
cost of the idle timeout per read:

* ``daemonkit (uvloop)`` -- ``Daemon(idle_timeout=60)``: a read records its
  time; the timer re-checks when it comes due;
* ``uvloop Protocol, call_later reset per read`` -- the usual asyncio way: on
  every read ``handle.cancel()`` and a new ``loop.call_later``;
* ``twisted TimeoutMixin.resetTimeout`` -- Twisted's own helper, which moves
  its ``DelayedCall`` on every read.

Times are CPU time of this process (``time.process_time``) with the cyclic
garbage collector paused while a batch is timed, as ``timeit`` does; the
variants' order rotates every round. bench/timers.py is the fuller timer
study (three delay patterns, firing included).

Usage: python bench/micro.py timers|idle-timeout [--n N] [--reads R] [--rounds K]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import cpu_seconds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PENDING = 100_000
AHEAD = 1000.0
SPREAD = 10.0
IDLE = 60.0
DATA = b"x" * 63 + b"\n"


def _noop() -> None:
    pass


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def _uvloop() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


# -- timers -------------------------------------------------------------------


def _timer_variants() -> dict[str, Callable[[list[float], list[float]], float]]:
    """Return name -> run(background, delays) -> CPU seconds for the whole batch."""
    variants: dict[str, Callable[[list[float], list[float]], float]] = {}

    def loop_variant(make_loop: Callable[[], asyncio.AbstractEventLoop]) -> Callable[..., float]:
        def run(background: list[float], delays: list[float]) -> float:
            loop = make_loop()
            try:
                pending = [loop.call_later(d, _noop) for d in background]
                call_later = loop.call_later

                def batch() -> None:
                    handles = [call_later(d, _noop) for d in delays]
                    for h in handles:
                        h.cancel()

                spent = cpu_seconds(batch)
                for h in pending:
                    h.cancel()
                loop.run_until_complete(asyncio.sleep(0))
                return spent
            finally:
                loop.close()

        return run

    uvloop = _uvloop()
    if uvloop is not None:
        variants["uvloop call_later+cancel"] = loop_variant(uvloop.new_event_loop)
    variants["asyncio call_later+cancel"] = loop_variant(asyncio.new_event_loop)
    try:
        from daemonkit.core.pyuvloop import PyuvEventLoop
    except ImportError:
        pass
    else:
        variants["pyuv call_later+cancel"] = loop_variant(PyuvEventLoop)

    backend = "uvloop" if uvloop is not None else "asyncio"

    def daemonkit_variant(through_daemon: bool) -> Callable[..., float]:
        def run(background: list[float], delays: list[float]) -> float:
            from daemonkit import Daemon
            from daemonkit.core.reactor import Reactor

            reactor = Reactor(backend)
            daemon = Daemon(listen="tcp://127.0.0.1:0")
            try:
                daemon.start(reactor, install_signals=False, bind=False)
                for d in background:
                    reactor.call_later(d, _noop)
                call_later = daemon.after if through_daemon else reactor.timers.call_later

                def batch() -> None:
                    timers = [call_later(d, _noop) for d in delays]
                    for t in timers:
                        t.cancel()

                return cpu_seconds(batch)
            finally:
                daemon.release_after_run()
                reactor.close()

        return run

    variants["daemonkit TimerQueue.call_later+cancel"] = daemonkit_variant(False)
    variants["daemonkit Daemon.after+cancel"] = daemonkit_variant(True)
    try:
        from twisted.internet import reactor as treactor
    except ImportError:
        return variants

    def twisted_run(background: list[float], delays: list[float]) -> float:
        call_later = treactor.callLater  # type: ignore[attr-defined]
        pending = [call_later(d, _noop) for d in background]

        def batch() -> None:
            calls = [call_later(d, _noop) for d in delays]
            for c in calls:
                c.cancel()

        spent = cpu_seconds(batch)
        for c in pending:
            c.cancel()
        return spent

    variants["twisted callLater+cancel"] = twisted_run
    return variants


def bench_timers(n: int, rounds: int) -> None:
    variants = _timer_variants()
    names = list(variants)
    rnd = random.Random(1)
    background = [AHEAD + rnd.random() * SPREAD for _ in range(PENDING)]
    for r in range(rounds):
        delays = [AHEAD + rnd.random() * SPREAD for _ in range(n)]
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            spent = variants[name](background, delays)
            _emit(
                {
                    "variant": name,
                    "round": r,
                    "timers": n,
                    "pending": PENDING,
                    "seconds": spent,
                    "ns_per_op": spent / n * 1e9,
                }
            )


# -- idle timeouts ------------------------------------------------------------


def _daemonkit_reads(n: int, reads: int, timeout: bool) -> float:
    from daemonkit import Daemon
    from daemonkit.core.reactor import Reactor
    from daemonkit.testing import MemoryTransport

    class Quiet(Daemon):
        listen = "tcp://127.0.0.1:0"

        def on_read(self, conn: Any, data: bytes) -> None:
            pass

    daemon = Quiet(idle_timeout=IDLE if timeout else None, max_connections=n + 1)
    reactor = Reactor("uvloop" if _uvloop() is not None else "asyncio")
    try:
        daemon.start(reactor, install_signals=False, bind=False)
        conns = []
        for _ in range(n):
            conn = daemon._new_connection()
            conn.connection_made(MemoryTransport(conn))
            conns.append(conn.data_received)
        return _rounds_of_reads(conns, reads)
    finally:
        daemon.release_after_run()
        reactor.close()


def _rounds_of_reads(receivers: list[Callable[[bytes], None]], reads: int) -> float:
    n = len(receivers)
    full, rest = divmod(reads, n)

    def run() -> None:
        data = DATA
        for _ in range(full):
            for receive in receivers:
                receive(data)
        for receive in receivers[:rest]:
            receive(data)

    return cpu_seconds(run)


def _uvloop_reads(n: int, reads: int, timeout: bool) -> float:
    uvloop = _uvloop()
    loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()

    class Plain(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            pass

    class WithIdle(asyncio.Protocol):
        """The usual asyncio idle timeout: re-arm a call_later on every read."""

        handle: asyncio.TimerHandle

        def connection_made(self, transport: Any) -> None:
            self.handle = loop.call_later(IDLE, self.on_idle)

        def data_received(self, data: bytes) -> None:
            self.handle.cancel()
            self.handle = loop.call_later(IDLE, self.on_idle)

        def on_idle(self) -> None:
            pass

    try:
        protos: list[asyncio.Protocol] = []
        for _ in range(n):
            proto = WithIdle() if timeout else Plain()
            proto.connection_made(None)  # type: ignore[arg-type]
            protos.append(proto)
        spent = _rounds_of_reads([p.data_received for p in protos], reads)
        for p in protos:
            if isinstance(p, WithIdle):
                p.handle.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        return spent
    finally:
        loop.close()


def _twisted_reads(n: int, reads: int, timeout: bool) -> float:
    from twisted.internet import protocol
    from twisted.protocols.policies import TimeoutMixin

    class Plain(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            pass

    class WithIdle(protocol.Protocol, TimeoutMixin):
        def connectionMade(self) -> None:
            self.setTimeout(IDLE)

        def dataReceived(self, data: bytes) -> None:
            self.resetTimeout()

        def timeoutConnection(self) -> None:
            pass

    protos: list[protocol.Protocol] = []
    for _ in range(n):
        proto = WithIdle() if timeout else Plain()
        proto.connectionMade()
        protos.append(proto)
    spent = _rounds_of_reads([p.dataReceived for p in protos], reads)
    for p in protos:
        if isinstance(p, WithIdle):
            p.setTimeout(None)
    return spent


def bench_idle_timeout(n: int, reads: int, rounds: int) -> None:
    variants: dict[str, Callable[[int, int, bool], float]] = {
        "daemonkit (uvloop)": _daemonkit_reads,
        "uvloop Protocol, call_later reset per read": _uvloop_reads,
    }
    try:
        import twisted  # noqa: F401
    except ImportError:
        pass
    else:
        variants["twisted TimeoutMixin.resetTimeout"] = _twisted_reads
    names = list(variants)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            on = variants[name](n, reads, True)
            off = variants[name](n, reads, False)
            _emit(
                {
                    "variant": name,
                    "round": r,
                    "connections": n,
                    "reads": reads,
                    "ns_per_read_on": on / reads * 1e9,
                    "ns_per_read_off": off / reads * 1e9,
                    "extra_ns_per_read": (on - off) / reads * 1e9,
                }
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("timers", "idle-timeout"))
    parser.add_argument("--n", type=int, default=1_000_000, help="timers, or connections")
    parser.add_argument("--reads", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.n < 1 or args.reads < 1 or args.rounds < 1:
        parser.error("--n, --reads and --rounds must be >= 1")
    if args.what == "timers":
        bench_timers(args.n, args.rounds)
    else:
        bench_idle_timeout(args.n, args.reads, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
