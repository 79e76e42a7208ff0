"""Test helpers daemonkit ships for its users (and uses itself).

* :class:`DaemonRunner` runs a daemon on its own reactor in a background
  thread, on an ephemeral port, so a test can talk to it with plain blocking
  sockets and stop it cleanly.
* :class:`~daemonkit.core.timers.FakeClock` makes every timer of a daemon fire
  only when the test says ``advance(seconds)``: no sleeping in tests.
* :class:`MemoryTransport` is an asyncio transport that records what is
  written, for exercising a protocol without sockets.
* :class:`Simulation` runs a daemon and thousands of bots in one process,
  in memory, on a fake clock: deterministic load scenarios in milliseconds.
"""

from daemonkit.core.timers import FakeClock
from daemonkit.testing.runner import DaemonRunner
from daemonkit.testing.sim import Simulation
from daemonkit.testing.transport import MemoryTransport

__all__ = ["DaemonRunner", "FakeClock", "MemoryTransport", "Simulation"]
