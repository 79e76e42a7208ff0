"""DaemonRunner: a daemon in a background thread, for tests."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from daemonkit.core.endpoints import Address
from daemonkit.core.timers import Clock, FakeClock
from daemonkit.daemon import Daemon

__all__ = ["DaemonRunner"]

T = TypeVar("T")

# How long start() and stop() wait for the daemon's thread before failing the
# test instead of hanging it.
RUNNER_WAIT = 30.0


class DaemonRunner:
    """Run ``daemon`` in a background thread until :meth:`stop` (or the ``with`` block ends).

    Signals are not installed (only the main thread may), so stop it with
    :meth:`stop`. Give the daemon ``listen = "tcp://127.0.0.1:0"`` for an
    ephemeral port; :attr:`address` is the bound one. With ``clock`` (a
    :class:`~daemonkit.core.timers.FakeClock`) its timers fire only on
    :meth:`advance`. Everything that touches the daemon's objects must go
    through :meth:`call`, which runs a function in the loop thread.
    """

    def __init__(
        self, daemon: Daemon, *, backend: str = "auto", clock: Clock | None = None
    ) -> None:
        self.daemon = daemon
        self.backend = backend
        self.clock = clock
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def address(self) -> Address:
        """The first bound address."""
        return self.daemon.addresses[0]

    @property
    def addresses(self) -> dict[str, Address]:
        """Every bound address by endpoint name, in ``listen`` order: ``{"api": ...}``."""
        return {
            str(host.endpoint.name): host.address
            for host in self.daemon.endpoint_hosts
            if host.address is not None
        }

    def start(self) -> DaemonRunner:
        """Start the daemon and wait until it accepts; re-raises a start failure."""
        self._thread = threading.Thread(target=self._main, name="daemonkit-runner", daemon=True)
        self._thread.start()
        if not self._ready.wait(RUNNER_WAIT):
            raise TimeoutError("the daemon did not start within 30 s")
        if self._error is not None:
            self._thread.join(RUNNER_WAIT)
            raise self._error
        return self

    def _main(self) -> None:
        try:
            self.daemon.run(
                backend=self.backend,
                clock=self.clock,
                install_signals=False,
                on_ready=lambda _d: self._ready.set(),
            )
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the daemon's loop thread and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.daemon.reactor.loop.call_soon_threadsafe(run)
        return future.result(RUNNER_WAIT)

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        """Wait until ``predicate()``, evaluated in the loop thread, is true.

        For "the daemon has processed what I sent" before advancing a fake
        clock; raises ``TimeoutError`` after ``timeout`` real seconds.
        """
        deadline = time.monotonic() + timeout
        while not self.call(predicate):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s: {predicate!r}")
            time.sleep(0.001)

    def advance(self, seconds: float) -> int:
        """Advance the fake clock in the loop thread; return how many timers fired."""
        clock = self.clock
        if not isinstance(clock, FakeClock):
            raise RuntimeError("advance() needs DaemonRunner(..., clock=FakeClock())")
        return self.call(clock.advance, seconds)

    def connect(self, timeout: float = 10.0) -> socket.socket:
        """A blocking client socket connected to :attr:`address` (the caller closes it).

        Returns once the daemon has dealt with the connection: ``on_accept``
        has run, or the connection was rejected (``max_connections``). So a
        test may advance a fake clock right away without racing the accept.
        """
        stats = self.daemon.stats
        before = self.call(lambda: stats["accepted"] + stats["rejected"])
        address = self.address
        if address.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(address.path)
        else:
            sock = socket.create_connection((address.host, address.port), timeout=timeout)
        try:
            self.wait_for(lambda: stats["accepted"] + stats["rejected"] > before, timeout)
        except TimeoutError:
            sock.close()
            raise
        return sock

    def stop(self, *, now: bool = False) -> None:
        """Stop the daemon (gracefully unless ``now``) and wait for its thread; idempotent."""
        thread = self._thread
        if thread is None:
            return
        if thread.is_alive():
            try:
                self.daemon.reactor.loop.call_soon_threadsafe(lambda: self.daemon.stop(now=now))
            except RuntimeError:
                pass  # the loop already closed
            thread.join(RUNNER_WAIT)
            if thread.is_alive():
                raise TimeoutError("the daemon did not stop within 30 s")
        self._thread = None
        if self._error is not None:
            raise self._error

    def __enter__(self) -> DaemonRunner:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
