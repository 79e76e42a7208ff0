"""Failures are failures: a reply judged bad counts once, as a failure, never as a success."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit import Connection, Daemon, Lines
from daemonkit.bots import Bot
from daemonkit.bots.report import format_summary
from daemonkit.cli import bots as bots_cli
from daemonkit.testing import DaemonRunner, Simulation
from tests.helpers import ROOT

ECHO_BOT = str(ROOT / "examples" / "echo_bot.py")


class Picky(Daemon):
    """Answers ``ERR rate`` to every line that starts with ``bad``, echoes the others."""

    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(b"ERR rate" if line.startswith(b"bad") else line)


class JudgingTickBot(Bot):
    """Every other request is refused by the daemon; on_read marks those failed."""

    framing = Lines

    def on_connect(self) -> None:
        self.state["n"] = 0

    def on_tick(self) -> None:
        self.state["n"] += 1
        self.request(b"bad" if self.state["n"] % 2 else b"good", name="op")

    def on_read(self, frame: bytes) -> None:
        if frame.startswith(b"ERR"):
            self.fail("op", "ERR rate")


def test_a_reply_marked_failed_in_on_read_is_counted_once_as_a_failure() -> None:
    result = Simulation(Picky(), JudgingTickBot, bots=2, duration=1.0).run()
    op = result.stats.operations["op"]
    failed = op.errors["ERR rate"]
    assert op.errors == {"ERR rate": failed}
    # Half of the replies were errors: as many failures as successes (± the
    # reply in flight at the end), and the failures are not in the count.
    assert failed > 100
    assert abs(op.count - failed) <= 2
    assert result.stats.requests == op.count
    assert result.rps == op.count / result.elapsed


class JudgingScriptBot(Bot):
    framing = Lines

    async def script(self) -> None:
        for i in range(10):
            reply = await self.call(b"bad" if i < 3 else b"good", name="op")
            if reply.startswith(b"ERR"):
                self.fail("op", "ERR rate")


def test_a_call_whose_reply_the_script_fails_is_counted_once_as_a_failure() -> None:
    result = Simulation(Picky(), JudgingScriptBot, bots=4, duration=1.0).run()
    op = result.stats.operations["op"]
    assert op.errors == {"ERR rate": 12}
    assert op.count == 28
    assert result.stats.requests == 28
    assert result.stats.errors == 12


class FailWithoutReplyBot(Bot):
    """``fail`` with no reply waiting for judgment counts one failure on its own."""

    framing = Lines

    async def script(self) -> None:
        await self.call(b"good", name="op")
        await self.sleep(0.1)
        self.fail("op", "late check")  # the reply's verdict was given: a new failure


def test_fail_after_the_verdict_counts_a_separate_failure() -> None:
    result = Simulation(Picky(), FailWithoutReplyBot, bots=1, duration=1.0).run()
    op = result.stats.operations["op"]
    assert (op.count, op.errors) == (1, {"late check": 1})


class MeasuringBot(Bot):
    framing = Lines

    async def script(self) -> None:
        for _ in range(5):
            await self.call(b"good", name="op")
            self.record("custom", 0.5)


def test_custom_measures_are_not_requests() -> None:
    result = Simulation(Picky(), MeasuringBot, bots=2, duration=1.0).run()
    stats = result.stats
    assert stats.operations["custom"].count == 10
    assert stats.requests == 10  # the calls only
    assert stats.latency().max < 0.5  # the 0.5 s measures are not in the total
    assert result.rps == 10 / result.elapsed
    lines = format_summary(result).splitlines()
    assert any(line.startswith("custom") for line in lines)
    # One request operation: no total row, and the measure is its own row.
    assert not any(line.startswith("total") for line in lines)


# -- the exit status of ``daemonkit bots`` -------------------------------------------


class HalfWrong(Daemon):
    """Echoes lines, but answers every other one of a connection with a wrong line."""

    listen = "tcp://127.0.0.1:0"
    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        n = conn.state["n"] = conn.state.get("n", 0) + 1
        conn.send(line if n % 2 else b"wrong")


@pytest.fixture
def half_wrong() -> Iterator[str]:
    with DaemonRunner(HalfWrong()) as server:
        yield str(server.address)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = bots_cli.main([ECHO_BOT, *argv, "--bots", "2", "--duration", "0.4s", "--quiet"], out=out)
    return code, out.getvalue()


def test_a_run_with_failures_exits_8_by_default(half_wrong: str) -> None:
    code, out = run("--target", half_wrong)
    assert code == bots_cli.EXIT_THRESHOLD, out
    assert "FAIL errors>0" in out and "--allow-failures" in out
    assert "echo: wrong reply" in out


def test_allow_failures_keeps_exit_0(half_wrong: str) -> None:
    code, out = run("--target", half_wrong, "--allow-failures")
    assert code == 0, out
    assert "FAIL" not in out


def test_fail_if_replaces_the_default_gate(half_wrong: str) -> None:
    code, out = run("--target", half_wrong, "--fail-if", "error_rate>60%")
    assert code == 0, out
    code, out = run("--target", half_wrong, "--fail-if", "error_rate>40%")
    assert code == bots_cli.EXIT_THRESHOLD, out


def test_the_html_report_shows_the_command_line_and_the_verdicts(
    half_wrong: str, tmp_path: Path
) -> None:
    page = tmp_path / "r.html"
    code, out = run("--target", half_wrong, "--spawn-rate", "20", "--html", str(page))
    assert code == bots_cli.EXIT_THRESHOLD, out
    text = page.read_text()
    assert f"python -m daemonkit bots {ECHO_BOT} --target {half_wrong}" in text
    assert "FAIL errors&gt;0: actual" in text
    assert "20.0 bots/s" in text
