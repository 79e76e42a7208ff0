"""Daemon.offload: blocking work in a bounded pool, its result back in the loop thread.

And the graceful stop that waits for it: a request whose answer is being
computed when the stop comes still gets its answer; work that outlives
``shutdown_timeout`` is cut and logged. Both backends, real sockets.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from daemonkit import ConfigError, Connection, Daemon, Lines
from daemonkit.framework.offload import (
    DEFAULT_OFFLOAD_QUEUE_LIMIT,
    DEFAULT_OFFLOAD_TIMEOUT,
    OffloadFull,
    OffloadTimeout,
    default_offload_processes,
    default_offload_threads,
)
from daemonkit.testing import DaemonRunner, FakeClock
from tests.helpers import ROOT, daemonkit_log_to, free_port, recv_until, wait_for_port

WAIT = 10.0  # real seconds any blocking wait in these tests may take at most
JOB_SECONDS = 0.5  # the blocking job the stop must wait for
PROCESS_WAIT = 30.0  # real seconds for a worker process to start on a busy machine


def square(n: int) -> int:
    """Module level, so a process pool can pickle it."""
    return n * n


def blocking_upper(line: bytes, gate: threading.Event) -> bytes:
    """A blocking job: waits (up to WAIT) for ``gate``, then answers."""
    gate.wait(WAIT)
    return line.upper()


def slow_upper(line: bytes) -> bytes:
    """A blocking job of JOB_SECONDS (module level, so a process pool can run it)."""
    time.sleep(JOB_SECONDS)
    return line.upper()


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    found: list[logging.LogRecord] = []
    with daemonkit_log_to(found.append):
        yield found


def _messages(records: list[logging.LogRecord]) -> str:
    return "\n".join(r.getMessage() for r in records)


class Offloader(Daemon):
    """Upper-cases each line in the pool; ``mode`` says how the answer comes back."""

    listen = "tcp://127.0.0.1:0"
    framing = Lines
    mode = "callback"
    process = False
    job: Callable[..., bytes] = staticmethod(slow_upper)

    def on_read(self, conn: Connection, line: bytes) -> None:
        if self.mode == "callback":
            self.offload(self.job, line, callback=conn.send, process=self.process)
        else:
            self.spawn(self._answer(conn, line))

    async def _answer(self, conn: Connection, line: bytes) -> None:
        conn.send(await self.offload(self.job, line, process=self.process))


# -- delivery ------------------------------------------------------------------


def test_the_result_comes_to_a_callback_in_the_loop_thread(run_daemon: Any) -> None:
    threads: dict[str, int] = {}

    class Where(Daemon):
        listen = "tcp://127.0.0.1:0"
        framing = Lines

        def on_read(self, conn: Connection, line: bytes) -> None:
            def done(ident: int) -> None:
                threads["job"] = ident
                threads["callback"] = threading.get_ident()
                conn.send(b"done")

            threads["loop"] = threading.get_ident()
            self.offload(threading.get_ident, callback=done)

    runner = run_daemon(Where())
    with runner.connect() as sock:
        sock.sendall(b"go\n")
        assert recv_until(sock, b"\n") == b"done\n"
    assert threads["callback"] == threads["loop"] != threads["job"]


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_await_in_a_spawned_coroutine(run_daemon: Any, process: bool) -> None:
    daemon = Offloader(offload_processes=1)
    daemon.mode, daemon.process = "await", process
    daemon.job = slow_upper if process else bytes.upper  # type: ignore[assignment]
    runner = run_daemon(daemon)
    with runner.connect(PROCESS_WAIT) as sock:  # the first process call starts the process
        sock.sendall(b"abc\n")
        assert recv_until(sock, b"\n") == b"ABC\n"


def test_process_pool_runs_in_another_process(run_daemon: Any) -> None:
    daemon = Daemon(listen="tcp://127.0.0.1:0", offload_processes=1)
    runner = run_daemon(daemon)
    got: list[int] = []
    runner.call(lambda: daemon.offload(square, 7, callback=got.append, process=True))
    pid = runner.call(lambda: daemon.offload(os.getpid, process=True))
    runner.wait_for(lambda: got and pid.done(), PROCESS_WAIT)
    assert got == [49]
    assert runner.call(pid.result) != os.getpid()


def test_the_loop_stays_free_while_100_blocking_calls_run(run_daemon: Any) -> None:
    # Each call blocks until a timer *in the loop* opens the gate: had the
    # calls blocked the loop, the timer could never fire and none would end.
    gate = threading.Event()
    ticks = [0]
    results: list[bool] = []
    daemon = Daemon(listen="tcp://127.0.0.1:0", offload_threads=8)

    def tick() -> None:
        ticks[0] += 1
        if ticks[0] == 5:
            assert daemon.offload_in_flight() > 0  # the calls are still blocked
            gate.set()

    def go() -> None:
        for _ in range(100):
            daemon.offload(gate.wait, WAIT, callback=results.append)
        daemon.every(0.01, tick)

    runner = run_daemon(daemon)
    runner.call(go)
    runner.wait_for(lambda: len(results) == 100, 3 * WAIT)
    assert results == [True] * 100
    assert ticks[0] >= 5


# -- limits and errors -----------------------------------------------------------


def test_past_the_queue_limit_offload_fails_at_once(run_daemon: Any) -> None:
    gate = threading.Event()
    daemon = Daemon(listen="tcp://127.0.0.1:0", offload_threads=1, offload_queue_limit=2)
    runner = run_daemon(daemon)
    try:
        runner.call(lambda: [daemon.offload(gate.wait, WAIT) for _ in range(2)])
        with pytest.raises(OffloadFull, match=r"offload_queue_limit=2"):
            runner.call(lambda: daemon.offload(gate.wait, WAIT))
    finally:
        gate.set()
    runner.wait_for(lambda: daemon.offload_in_flight() == 0, WAIT)
    # Room again: the limit counts calls in flight, not calls ever made.
    assert runner.call(lambda: daemon.offload(square, 3)) is not None


def test_an_exception_goes_to_the_error_path(
    run_daemon: Any, records: list[logging.LogRecord]
) -> None:
    called: list[object] = []
    daemon = Daemon(listen="tcp://127.0.0.1:0")
    runner = run_daemon(daemon)
    runner.call(lambda: daemon.offload(math.sqrt, -1.0, callback=called.append))
    runner.wait_for(lambda: daemon.stats["errors"] == 1, WAIT)
    assert called == []
    failed = [r for r in records if "offloaded call" in r.getMessage()]
    assert len(failed) == 1
    assert "sqrt" in failed[0].getMessage()
    assert failed[0].exc_info is not None and isinstance(failed[0].exc_info[1], ValueError)


def test_an_exception_in_the_callback_goes_to_the_error_path(
    run_daemon: Any, records: list[logging.LogRecord]
) -> None:
    daemon = Daemon(listen="tcp://127.0.0.1:0")
    runner = run_daemon(daemon)

    def broken(result: int) -> None:
        raise RuntimeError(f"callback got {result}")

    runner.call(lambda: daemon.offload(square, 4, callback=broken))
    runner.wait_for(lambda: daemon.stats["errors"] == 1, WAIT)
    failed = [r for r in records if "callback" in r.getMessage() and r.exc_info]
    assert len(failed) == 1 and "square" in failed[0].getMessage()
    assert str(failed[0].exc_info[1]) == "callback got 16"  # type: ignore[index]


def test_an_exception_reaches_await(run_daemon: Any) -> None:
    daemon = Daemon(listen="tcp://127.0.0.1:0")
    runner = run_daemon(daemon)
    seen: list[BaseException] = []

    async def go() -> None:
        try:
            await daemon.offload(math.sqrt, -1.0)
        except ValueError as exc:
            seen.append(exc)

    runner.call(lambda: daemon.spawn(go()))
    runner.wait_for(lambda: seen, WAIT)
    assert "math domain error" in str(seen[0])
    assert daemon.stats["errors"] == 0  # the awaiting code had it


def test_a_call_past_its_timeout_is_reported_and_its_thread_abandoned(
    backend: str, records: list[logging.LogRecord]
) -> None:
    gate = threading.Event()
    clock = FakeClock()
    daemon = Daemon(listen="tcp://127.0.0.1:0", offload_timeout=5.0)
    called: list[object] = []
    with DaemonRunner(daemon, backend=backend, clock=clock) as runner:
        try:
            future = runner.call(lambda: daemon.offload(gate.wait, WAIT, callback=called.append))
            runner.advance(4.9)
            assert not runner.call(future.done)
            runner.advance(0.1)
            runner.wait_for(lambda: daemon.stats["errors"] == 1, WAIT)
            assert isinstance(runner.call(future.exception), OffloadTimeout)
            assert called == []
            text = _messages(records)
            assert "offload_timeout=5s" in text and "cannot be killed" in text
        finally:
            gate.set()
        # The abandoned thread still counted until it really ended (the bound stays honest).
        runner.wait_for(lambda: daemon.offload_in_flight() == 0, WAIT)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"offload_threads": 0}, "offload_threads"),
        ({"offload_processes": -1}, "offload_processes"),
        ({"offload_queue_limit": "many"}, "offload_queue_limit"),
        ({"offload_timeout": math.inf}, "offload_timeout"),
        ({"offload_timeout": 0}, "offload_timeout"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Daemon(**settings)


def test_defaults_are_named() -> None:
    daemon = Daemon()
    assert daemon.offload_threads is None and daemon.offload_processes is None
    assert daemon.offload_queue_limit == DEFAULT_OFFLOAD_QUEUE_LIMIT
    assert daemon.offload_timeout == DEFAULT_OFFLOAD_TIMEOUT
    assert default_offload_threads() == min(32, (os.cpu_count() or 1) + 4)
    assert default_offload_processes() == (os.cpu_count() or 1)


def test_offload_needs_a_running_daemon() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        Daemon().offload(square, 2)


# -- a graceful stop keeps its promises ---------------------------------------------


@pytest.mark.parametrize("mode", ["callback", "await"])
@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_a_stop_waits_for_the_answer_being_computed(
    run_daemon: Any, mode: str, process: bool
) -> None:
    daemon = Offloader(offload_processes=1)
    daemon.mode, daemon.process = mode, process
    runner = run_daemon(daemon)
    if process:  # start the worker process first: the job is what the stop waits for
        runner.call(lambda: daemon.offload(square, 1, process=True))
        runner.wait_for(lambda: daemon.offload_in_flight() == 0, PROCESS_WAIT)
    with runner.connect() as sock:
        sock.sendall(b"late answer\n")
        runner.wait_for(lambda: daemon.offload_in_flight() == 1, WAIT)
        runner.call(daemon.stop)  # what SIGTERM calls
        assert recv_until(sock, b"\n") == b"LATE ANSWER\n"
        assert sock.recv(10) == b""  # then closed, cleanly


def test_a_real_sigterm_waits_for_the_answer(backend: str, tmp_path: Any) -> None:
    port = free_port()
    target = tmp_path / "slow.py"
    target.write_text(
        textwrap.dedent(
            f"""
            import pathlib, time
            from daemonkit import Daemon, Lines

            def slow(line):
                pathlib.Path({str(tmp_path / "started")!r}).touch()
                time.sleep({JOB_SECONDS})
                return line.upper()

            class Slow(Daemon):
                listen = "tcp://127.0.0.1:{port}"
                framing = Lines

                def on_read(self, conn, line):
                    self.offload(slow, line, callback=conn.send)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemonkit", f"{target}:Slow", "--backend", backend],
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        wait_for_port(port, proc)
        assert proc.stderr is not None
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.sendall(b"signalled\n")
            deadline = time.monotonic() + WAIT
            while not (tmp_path / "started").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            assert recv_until(sock, b"\n") == b"SIGNALLED\n"
        assert proc.wait(PROCESS_WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        if proc.stderr is not None:
            proc.stderr.close()


def test_work_outliving_shutdown_timeout_is_cut_and_logged(
    backend: str, records: list[logging.LogRecord]
) -> None:
    gate = threading.Event()
    clock = FakeClock()
    daemon = Offloader(shutdown_timeout=2.0)
    daemon.job = lambda line: blocking_upper(line, gate)  # type: ignore[assignment]
    cancelled: list[bool] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    runner = DaemonRunner(daemon, backend=backend, clock=clock).start()
    try:
        with runner.connect() as sock:
            sock.sendall(b"never\n")
            runner.wait_for(lambda: daemon.offload_in_flight() == 1, WAIT)
            runner.call(lambda: daemon.spawn(forever()))
            runner.call(daemon.stop)
            runner.advance(1.9)
            assert not runner.call(daemon.is_stopped)  # still waiting for the work
            runner.advance(0.1)
            try:
                assert recv_until(sock, b"\n") == b""  # cut: no answer
            except OSError:
                pass  # or reset: cut either way
        runner.stop()
        text = _messages(records)
        assert "1 offloaded call(s) still running" in text
        assert "cannot be killed" in text
        assert "cancelling 1 task(s)" in text
        assert cancelled == [True]
        assert daemon.is_stopped()
    finally:
        gate.set()
        runner.stop(now=True)
