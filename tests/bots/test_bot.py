"""The Bot API, driven deterministically: a daemon and bots in memory on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from daemonkit import CloseReason, Connection, Daemon, Lines
from daemonkit.bots import Bot, RequestFailed, between
from daemonkit.testing import Simulation
from daemonkit.testing.sim import DEFAULT_LATENCY

RTT = 2 * DEFAULT_LATENCY


class Echo(Daemon):
    """Echoes lines; ``hold`` swallows them (no reply); ``bye`` closes the connection."""

    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        if line == b"hold":
            return
        if line == b"bye":
            conn.close()
            return
        conn.send(line)


class Stall(Daemon):
    """Echoes lines, but holds every reply while ``stalled_until`` is in the future."""

    framing = Lines

    def on_start(self) -> None:
        self.stall_from = self.reactor.time() + 2.0
        self.stall_until = self.stall_from + 1.0

    def on_read(self, conn: Connection, line: bytes) -> None:
        now = self.reactor.time()
        if self.stall_from <= now < self.stall_until:
            self.after(self.stall_until - now, conn.send, line)
        else:
            conn.send(line)


class TickBot(Bot):
    framing = Lines

    def on_tick(self) -> None:
        self.request(b"ping", name="echo")


def test_closed_model_ticks_again_after_each_reply() -> None:
    result = Simulation(Echo(), TickBot, bots=3, duration=1.0).run()
    echo = result.stats.operations["echo"]
    assert echo.failures == 0
    # Every request waits one round trip (plus the connect round trip at the start).
    assert echo.latency.max == pytest.approx(RTT, rel=0.01)
    expected = 3 * (1.0 - RTT) / RTT
    assert expected * 0.95 <= echo.count <= expected * 1.05
    assert result.peak_connected == 3
    assert result.stats.connect.count == 3


class ThinkingBot(TickBot):
    think_time = 0.25


def test_think_time_spaces_the_ticks() -> None:
    result = Simulation(Echo(), ThinkingBot, bots=2, duration=2.0).run()
    # 2 s / (0.25 s think + one round trip) per bot.
    per_bot = result.stats.operations["echo"].count / 2
    assert 7 <= per_bot <= 8


class RandomThinkBot(TickBot):
    think_time = between(0.1, 0.3)


def test_between_draws_from_the_bots_seeded_random() -> None:
    first = Simulation(Echo(), RandomThinkBot, bots=20, duration=5.0, seed=7).run()
    second = Simulation(Echo(), RandomThinkBot, bots=20, duration=5.0, seed=7).run()
    other = Simulation(Echo(), RandomThinkBot, bots=20, duration=5.0, seed=8).run()
    assert first.stats.to_dict() == second.stats.to_dict()
    assert first.stats.requests != other.stats.requests
    with pytest.raises(ValueError):
        between(2, 1)


class HoldBot(Bot):
    framing = Lines
    request_timeout = 0.5

    def on_connect(self) -> None:
        self.request(b"hold", name="lost")
        self.request(b"ping", name="echo")


def test_fifo_matching_and_request_timeout() -> None:
    # "hold" gets no reply, so the echo of "ping" answers the oldest request:
    # FIFO cannot know better, which is why keyed matching exists.
    result = Simulation(Echo(), HoldBot, bots=1, duration=2.0).run()
    assert result.stats.operations["lost"].count == 1
    assert result.stats.operations["echo"].errors == {"timeout": 1}


class KeyedBot(Bot):
    framing = Lines
    request_timeout = 0.5

    def on_connect(self) -> None:
        self.request(b"hold", name="lost", key=b"hold")
        self.request(b"ping", name="echo", key=b"ping")

    def reply_key(self, frame: Any) -> Any:
        return bytes(frame)


def test_keyed_matching_pairs_each_reply_with_its_request() -> None:
    result = Simulation(Echo(), KeyedBot, bots=1, duration=2.0).run()
    assert result.stats.operations["echo"].count == 1
    assert result.stats.operations["lost"].errors == {"timeout": 1}


class ClosingBot(Bot):
    framing = Lines

    def on_connect(self) -> None:
        self.state["closes"] = []
        self.request(b"hold", name="lost")
        self.send(b"bye")

    def on_close(self, reason: CloseReason) -> None:
        self.state["closes"].append(str(reason))
        CLOSES.append((self.index, str(reason)))


CLOSES: list[tuple[int, str]] = []


def test_daemon_closing_a_bot_fails_its_requests_and_counts_the_disconnect() -> None:
    CLOSES.clear()
    result = Simulation(Echo(), ClosingBot, bots=4, duration=1.0).run()
    assert result.stats.operations["lost"].errors == {"closed: peer closed": 4}
    assert result.stats.operations["connection"].errors == {"closed: peer closed": 4}
    assert sorted(CLOSES) == [(i, "peer closed") for i in range(4)]


class ScriptBot(Bot):
    framing = Lines
    request_timeout = 0.5

    async def script(self) -> None:
        reply = await self.call(b"one", name="first")
        assert reply == b"one"
        await self.sleep(0.5)
        self.record("slept", 0.5)
        try:
            await self.call(b"hold", name="held")
        except RequestFailed as exc:
            self.state["failed"] = exc.kind
            SCRIPT_STATES.append(dict(self.state))
        await self.call(b"two", name="second")


SCRIPT_STATES: list[dict[str, Any]] = []


def test_script_runs_its_steps_in_order_on_the_run_clock() -> None:
    SCRIPT_STATES.clear()
    result = Simulation(Echo(), ScriptBot, bots=5, duration=3.0).run()
    ops = result.stats.operations
    assert ops["first"].count == 5
    assert ops["slept"].count == 5
    assert ops["held"].errors == {"timeout": 5}
    assert ops["second"].count == 5
    assert SCRIPT_STATES == [{"failed": "timeout"}] * 5
    # A finished script closes its bot: that is not a disconnect error.
    assert "connection" not in ops


class BrokenBot(Bot):
    framing = Lines

    def on_connect(self) -> None:
        raise ValueError("oops")


def test_an_exception_in_a_bot_is_counted_and_closes_only_that_bot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = Simulation(Echo(), BrokenBot, bots=3, duration=1.0).run()
    assert result.stats.operations["bot"].errors == {"ValueError": 3}
    assert "oops" in caplog.text


def test_bot_classes_choose_one_driving_style() -> None:
    with pytest.raises(TypeError, match="both on_tick and script"):

        class Both(Bot):
            def on_tick(self) -> None:
                pass

            async def script(self) -> None:
                pass


class OpenBot(Bot):
    framing = Lines

    def on_tick(self) -> None:
        self.request(b"ping", name="echo")


def test_open_model_measures_from_the_schedule_and_sees_a_stall() -> None:
    """wrk2's point: a 1 s stall must show in the open model's latencies."""

    class PacedBot(OpenBot):
        think_time = 0.01  # ~100 requests/s per bot when the daemon answers at once

    opened = Simulation(Stall(), OpenBot, bots=10, duration=6.0, rate=100.0).run()
    closed = Simulation(Stall(), PacedBot, bots=10, duration=6.0).run()
    open_lat = opened.stats.operations["echo"].latency
    closed_lat = closed.stats.operations["echo"].latency
    # The open model sends 100/s whatever happens: ~100 requests land in the
    # stall and wait for its end, on average half of it.
    assert open_lat.count == pytest.approx(600, abs=2)
    assert open_lat.percentile(99) >= 0.9
    assert open_lat.percentile(90) >= 0.3
    # The closed model's bots simply wait: 10 slow requests among ~5,000, so
    # its p99 hides the stall completely (coordinated omission).
    assert closed_lat.max >= 0.9
    assert closed_lat.percentile(99) < 0.01


def test_open_model_needs_on_tick() -> None:
    from daemonkit.errors import ConfigError

    class Quiet(Bot):
        pass

    with pytest.raises(ConfigError, match="on_tick"):
        Simulation(Echo(), Quiet, bots=1, rate=10.0)


def test_simulation_is_deterministic_with_a_thousand_bots_and_idle_timeouts() -> None:
    class Idle(Echo):
        idle_timeout = 3.0

    class Chatty(Bot):
        framing = Lines
        think_time = between(0.5, 4.0)  # some bots outwait the idle timeout

        def on_tick(self) -> None:
            self.request(b"x" * self.random.randint(1, 50), name="echo")

    runs = [
        Simulation(Idle(), Chatty, bots=1000, duration=10.0, spawn_rate=500.0, seed=3).run()
        for _ in range(2)
    ]
    first, second = (r.to_dict() for r in runs)
    first.pop("started")
    second.pop("started")
    assert first == second
    stats = runs[0].stats
    assert stats.requests > 1000
    # Idle bots were disconnected by the daemon, and that was counted.
    assert stats.operations["connection"].errors["closed: peer closed"] > 0
