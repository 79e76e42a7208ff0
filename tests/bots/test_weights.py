"""Several bot classes in one run, weighted as Locust's user classes, each with its own rows."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest

from daemonkit import Connection, Daemon, Lines
from daemonkit.bots import Bot, BotRunner
from daemonkit.bots.report import format_summary
from daemonkit.bots.runner import weighted_order
from daemonkit.cli import bots as bots_cli
from daemonkit.errors import ConfigError
from daemonkit.testing import DaemonRunner, Simulation
from tests.helpers import ROOT

ECHO_BOT = str(ROOT / "examples" / "echo_bot.py")
SEEN: Counter[str] = Counter()


class Echo(Daemon):
    listen = "tcp://127.0.0.1:0"
    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line)


class Reader(Bot):
    framing = Lines
    weight = 3

    def on_connect(self) -> None:
        SEEN[type(self).__name__] += 1

    def on_tick(self) -> None:
        self.request(b"get", name="get")


class Writer(Bot):
    framing = Lines

    def on_connect(self) -> None:
        SEEN[type(self).__name__] += 1

    def on_tick(self) -> None:
        self.request(b"put", name="put")
        self.request(b"get", name="get")


def test_a_weighted_two_class_run_has_rows_per_class() -> None:
    SEEN.clear()
    result = Simulation(Echo(), [Reader, Writer], bots=8, duration=1.0).run()
    assert SEEN == {"Reader": 6, "Writer": 2}  # weight 3 : 1 (the class attribute)
    ops = result.stats.operations
    assert set(ops) == {"Reader:get", "Writer:put", "Writer:get"}
    assert all(op.count > 0 and op.failures == 0 for op in ops.values())
    assert result.bot == "Reader, Writer"
    assert result.classes == {"Reader": 6, "Writer": 2}
    text = format_summary(result)
    for name in ("Reader:get", "Writer:put", "Writer:get", "total"):
        assert name in text


def test_weights_given_override_the_class_attribute() -> None:
    SEEN.clear()
    Simulation(Echo(), [Reader, Writer], weights=[1, 1], bots=4, duration=0.2).run()
    assert SEEN == {"Reader": 2, "Writer": 2}


def test_assignment_spreads_the_classes_in_spawn_order() -> None:
    # nginx's smooth weighted round robin: the classes interleave, so a spawn
    # rate brings them in together, and any prefix is close to the weights.
    assert weighted_order([3, 1]) == [0, 0, 1, 0]
    assert weighted_order([1, 1, 1]) == [0, 1, 2]
    order = weighted_order([5, 2, 1])
    assert Counter(order) == {0: 5, 1: 2, 2: 1}
    assert order[:3] == [0, 1, 0]


def test_bad_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match="weights"):
        BotRunner([Reader, Writer], "tcp://127.0.0.1:1", weights=[1], bots=2, duration=1.0)
    with pytest.raises(ConfigError, match="weight"):
        BotRunner([Reader, Writer], "tcp://127.0.0.1:1", weights=[1, 0], bots=2, duration=1.0)
    with pytest.raises(ConfigError, match="twice"):
        BotRunner([Reader, Reader], "tcp://127.0.0.1:1", bots=2, duration=1.0)


def test_the_command_line_takes_several_bot_files_and_weights(tmp_path: Path) -> None:
    other = tmp_path / "put_bot.py"
    other.write_text(
        "from daemonkit import Lines\n"
        "from daemonkit.bots import Bot\n\n\n"
        "class PutBot(Bot):\n"
        "    framing = Lines\n\n"
        "    def on_tick(self):\n"
        '        self.request(b"put", name="put")\n'
    )
    out = io.StringIO()
    with DaemonRunner(Echo()) as server:
        code = bots_cli.main(
            [ECHO_BOT, str(other), "--weights", "1,3", "--target", str(server.address),
             "--bots", "4", "--duration", "0.4s", "--quiet", "--json", str(tmp_path / "r.json")],
            out=out,
        )  # fmt: skip
    assert code == 0, out.getvalue()
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["classes"] == {"EchoBot": 1, "PutBot": 3}
    assert set(data["summary"]["operations"]) == {"EchoBot:echo", "PutBot:put"}
