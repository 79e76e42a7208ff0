"""Blocking work off the loop: a bounded pool whose results come back in the loop thread.

A daemon's callbacks run in one thread, the loop's; a call that blocks
(a DNS lookup, a file read, a hash, a library without asyncio) stops every
client. :class:`OffloadPool` runs such calls in worker threads (or worker
processes) and hands each result back to the loop thread, to a callback or
to an ``await``.

Rules it keeps:

* **Bounded.** At most ``queue_limit`` calls in flight (waiting or running);
  past it :meth:`OffloadPool.submit` raises :class:`OffloadFull` at once,
  never a backlog without end. A call that timed out still counts until
  its thread really ends, so the bound stays true.
* **A deadline per call**, on the owner's timer queue (a ``FakeClock``
  drives it in tests). At the deadline the caller gets
  :class:`OffloadTimeout`; the thread runs on, abandoned, since a thread
  cannot be killed, and whatever it returns later is dropped.
* **Errors are never swallowed.** With a callback, an exception of the call
  or of the callback goes to the owner's error path (``on_error(what, exc)``:
  logged with its traceback and what was called). Without one, it is raised
  where the caller awaits.
* **Threads are daemon threads of this pool's own**, not a
  ``ThreadPoolExecutor``'s: the executor joins its threads when the
  interpreter exits, so one abandoned call stuck forever would hold the
  process's exit. Processes come from ``ProcessPoolExecutor`` (``spawn``
  start method: forking a process that runs an event loop and threads is
  unsafe); at :meth:`OffloadPool.close` a process still working is terminated
  (a process, unlike a thread, can be).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from daemonkit.errors import DaemonkitError

__all__ = [
    "DEFAULT_OFFLOAD_QUEUE_LIMIT",
    "DEFAULT_OFFLOAD_TIMEOUT",
    "OffloadFull",
    "OffloadPool",
    "OffloadTimeout",
    "default_offload_processes",
    "default_offload_threads",
]

#: Calls in flight (waiting or running) past which ``offload`` fails at once.
#: nginx's ``thread_pool`` is the model of a bounded queue (``max_queue``,
#: 65536 by default); each of ours may hold a client's answer, so far fewer.
DEFAULT_OFFLOAD_QUEUE_LIMIT = 1024
#: Seconds one offloaded call may take before its caller gets OffloadTimeout
#: (nginx's proxy_read_timeout is 60 s; gunicorn kills a silent worker after 30 s).
DEFAULT_OFFLOAD_TIMEOUT = 60.0


def default_offload_threads() -> int:
    """Worker threads when ``offload_threads`` is None: ``min(32, cpus + 4)``.

    asyncio's default executor (``ThreadPoolExecutor``) takes that number:
    at least 5 for I/O-bound work, at most 32 so big machines do not start
    hundreds of idle threads.
    """
    return min(32, (os.cpu_count() or 1) + 4)


def default_offload_processes() -> int:
    """Worker processes when ``offload_processes`` is None: one per CPU.

    ``ProcessPoolExecutor``'s default: CPU-bound work gains nothing from more.
    """
    return os.cpu_count() or 1


class OffloadFull(DaemonkitError):
    """``offload`` was called with ``offload_queue_limit`` calls already in flight.

    The work is coming in faster than the pool does it: refuse or delay the
    request that asked for it (answer "busy"), or raise the limit or the pool size.
    """


class OffloadTimeout(DaemonkitError, TimeoutError):
    """An offloaded call took longer than its timeout; its thread runs on, abandoned."""


class _Cancellable(Protocol):
    def cancel(self) -> object: ...


class _Job:
    __slots__ = ("args", "callback", "fn", "future", "live", "process", "timer")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
        callback: Callable[[Any], object] | None,
        process: bool,
    ) -> None:
        self.fn = fn
        self.process = process
        self.args = args
        self.future = future
        self.callback = callback
        self.timer: _Cancellable | None = None
        # True until the result was delivered (or the caller was told it will not be).
        self.live = True

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)


class OffloadPool:
    """Worker threads and processes for one loop; see the module's rules.

    ``call_later(delay, fn)`` arms a call's deadline (the owner's timer
    queue); ``on_error(what, exc)`` receives the errors of calls that have a
    callback. Pools start their workers on first use.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        call_later: Callable[[float, Callable[[], None]], _Cancellable],
        on_error: Callable[[str, BaseException], None],
        *,
        threads: int,
        processes: int,
        queue_limit: int,
        timeout: float,
    ) -> None:
        self._loop = loop
        self._call_later = call_later
        self._on_error = on_error
        self.threads = threads
        self.processes = processes
        self.queue_limit = queue_limit
        self.timeout = timeout
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        # Worker threads waiting for a job, and jobs waiting for a thread (under _lock).
        self._idle = 0
        self._waiting = 0
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        # Every call submitted and not yet returned by its thread/process.
        self._running: set[_Job] = set()
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Calls submitted whose thread or process has not returned yet (timed out ones too)."""
        return len(self._running)

    @property
    def pending(self) -> int:
        """Calls whose caller still waits for a result: what a graceful stop waits for."""
        return sum(1 for job in self._running if job.live)

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        callback: Callable[[Any], object] | None = None,
        process: bool = False,
        timeout: float | None = None,
    ) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` in a worker; return a future of the loop, resolved in its thread.

        With ``callback``, ``callback(result)`` runs in the loop thread and
        errors go to ``on_error``. Raises :class:`OffloadFull` past the
        queue limit, ``RuntimeError`` once the pool is closed.
        """
        if self._closed:
            raise RuntimeError("the offload pool is closed (the daemon has stopped)")
        if len(self._running) >= self.queue_limit:
            raise OffloadFull(
                f"{len(self._running)} offloaded calls in flight, at offload_queue_limit="
                f"{self.queue_limit}; refusing {getattr(fn, '__qualname__', fn)!r}: "
                "answer busy, or raise offload_queue_limit or the pool size"
            )
        job = _Job(fn, args, self._loop.create_future(), callback, process)
        if callback is not None:
            job.future.add_done_callback(_retrieve)  # reported through on_error instead
        delay = self.timeout if timeout is None else timeout
        if process:
            executor = self._process_executor()
            done = executor.submit(fn, *args)
            self._running.add(job)
            done.add_done_callback(lambda f: self._from_worker(job, f))
        else:
            self._running.add(job)
            with self._lock:
                self._waiting += 1
            self._queue.put(job)
            self._grow()
        job.timer = self._call_later(delay, lambda: self._expire(job, delay))
        return job.future

    # -- workers -------------------------------------------------------------------

    def _grow(self) -> None:
        with self._lock:
            if self._waiting <= self._idle or len(self._workers) >= self.threads:
                return
            worker = threading.Thread(
                target=self._work, name=f"daemonkit-offload-{len(self._workers) + 1}", daemon=True
            )
            self._workers.append(worker)
        worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._queue.get()
            with self._lock:
                self._idle -= 1
                if job is not None:
                    self._waiting -= 1
            if job is None:
                return
            outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()
            if job.live:  # not abandoned while it waited
                try:
                    outcome.set_result(job.fn(*job.args))
                except BaseException as exc:
                    outcome.set_exception(exc)
            else:
                outcome.cancel()
            self._from_worker(job, outcome)
            del job, outcome  # references broken before the next wait

    def _from_worker(self, job: _Job, outcome: concurrent.futures.Future[Any]) -> None:
        """In a worker (or the executor's) thread: hand the outcome to the loop."""
        try:
            self._loop.call_soon_threadsafe(self._deliver, job, outcome)
        except RuntimeError:
            pass  # the loop is closed: nobody is left to tell

    def _process_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn")
            )
        return self._executor

    # -- in the loop thread -----------------------------------------------------------

    def _deliver(self, job: _Job, outcome: concurrent.futures.Future[Any]) -> None:
        self._running.discard(job)
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        if not job.live or outcome.cancelled():
            return  # timed out or abandoned: the caller was told already
        job.live = False
        exc = outcome.exception()
        future = job.future
        if future.done():  # the caller cancelled the future: nothing to hand over
            return
        if exc is not None:
            future.set_exception(exc)
            if job.callback is not None:
                self._on_error(f"offloaded call {job.name}() failed", exc)
            return
        result = outcome.result()
        future.set_result(result)
        if job.callback is not None:
            try:
                job.callback(result)
            except Exception as err:
                self._on_error(
                    f"callback {_name(job.callback)} of offloaded call {job.name}()", err
                )

    def _expire(self, job: _Job, delay: float) -> None:
        job.timer = None
        if not job.live:
            return
        job.live = False
        runs_on = (
            "its worker process runs it to the end"
            if job.process
            else "a thread cannot be killed: it runs on"
        )
        exc = OffloadTimeout(
            f"offloaded call {job.name}() still running after offload_timeout={delay:g}s; "
            f"abandoned ({runs_on}, its result is dropped)"
        )
        if not job.future.done():
            job.future.set_exception(exc)
        if job.callback is not None:
            self._on_error(str(exc), exc)

    def abandon(self) -> int:
        """Stop waiting for the calls in flight (a stop's deadline); return how many.

        Their callers' futures are cancelled and their callbacks never run.
        Threads cannot be killed: they run on, daemon threads, and what they
        return is dropped. Calls still waiting for a thread never start.
        """
        count = 0
        for job in list(self._running):
            if job.live:
                count += 1
                job.live = False
                if job.timer is not None:
                    job.timer.cancel()
                    job.timer = None
                job.future.cancel()
        return count

    def close(self) -> None:
        """Abandon what is in flight, end the idle threads, stop the processes. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.abandon()
        for _ in self._workers:
            self._queue.put(None)
        executor, self._executor = self._executor, None
        if executor is not None:
            busy = any(job.process for job in self._running)
            # ``_processes`` is private, but a busy worker process would
            # otherwise hold the interpreter's exit (it joins them).
            workers = list((getattr(executor, "_processes", None) or {}).values())
            executor.shutdown(wait=False, cancel_futures=True)
            if busy:
                for proc in workers:
                    proc.terminate()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a callback call's exception as seen: on_error reported it."""
    if not future.cancelled():
        future.exception()


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or repr(fn))
