"""Loop lag, slow-callback warnings, the Prometheus text and the metrics endpoint."""

from __future__ import annotations

import logging
import math
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemonkit import ConfigError, Connection, Daemon, Lines
from daemonkit.core.reactor import Reactor
from daemonkit.ops.control import Operations
from daemonkit.ops.metrics import (
    CONTENT_TYPE,
    DEFAULT_SLOW_CALLBACK,
    LAG_BUCKETS,
    EndpointSample,
    LagHistogram,
    LagMonitor,
    LagStats,
    Sample,
    describe_stack,
    open_fds,
    render_prometheus,
    resident_memory,
)
from daemonkit.testing import DaemonRunner
from tests.helpers import operations_of, recv_all, recv_until

# -- the lag monitor's logic, on an injected clock and scheduler --------------------------


class FakeHandle:
    def __init__(self, delay: float, fn: Callable[[], None]) -> None:
        self.delay = delay
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Stands in for ``loop.call_later`` and ``loop.time``."""

    def __init__(self) -> None:
        self.now = 100.0
        self.handles: list[FakeHandle] = []

    def call_later(self, delay: float, fn: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(delay, fn)
        self.handles.append(handle)
        return handle

    def time(self) -> float:
        return self.now

    def fire_late(self, lateness: float) -> None:
        """Run the pending tick ``lateness`` seconds after it was due."""
        handle = self.handles[-1]
        self.now += handle.delay + lateness
        handle.fn()


def test_lag_monitor_records_how_late_each_tick_ran() -> None:
    loop = FakeLoop()
    monitor = LagMonitor(loop.call_later, loop.time, interval=0.5)
    assert monitor.stats() == LagStats(0.0, 0.0, 0.0, 0)
    monitor.start()
    monitor.start()  # idempotent
    assert len(loop.handles) == 1 and loop.handles[0].delay == 0.5
    for lateness in (0.001, 0.002, 0.3, 0.001):
        loop.fire_late(lateness)
    stats = monitor.stats()
    assert stats.samples == 4
    assert stats.p50 == pytest.approx(0.001)
    assert stats.p99 == pytest.approx(0.3) and stats.max == pytest.approx(0.3)
    assert monitor.histogram.count == 4
    assert monitor.histogram.total == pytest.approx(0.304)
    # One long stall is one sample: the next tick is due an interval after it ran.
    assert all(h.delay == 0.5 for h in loop.handles)


def test_lag_monitor_window_slides_and_clamps() -> None:
    loop = FakeLoop()
    monitor = LagMonitor(loop.call_later, loop.time, interval=1.0, window=3)
    monitor.start()
    loop.fire_late(5.0)
    for _ in range(3):
        loop.fire_late(0.01)
    assert monitor.stats() == LagStats(
        pytest.approx(0.01), pytest.approx(0.01), pytest.approx(0.01), 3
    )
    assert monitor.histogram.count == 4  # the histogram keeps everything
    monitor.record(-1.0)  # a clock that ran early counts as on time
    assert monitor.stats().samples == 3 and min(monitor._recent) == 0.0


def test_lag_monitor_close_cancels_and_stops() -> None:
    loop = FakeLoop()
    monitor = LagMonitor(loop.call_later, loop.time)
    monitor.start()
    assert monitor.running
    monitor.close()
    monitor.close()
    assert loop.handles[-1].cancelled and not monitor.running
    loop.handles[-1].fn()  # a tick already queued when it closed does nothing
    assert len(loop.handles) == 1 and monitor.stats().samples == 0


def test_lag_monitor_refuses_bad_settings() -> None:
    loop = FakeLoop()
    with pytest.raises(ValueError, match="interval"):
        LagMonitor(loop.call_later, loop.time, interval=0)
    with pytest.raises(ValueError, match="window"):
        LagMonitor(loop.call_later, loop.time, window=0)


def test_lag_histogram_buckets_are_cumulative() -> None:
    h = LagHistogram()
    for value in (0.0, 0.001, 0.0011, 0.3, 11.0, -2.0):
        h.record(value)
    cumulative = dict(h.cumulative())
    assert list(cumulative) == [*LAG_BUCKETS, math.inf]
    assert cumulative[0.001] == 3  # 0, 0.001 (on the edge: le means <=), -2 as 0
    assert cumulative[0.0025] == 4
    assert cumulative[0.5] == 5
    assert cumulative[10.0] == 5 and cumulative[math.inf] == 6 == h.count
    assert h.total == pytest.approx(11.3021)


# -- naming a blocked callback ---------------------------------------------------------


# How the watchdog names the blocking method: with its class from 3.11 (co_qualname).
SLEEPY = "Sleepy.on_read" if sys.version_info >= (3, 11) else "on_read"


def _outer(fn: Callable[[], str]) -> str:
    return _inner(fn)


def _inner(fn: Callable[[], str]) -> str:
    return fn()


def test_describe_stack_names_innermost_frames_first() -> None:
    text = _outer(lambda: describe_stack(sys._getframe(), limit=3))
    names = text.split(" <- ")
    assert len(names) == 3
    # Python 3.10 has no co_qualname: the bare function name is given there.
    lambda_name = (
        "test_describe_stack_names_innermost_frames_first\\.<locals>\\.<lambda>"
        if sys.version_info >= (3, 11)
        else "<lambda>"
    )
    assert re.fullmatch(rf"{__name__}\.{lambda_name}:\d+", names[0])
    assert names[1:] == [
        f"{__name__}._inner:{_inner.__code__.co_firstlineno + 1}",
        f"{__name__}._outer:{_outer.__code__.co_firstlineno + 1}",
    ]
    assert describe_stack(None) == "an unknown place"


@pytest.mark.parametrize("backend", ["uvloop", "asyncio"])
def test_describe_stack_stops_at_the_loop(backend: str) -> None:
    reactor = Reactor(backend)
    seen: list[str] = []
    try:
        reactor.call_soon(lambda: seen.append(describe_stack(sys._getframe(), limit=50)))
        reactor.call_soon(reactor.stop)
        reactor.run()
    finally:
        reactor.close()
    (text,) = seen
    assert "<lambda>" in text
    assert "asyncio" not in text and "Reactor.run" not in text and "pytest" not in text


# -- the Prometheus text --------------------------------------------------------------


def a_sample(**changes: Any) -> Sample:
    fields: dict[str, Any] = {
        "name": 'We"ird\\name\n',
        "pid": 42,
        "backend": "uvloop",
        "state": "running",
        "uptime": 12.5,
        "start_time": 1_700_000_000.25,
        "endpoints": (
            EndpointSample("tcp", "tcp://127.0.0.1:7000", 2, 0),
            EndpointSample("admin", None, 0, 3),
        ),
        "connections": 2,
        "accepted": 10,
        "closed": 8,
        "rejected": 1,
        "errors": 0,
        "bytes_in": 1000,
        "bytes_out": 2000,
        "write_buffer": 64,
        "timers": 3,
        "tasks": 1,
        "open_fds": 17,
        "rss": 30_000_000,
        "lag": LagStats(0.001, 0.002, 0.003, 5),
        "lag_buckets": tuple((b, 5) for b in (*LAG_BUCKETS, math.inf)),
        "lag_sum": 0.0075,
        "lag_count": 5,
        "slow_callbacks": 2,
    }
    fields.update(changes)
    return Sample(**fields)


# The text format 0.0.4, line by line: comments, or name{labels} value.
_SAMPLE_LINE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? '
    r"(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$"
)
_COMMENT = re.compile(r"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$")


def parse_exposition(text: str) -> dict[str, float]:
    """Check the format strictly and return {'name{labels}': value}."""
    assert text.endswith("\n") and not text.endswith("\n\n")
    values: dict[str, float] = {}
    typed: dict[str, str] = {}
    for line in text.splitlines():
        comment = _COMMENT.match(line)
        if comment:
            kind, name, rest = comment.groups()
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram"), line
                assert name not in typed, f"{name} typed twice"
                typed[name] = rest
            continue
        assert _SAMPLE_LINE.match(line), f"not a sample line: {line!r}"
        key, _, value = line.rpartition(" ")
        family = re.sub(r"(_bucket|_sum|_count)$", "", key.partition("{")[0])
        base = key.partition("{")[0]
        assert base in typed or family in typed, f"{key} comes before its TYPE"
        assert key not in values, f"{key} twice"
        values[key] = float(value)
    return values


def test_render_prometheus_is_valid_and_complete() -> None:
    values = parse_exposition(render_prometheus(a_sample()))
    assert (
        values['daemonkit_info{name="We\\"ird\\\\name\\n",backend="uvloop",version="0.1.0"}'] == 1
    )
    assert values["daemonkit_connections"] == 2
    assert values['daemonkit_endpoint_connections{endpoint="tcp"}'] == 2
    assert values['daemonkit_endpoint_connections{endpoint="admin"}'] == 0
    assert values["daemonkit_connections_accepted_total"] == 10
    assert values["daemonkit_connections_rejected_total"] == 1
    assert values["daemonkit_connections_closed_total"] == 8
    assert values["daemonkit_callback_errors_total"] == 0
    assert values["daemonkit_received_bytes_total"] == 1000
    assert values["daemonkit_sent_bytes_total"] == 2000
    assert values["daemonkit_write_buffer_bytes"] == 64
    assert values['daemonkit_accept_fd_exhausted_total{endpoint="admin"}'] == 3
    assert values["daemonkit_timers"] == 3 and values["daemonkit_tasks"] == 1
    assert values['daemonkit_loop_lag_seconds_bucket{le="0.001"}'] == 5
    assert values['daemonkit_loop_lag_seconds_bucket{le="+Inf"}'] == 5
    assert values["daemonkit_loop_lag_seconds_count"] == 5
    assert values["daemonkit_loop_lag_seconds_sum"] == 0.0075
    assert values["daemonkit_slow_callbacks_total"] == 2
    assert values["daemonkit_uptime_seconds"] == 12.5
    assert values["process_resident_memory_bytes"] == 30_000_000
    assert values["process_open_fds"] == 17
    assert values["process_start_time_seconds"] == 1_700_000_000.25


def test_render_prometheus_leaves_out_what_it_cannot_measure() -> None:
    text = render_prometheus(a_sample(rss=None, open_fds=None))
    parse_exposition(text)
    assert "process_resident_memory_bytes" not in text and "process_open_fds" not in text


def test_process_figures() -> None:
    rss, fds = resident_memory(), open_fds()
    assert rss is not None and rss > 1_000_000
    assert fds is not None and fds >= 3
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


# -- a real daemon ----------------------------------------------------------------------


class Sleepy(Daemon):
    """Blocks the loop for 0.3 s on ``sleep``: the slow callback the watchdog must name."""

    listen = "tcp://127.0.0.1:0"
    framing = Lines

    def on_read(self, conn: Connection, data: Any) -> None:
        if data == b"sleep":
            time.sleep(0.3)  # the bug under test: blocking the loop
        conn.send(data)


@pytest.fixture
def warnings_of() -> Iterator[Callable[[Daemon], list[logging.LogRecord]]]:
    """Collect a daemon logger's warnings; the list fills from the watchdog's thread."""
    attached: list[tuple[logging.Logger, logging.Handler]] = []

    def attach(daemon: Daemon) -> list[logging.LogRecord]:
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = records.append  # type: ignore[method-assign]
        daemon.log.addHandler(handler)
        attached.append((daemon.log, handler))
        return records

    yield attach
    for logger, handler in attached:
        logger.removeHandler(handler)


def test_a_blocking_callback_is_named(
    tmp_path: Path,
    backend: str,
    warnings_of: Callable[[Daemon], list[logging.LogRecord]],
) -> None:
    """End to end with a real 0.3 s block: what is measured is real time, so it cannot be faked."""
    d = Sleepy(control=str(tmp_path / "ctl.sock"))
    records = warnings_of(d)
    with DaemonRunner(d, backend=backend) as runner, runner.connect() as sock:
        ops = operations_of(d)
        assert isinstance(ops, Operations)
        runner.wait_for(lambda: ops.watchdog._thread is not None)
        sock.sendall(b"sleep\n")
        assert recv_until(sock, b"\n") == b"sleep\n"
        # The warning is written by the watchdog's thread once the loop answers
        # again; wait for it (bounded), not for any timer of ours.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(SLEEPY in r.getMessage() for r in list(records)):
                break
            time.sleep(0.005)
        metrics = runner.call(lambda: ops.execute({"cmd": "metrics"}))["metrics"]
    # On a loaded machine another stall may be reported too; ours must be among them.
    ours = [r.getMessage() for r in records if SLEEPY in r.getMessage()]
    assert len(ours) == 1, [r.getMessage() for r in records]
    (message,) = ours
    assert message.startswith("event loop blocked for at least 0.")
    assert f"slow_callback_duration={DEFAULT_SLOW_CALLBACK:g}s" in message
    assert f"in {__name__}.{SLEEPY}:" in message
    caller = "Connection.data_received" if sys.version_info >= (3, 11) else "data_received"
    assert f"<- daemonkit.core.connection.{caller}:" in message
    assert re.search(r"\ndaemonkit_slow_callbacks_total [1-9]\d*\n", metrics)


def test_the_watchdog_thread_ends_with_the_daemon(tmp_path: Path, backend: str) -> None:
    d = Sleepy(control=str(tmp_path / "ctl.sock"))
    with DaemonRunner(d, backend=backend) as runner:
        ops = operations_of(d)
        assert isinstance(ops, Operations)
        runner.wait_for(lambda: ops.watchdog._thread is not None and ops.lag.running)
        thread = ops.watchdog._thread
    assert thread is not None and not thread.is_alive()
    assert not ops.lag.running
    assert not any(t.name == "daemonkit-watchdog" and t is thread for t in threading.enumerate())


def test_lag_is_measured_on_the_loop(tmp_path: Path, backend: str) -> None:
    """The monitor is armed on the loop itself: its ticks are not the daemon's timers."""
    d = Sleepy(control=str(tmp_path / "ctl.sock"))
    with DaemonRunner(d, backend=backend) as runner:
        ops = operations_of(d)
        assert isinstance(ops, Operations)
        runner.wait_for(lambda: ops.lag.running)
        assert runner.call(lambda: d.reactor.stats().timers) == 0
        runner.call(ops.lag.tick)  # as if the loop timer fired now
        status = runner.call(lambda: ops.execute({"cmd": "status"}))["status"]
    assert status["loop_lag"]["samples"] >= 1
    assert status["timers"] == 0


