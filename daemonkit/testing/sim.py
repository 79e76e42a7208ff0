"""Simulation: a daemon and N bots in one process, in memory, on a fake clock.

No peer framework offers this: a thousand-user scenario with think times,
idle timeouts and disconnects runs in milliseconds of real time and gives
the same result every time. The daemon and the bots run unchanged; only the
transport between them (an in-memory pipe with a fixed one-way ``latency``)
and the clock (a :class:`~daemonkit.core.timers.FakeClock`) are simulated.

Determinism: bytes are delivered by timers in the order they were written,
bots draw from seeded ``random`` objects, and the loop is stepped only when
nothing is ready, so two runs with the same seed produce equal results.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

from daemonkit.bots.bot import Bot
from daemonkit.bots.result import RunResult
from daemonkit.bots.runner import BotRunner, Fleet
from daemonkit.core.connection import Connection
from daemonkit.core.endpoints import Address
from daemonkit.core.reactor import Reactor
from daemonkit.core.timers import FakeClock
from daemonkit.daemon import Daemon

__all__ = ["DEFAULT_LATENCY", "Simulation"]

#: One-way latency of the simulated network: a loopback round trip is ~50 µs.
DEFAULT_LATENCY = 0.000025

# Loop turns at one instant before the simulation calls it a livelock.
_SETTLE_LIMIT = 100_000


class _Pipe(asyncio.Transport):
    """One direction-pair end of an in-memory connection; bytes reach the peer after ``latency``."""

    def __init__(self, sim: Simulation, protocol: asyncio.Protocol, peer_name: Any) -> None:
        super().__init__()
        self._sim = sim
        self._protocol = protocol
        self._peer: _Pipe | None = None
        self._closing = False
        self._lost = False
        self._reading = True
        self._held: list[bytes] = []
        self._extra = {"peername": peer_name, "sockname": ("127.0.0.1", 7000)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        peer = self._peer
        if peer is not None:
            self._sim._deliver(peer, bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True
        held, self._held = self._held, []
        for data in held:
            self._received(data)

    def is_reading(self) -> bool:
        return self._reading

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        peer = self._peer
        if peer is not None:
            self._sim._deliver(peer, None)  # the FIN, after the bytes already sent
        self._sim.reactor.call_soon(self._lose)

    def abort(self) -> None:
        self.close()

    def _received(self, data: bytes | None) -> None:
        if self._lost:
            return
        if data is None:
            self._closing = True
            self._lose()
        elif not self._reading:
            self._held.append(data)
        else:
            self._protocol.data_received(data)

    def _lose(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._protocol.connection_lost(None)


class Simulation:
    """Run ``daemon`` and ``bots`` instances of ``bot_class`` in memory on a fake clock.

    ``Simulation(MyDaemon(), MyBot, bots=1000, duration=60).run()`` returns
    the :class:`~daemonkit.bots.result.RunResult` a real run would, in
    simulated seconds. ``spawn_rate``, ``rate`` and ``seed`` are those of
    :class:`~daemonkit.bots.BotRunner`, as are a list of bot classes and
    their ``weights``; ``latency`` is the one-way network
    delay. After :meth:`run`, :attr:`daemon` is stopped and can be inspected
    (its ``stats``, anything it recorded).
    """

    def __init__(
        self,
        daemon: Daemon,
        bot_class: type[Bot] | Sequence[type[Bot]],
        *,
        bots: int = 10,
        duration: float = 10.0,
        spawn_rate: float | None = None,
        rate: float | None = None,
        seed: int | str = 0,
        latency: float = DEFAULT_LATENCY,
        start: float = 1000.0,
        weights: Sequence[int] | None = None,
    ) -> None:
        if latency < 0:
            raise ValueError(f"latency must not be negative, not {latency}")
        self.daemon = daemon
        self.clock = FakeClock(start)
        self.latency = latency
        self.runner = BotRunner(
            bot_class,
            Address("tcp", "127.0.0.1", 7000),
            bots=bots,
            duration=duration,
            spawn_rate=spawn_rate,
            rate=rate,
            seed=seed,
            connector=self._connect,
            weights=weights,
        )
        # Made last: settings are checked first, so a bad one leaks no loop.
        self.reactor = Reactor("asyncio", clock=self.clock, log=logging.getLogger("daemonkit.sim"))
        self._ports = 40000

    def run(self) -> RunResult:
        """Run the whole scenario and return its result; closes the reactor."""
        reactor = self.reactor
        try:
            self.daemon.start(reactor, install_signals=False, bind=False)
            self.runner.on_done = lambda _result: None
            self.runner.start(reactor)
            while True:
                self._settle()
                if self.runner.done:
                    break
                deadline = reactor.timers.next_deadline()
                if deadline is None:
                    raise RuntimeError("the simulation has nothing left to do but is not done")
                self.clock.advance(max(0.0, deadline - self.clock.now()))
            self.daemon.stop(now=True)
            self._settle()
        finally:
            reactor.close()
        return self.runner.result()

    # -- the in-memory network -------------------------------------------------

    def _connect(self, fleet: Fleet, bot: Bot, conn: Connection) -> None:
        daemon = self.daemon
        if not daemon.admit_connection():
            fleet.connect_failed(bot, "ECONNREFUSED")
            return
        self._ports += 1
        server_conn = daemon._new_connection()
        # A Connection is an asyncio protocol by its methods, not by its base.
        client = _Pipe(self, cast(asyncio.Protocol, conn), ("127.0.0.1", 7000))
        server = _Pipe(self, cast(asyncio.Protocol, server_conn), ("127.0.0.1", self._ports))
        client._peer, server._peer = server, client

        def established() -> None:
            server_conn.connection_made(server)
            conn.connection_made(client)

        # The handshake takes one round trip.
        self.reactor.call_later(2 * self.latency, established)

    def _deliver(self, pipe: _Pipe, data: bytes | None) -> None:
        self.reactor.call_later(self.latency, pipe._received, data)

    def _settle(self) -> None:
        """Run the loop until nothing is ready (callbacks, task steps) at this instant."""
        loop = self.reactor.loop
        for _ in range(_SETTLE_LIMIT):
            if not loop._ready:  # type: ignore[attr-defined]
                return
            loop.call_soon(loop.stop)
            loop.run_forever()
        raise RuntimeError(f"the simulation did not settle at t={self.clock.now()}")
