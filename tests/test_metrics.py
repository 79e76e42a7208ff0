"""Loop lag, slow-callback warnings, the Prometheus text and the metrics endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import daemonkit
from daemonkit import ConfigError, Connection, Daemon, Lines, cli
from daemonkit.core.reactor import Reactor
from daemonkit.ops.control import Operations, check_operations
from daemonkit.ops.metrics import (
    CONTENT_TYPE,
    DEFAULT_SLOW_CALLBACK,
    LAG_BUCKETS,
    EndpointSample,
    LagHistogram,
    LagMonitor,
    LagStats,
    Sample,
    SampleCollector,
    describe_stack,
    open_fds,
    render,
    resident_memory,
)
from daemonkit.ops.workerset import SetOperations
from daemonkit.testing import DaemonRunner, FakeClock
from tests.helpers import ALL_BACKENDS, ROOT, load_example, operations_of, recv_all, recv_until

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


@pytest.mark.parametrize("backend", ALL_BACKENDS)
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


def text_of(s: Sample, accept: str = "") -> tuple[str, str]:
    """``s`` rendered alone through a registry of its own: (body, content type)."""
    registry = CollectorRegistry()
    registry.register(SampleCollector(lambda: s))
    body, content_type = render(registry, accept)
    return body.decode(), content_type


def test_daemonkit_figures_are_valid_and_complete() -> None:
    text, content_type = text_of(a_sample())
    assert content_type == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    values = parse_exposition(text)
    assert (
        values['daemonkit_info{backend="uvloop",name="We\\"ird\\\\name\\n",version="0.1.0"}'] == 1
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
    # The process_* figures are the process collector's, not the sample's.
    assert not any(key.startswith("process_") for key in values)


def test_daemonkit_figures_in_openmetrics() -> None:
    text, content_type = text_of(a_sample(), "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    found = {f.name: f for f in text_string_to_metric_families(text)}  # a strict parser
    assert found["daemonkit_connections_accepted"].type == "counter"
    assert found["daemonkit_connections_accepted"].samples[0].value == 10
    assert found["daemonkit_loop_lag_seconds"].type == "histogram"
    assert found["daemonkit_info"].samples[0].labels["name"] == 'We"ird\\name\n'


def test_process_figures() -> None:
    rss, fds = resident_memory(), open_fds()
    assert rss is not None and rss > 1_000_000
    assert fds is not None and fds >= 3


# Every family the hand-written text exported before prometheus-client (captured
# from render_prometheus(a_sample()) of daemonkit 0.1.0): sample name, family
# type, label names. Dashboards and alerts rely on each; none may change.
BASELINE = """
daemonkit_info gauge backend,name,version
daemonkit_connections gauge -
daemonkit_endpoint_connections gauge endpoint
daemonkit_connections_accepted_total counter -
daemonkit_connections_rejected_total counter -
daemonkit_connections_closed_total counter -
daemonkit_callback_errors_total counter -
daemonkit_received_bytes_total counter -
daemonkit_sent_bytes_total counter -
daemonkit_write_buffer_bytes gauge -
daemonkit_accept_fd_exhausted_total counter endpoint
daemonkit_timers gauge -
daemonkit_tasks gauge -
daemonkit_loop_lag_seconds_bucket histogram le
daemonkit_loop_lag_seconds_sum histogram -
daemonkit_loop_lag_seconds_count histogram -
daemonkit_slow_callbacks_total counter -
daemonkit_uptime_seconds gauge -
process_resident_memory_bytes gauge -
process_open_fds gauge -
process_start_time_seconds gauge -
"""

# The standard process and interpreter figures of prometheus-client's collectors.
PROCESS_FAMILIES = (
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "python_info",
    "python_gc_objects_collected_total",
)


def shapes(text: str) -> set[str]:
    """``"sample_name family_type label,names"`` for every sample line of classic text."""
    typed: dict[str, str] = {}
    found = set()
    for line in text.splitlines():
        comment = _COMMENT.match(line)
        if comment:
            if comment.group(1) == "TYPE":
                typed[comment.group(2)] = comment.group(3)
            continue
        name, _, labels = line.rpartition(" ")[0].partition("{")
        family = name if name in typed else re.sub(r"_(bucket|sum|count)$", "", name)
        label_names = ",".join(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', labels)))
        found.add(f"{name} {typed[family]} {label_names or '-'}")
    return found


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
    if daemonkit.CORE == "pure":  # compiled, the connection's frames are C, not Python
        caller = "Connection.data_received" if sys.version_info >= (3, 11) else "data_received"
        assert f"<- daemonkit.core.connection.{caller}:" in message
    assert re.search(r"\ndaemonkit_slow_callbacks_total [1-9]\d*\.0\n", metrics)


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
        b"GET /healthz?full=1 HTTP/1.1\r\nHost: x\r\n\r\n"  # the query is ignored
        b"GET /healthz/ HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /healthz HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n"
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\ncontent-length: 2\r\n\r\nhi"
    )
    response = http(address, pipelined)
    statuses = re.findall(rb"HTTP/1.1 (\d+) ", response)
    assert statuses == [b"200", b"200", b"404", b"200", b"404", b"405", b"405"]
    assert response.count(b"# HELP daemonkit_info") == 1  # HEAD: headers only
    assert b"not found; try /metrics or /healthz" in response and b"allow: GET, HEAD" in response
    assert b"\r\n\r\nok\n" in response


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


class Held(Sleepy):
    """``hold`` starts a task the graceful stop waits for, until :meth:`release`."""

    def on_start(self) -> None:
        self.held = asyncio.Event()

    def on_read(self, conn: Connection, data: Any) -> None:
        if data == b"hold":
            self.spawn(self.held.wait())
        conn.send(data)

    def release(self) -> None:
        self.held.set()


def exchange(sock: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """One request on a kept-alive connection: (head, body) of its response."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    assert found is not None, head
    length = 0 if request.startswith(b"HEAD ") else int(found[1])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        body += chunk
    assert len(body) == length, body
    return head, body