# -- the metrics endpoint ---------------------------------------------------------------


def http(address: Any, request: bytes) -> bytes:
    with socket.create_connection((address.host, address.port), timeout=10) as sock:
        sock.sendall(request)
        return recv_all(sock)


def metrics_daemon(run_daemon: Any, **settings: Any) -> tuple[Sleepy, Any]:
    d = Sleepy(metrics="tcp://127.0.0.1:0", **settings)
    run_daemon(d)
    ops = operations_of(d)
    assert isinstance(ops, Operations) and ops.metrics is not None and ops.control is None
    return d, ops.metrics.address


def test_get_metrics(run_daemon: Any) -> None:
    d, address = metrics_daemon(run_daemon)
    response = http(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"content-type: {CONTENT_TYPE}".encode() in head
    values = parse_exposition(body.decode())
    # The scrape itself is not one of the daemon's connections.
    assert values["daemonkit_connections"] == 0
    assert values["daemonkit_connections_accepted_total"] == 0
    assert d.stats["accepted"] == 0


def test_metrics_keep_alive_head_and_errors(run_daemon: Any) -> None:
    _, address = metrics_daemon(run_daemon)
    pipelined = (
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\ncontent-length: 2\r\n\r\nhi"
    )
    response = http(address, pipelined)
    statuses = re.findall(rb"HTTP/1.1 (\d+) ", response)
    assert statuses == [b"200", b"200", b"404", b"405"]
    assert response.count(b"# HELP daemonkit_info") == 1  # HEAD: headers only
    assert b"not found; try /metrics" in response and b"allow: GET, HEAD" in response


def test_metrics_bad_request_gets_400_and_a_close(run_daemon: Any) -> None:
    _, address = metrics_daemon(run_daemon)
    response = http(address, b"NOT HTTP AT ALL\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    response = http(address, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 414 ")
    response = http(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 OK")


def test_metrics_endpoint_must_be_tcp_or_unix(backend: str) -> None:
    d = Sleepy(metrics="udp://127.0.0.1:0")
    with pytest.raises(ConfigError, match="use tcp://HOST:PORT"):
        DaemonRunner(d, backend=backend).start()


def test_metrics_counts_follow_the_daemon(run_daemon: Any) -> None:
    d, address = metrics_daemon(run_daemon)
    user = d.addresses[0]
    with socket.create_connection((user.host, user.port), timeout=10) as c:
        c.sendall(b"12345\n")
        assert recv_until(c, b"\n") == b"12345\n"
        response = http(address, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    values = parse_exposition(response.partition(b"\r\n\r\n")[2].decode())
    assert values["daemonkit_connections"] == 1
    assert values['daemonkit_endpoint_connections{endpoint="tcp"}'] == 1
    assert values["daemonkit_received_bytes_total"] == 6
    assert values["daemonkit_sent_bytes_total"] == 6