def test_healthz_is_ok_then_503_while_draining_and_stopping(run_daemon: Any) -> None:
    d = Held(metrics="tcp://127.0.0.1:0")
    runner = run_daemon(d, clock=FakeClock())
    address = operations_of(d).metrics.address  # type: ignore[union-attr]
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with (
        runner.connect() as client,
        socket.create_connection((address.host, address.port), timeout=10) as check,
    ):
        head, body = exchange(check, get)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"ok\n"
        assert b"content-type: text/plain" in head
        head, body = exchange(check, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 3" in head

        client.sendall(b"hold\n")
        assert recv_until(client, b"\n") == b"hold\n"
        runner.call(lambda: d.stop(drain=30))  # an upgrade's old process stops so
        head, body = exchange(check, get)  # the same kept-alive connection: still served
        assert head.startswith(b"HTTP/1.1 503 ") and body == b"draining\n"
        runner.call(d.stop)  # ends the drain; the held task keeps the stop going
        assert runner.call(lambda: d.is_stopping() and not d.is_draining())
        head, body = exchange(check, get)
        assert head.startswith(b"HTTP/1.1 503 ") and body == b"stopping\n"
        # A new connection too (what HAProxy's check opens each time), and /metrics still works.
        response = http(address, b"GET /healthz HTTP/1.0\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 503 ") and response.endswith(b"\r\n\r\nstopping\n")
        assert http(address, b"GET /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200 OK")
        runner.call(d.release)
        assert recv_all(check) == b""  # the stop ends: the metrics endpoint closes with it
    assert d.is_stopped()


def test_the_health_of_a_worker_set_follows_its_supervisor() -> None:
    supervisor = types.SimpleNamespace(reactor=None, stopping=False)
    ops = SetOperations(Sleepy(), supervisor)  # type: ignore[arg-type]
    assert ops.unhealthy() is None  # whatever its workers do: the set's queues take clients
    supervisor.stopping = True
    assert ops.unhealthy() == "stopping"


# -- the daemon's registry: daemonkit's figures, the process's and the application's ----

LOCAL = "tcp://127.0.0.1:0"
ECHO = str(ROOT / "examples" / "echo_daemon.py")


tally = load_example("metrics_daemon")


def scrape(address: Any, accept: str | None = None) -> tuple[bytes, bytes]:
    """GET /metrics (with ``accept`` as the Accept header): (head, body) of a 200."""
    extra = f"Accept: {accept}\r\n" if accept is not None else ""
    request = f"GET /metrics HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
    head, _, body = http(address, request.encode()).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    return head, body


def ask(runner: DaemonRunner, *words: bytes) -> list[bytes]:
    """Send ``words`` one per line to the daemon and return its reply lines."""
    with runner.connect() as sock:
        sock.sendall(b"".join(w + b"\n" for w in words))
        replies = b""
        while replies.count(b"\n") < len(words):
            replies += recv_until(sock, b"\n")
    return replies.splitlines()


def test_scrape_keeps_every_family_of_before(run_daemon: Any) -> None:
    _, address = metrics_daemon(run_daemon)
    text = scrape(address)[1].decode()
    parse_exposition(text)
    baseline = set(BASELINE.strip().splitlines())
    found = shapes(text)
    assert baseline <= found, sorted(baseline - found)
    for line in baseline:  # no sample gained a label or changed its type
        name = line.split()[0]
        assert {s for s in found if s.split()[0] == name} == {line}


def test_scrape_has_the_process_and_python_figures(run_daemon: Any) -> None:
    _, address = metrics_daemon(run_daemon)
    values = parse_exposition(scrape(address)[1].decode())
    names = {key.partition("{")[0] for key in values}
    missing = [family for family in PROCESS_FAMILIES if family not in names]
    assert not missing
    assert values["process_max_fds"] > 0 and values["process_open_fds"] >= 3
    assert 0 < values["process_start_time_seconds"] <= time.time()
    assert values["process_resident_memory_bytes"] > 1_000_000


def test_openmetrics_when_the_scraper_asks_for_it(run_daemon: Any) -> None:
    _, address = metrics_daemon(run_daemon)
    # What Prometheus sends: OpenMetrics first, the classic text as a fallback.
    head, body = scrape(
        address, "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    )
    assert b"content-type: application/openmetrics-text; version=1.0.0" in head
    text = body.decode()
    assert text.endswith("# EOF\n")
    found = {f.name: f.type for f in text_string_to_metric_families(text)}  # strict
    assert found["daemonkit_connections_accepted"] == "counter"
    assert found["daemonkit_connections"] == "gauge"
    assert found["process_cpu_seconds"] == "counter"
    for accept in (None, "text/plain", "*/*"):
        head, body = scrape(address, accept)
        assert f"content-type: {CONTENT_TYPE}".encode() in head
        assert not body.endswith(b"# EOF\n")
        parse_exposition(body.decode())


def test_the_example_daemon_serves_its_own_metrics(run_daemon: Any, tmp_path: Path) -> None:
    d = tally.Tally(listen=LOCAL, metrics=LOCAL, control=str(tmp_path / "ctl.sock"))
    runner = run_daemon(d)
    assert ask(runner, b"apple", b"pear", b"apple") == [b"apple 1", b"pear 1", b"apple 2"]
    ops = operations_of(d)
    assert ops.metrics is not None and ops.metrics.address is not None
    values = parse_exposition(scrape(ops.metrics.address)[1].decode())
    assert values["tally_words_total"] == 3
    assert values['tally_replies_total{kind="new"}'] == 2
    assert values['tally_replies_total{kind="seen"}'] == 1
    assert values["tally_distinct_words"] == 2
    assert values['tally_word_length_bytes_bucket{le="4.0"}'] == 1  # pear
    assert values['tally_word_length_bytes_bucket{le="8.0"}'] == 3
    assert values["daemonkit_connections_accepted_total"] == 1
    # The control socket's metrics command serves the same registry.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(tmp_path / "ctl.sock"))
        sock.sendall(b'{"cmd": "metrics"}\n')
        reply = json.loads(recv_until(sock, b"\n"))
    assert reply["ok"] is True
    assert "\ntally_words_total 3.0\n" in reply["metrics"]
    assert "\nprocess_cpu_seconds_total " in reply["metrics"]


def test_the_registry_counts_without_the_endpoint(run_daemon: Any) -> None:
    d = tally.Tally(listen=LOCAL)
    runner = run_daemon(d)
    assert ask(runner, b"apple", b"apple") == [b"apple 1", b"apple 2"]
    registry = d.metrics_registry
    assert registry is d.metrics_registry  # made once
    assert registry.get_sample_value("tally_words_total") == 2
    assert registry.get_sample_value("tally_replies_total", {"kind": "seen"}) == 1
    # Nothing was attached: no Operations, no daemonkit or process collector.
    assert not [c for c in d._cleanups if isinstance(c, Operations)]
    names = {m.name for m in registry.collect()}
    assert names == {
        "tally_words",
        "tally_replies",
        "tally_distinct_words",
        "tally_word_length_bytes",
    }


def test_two_daemons_in_one_process_keep_their_metrics_apart(run_daemon: Any) -> None:
    a = tally.Tally(name="left", listen=LOCAL, metrics=LOCAL)
    b = tally.Tally(name="right", listen=LOCAL, metrics=LOCAL)
    runner_a = run_daemon(a)
    run_daemon(b)
    assert a.metrics_registry is not b.metrics_registry
    assert ask(runner_a, b"only", b"left") == [b"only 1", b"left 1"]
    texts = {}
    for d in (a, b):
        ops = operations_of(d)
        assert ops.metrics is not None
        texts[d.name] = parse_exposition(scrape(ops.metrics.address)[1].decode())
    left, right = texts["left"], texts["right"]
    assert left["tally_words_total"] == 2 and right["tally_words_total"] == 0
    assert left["daemonkit_connections_accepted_total"] == 1
    assert right["daemonkit_connections_accepted_total"] == 0
    backend = a.reactor.backend
    assert [k for k in left if k.startswith("daemonkit_info")] == [
        f'daemonkit_info{{backend="{backend}",name="left",version="0.1.0"}}'
    ]
    assert [k for k in right if 'name="left"' in k] == []
    # Each registry has one process collector and one of each interpreter collector.
    assert sum(1 for k in right if k.startswith("process_cpu_seconds_total")) == 1
    # The process-global registry of prometheus-client is never used.
    assert REGISTRY.get_sample_value("tally_words_total") is None
    assert not any(m.name.startswith(("daemonkit", "tally")) for m in REGISTRY.collect())


class Clashing(Sleepy):
    """Registers a metric under a name daemonkit exports."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        Counter("daemonkit_connections_accepted", "Mine.", registry=self.metrics_registry)


def test_an_application_metric_may_not_take_a_daemonkit_name(backend: str) -> None:
    d = Clashing(metrics=LOCAL)
    with pytest.raises(ConfigError) as caught:
        DaemonRunner(d, backend=backend).start()
    message = str(caught.value)
    assert "daemonkit_connections_accepted_total" in message and "rename" in message
    assert "\n" not in message
    assert not d.listeners
    # What was registered before the clash is gone again: only the application's remains.
    assert {m.name for m in d.metrics_registry.collect()} == {"daemonkit_connections_accepted"}


@pytest.fixture
def no_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """prometheus-client as if it were not installed."""
    for name in [m for m in sys.modules if m.partition(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)


EXTRA = "pip install 'daemonkit[metrics]'"


def test_metrics_without_prometheus_client_name_the_extra(
    no_client: None, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=re.escape(EXTRA)):
        check_operations(None, LOCAL)
    d = Sleepy(metrics=LOCAL)
    with pytest.raises(ConfigError, match=re.escape(EXTRA)):
        DaemonRunner(d, backend=backend).start()
    with pytest.raises(ConfigError, match=re.escape(EXTRA)):
        Sleepy().metrics_registry  # noqa: B018
    code = cli.main([ECHO, "--listen", LOCAL, "--metrics", LOCAL, "--check"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG
    assert EXTRA in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_control_socket_works_without_prometheus_client(
    no_client: None, run_daemon: Any, tmp_path: Path
) -> None:
    path = str(tmp_path / "ctl.sock")
    run_daemon(Sleepy(control=path))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b'{"cmd": "status"}\n{"cmd": "metrics"}\n')
        replies = b""
        for _ in range(2):  # each call reads at least one more line
            if replies.count(b"\n") < 2:
                replies += recv_until(sock, b"\n")
        status, metrics = map(json.loads, replies.splitlines())
    assert status["ok"] is True and status["status"]["connections"] == 0
    assert metrics["ok"] is False and EXTRA in metrics["error"]
