"""``daemonkit bots``: exit codes, output and report files, against real daemons."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemonkit import Connection, Daemon, Lines
from daemonkit.bots.report import format_seconds
from daemonkit.cli import bots as bots_cli
from daemonkit.cli import main as daemonkit_main
from daemonkit.testing import DaemonRunner
from tests.helpers import ROOT, free_port

ECHO_BOT = str(ROOT / "examples" / "echo_bot.py")


class LineEcho(Daemon):
    listen = "tcp://127.0.0.1:0"
    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line)


class SlowEcho(LineEcho):
    def on_read(self, conn: Connection, line: bytes) -> None:
        self.after(0.05, conn.send, line)


@pytest.fixture
def echo() -> Iterator[str]:
    with DaemonRunner(LineEcho()) as server:
        yield str(server.address)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = bots_cli.main(list(argv), out=out)
    return code, out.getvalue()


def test_a_run_prints_the_summary_and_writes_every_report(echo: str, tmp_path: Path) -> None:
    code, out = run(
        ECHO_BOT,
        "--target",
        echo,
        "--bots",
        "20",
        "--duration",
        "1.2s",
        "--json",
        str(tmp_path / "r.json"),
        "--csv",
        str(tmp_path / "r"),
        "--html",
        str(tmp_path / "r.html"),
        "--fail-if",
        "errors>0",
        "--quiet",
    )
    assert code == 0, out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["bots"] == 20 and data["peak_connected"] == 20
    echo_row = data["summary"]["operations"]["echo"]
    assert echo_row["count"] == data["requests"] > 0
    # The printed table and the files carry the same numbers.
    for key in ("p50", "p99", "max"):
        assert format_seconds(echo_row[key]) in out
    assert f"{echo_row['count']:,}" in out
    with open(tmp_path / "r_stats.csv", newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert int(rows["echo"]["count"]) == echo_row["count"]
    html = (tmp_path / "r.html").read_text()
    assert "<svg" in html and "EchoBot" in html
    for name in ("r.json", "r_stats.csv", "r_history.csv", "r_failures.csv", "r.html"):
        assert f"wrote {tmp_path / name}" in out


def test_fail_if_exits_8_and_says_which_condition(echo: str) -> None:
    code, out = run(
        ECHO_BOT, "--target", echo, "--bots", "2", "--duration", "0.5s", "--quiet",
        "--fail-if", "p99>0us", "--fail-if", "errors>0",
    )  # fmt: skip
    assert code == bots_cli.EXIT_THRESHOLD
    assert "FAIL p99>0us" in out
    assert "FAIL errors>0" not in out


def test_no_connection_exits_9() -> None:
    target = f"tcp://127.0.0.1:{free_port()}"
    code, out = run(ECHO_BOT, "--target", target, "--bots", "3", "--duration", "0.3s", "--quiet")
    assert code == bots_cli.EXIT_NO_CONNECTION
    assert "ECONNREFUSED" in out


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["no/such/file.py", "--target", "tcp://127.0.0.1:1"], 3),
        ([ECHO_BOT, "--target", "tcp://nowhere"], 4),
        ([ECHO_BOT, "--target", "tcp://127.0.0.1:1", "--fail-if", "p99 is low"], 2),
        ([ECHO_BOT, "--target", "tcp://127.0.0.1:1", "--duration", "forever"], 2),
        ([ECHO_BOT, "--target", "tcp://127.0.0.1:1", "--bots", "0"], 2),
        ([ECHO_BOT, "--target", "tcp://127.0.0.1:1", "--max-rate-search"], 2),
        ([ECHO_BOT, "--target", "tcp://127.0.0.1:1", "--server-pid", "999999999"], 4),
        ([ECHO_BOT], 2),
    ],
)
def test_usage_errors_have_their_exit_codes(
    argv: list[str], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bots_cli.main(argv, out=io.StringIO()) == code
    err = capsys.readouterr().err
    assert err.strip(), "every failure says why on stderr"
    assert "Traceback" not in err


def test_the_main_command_dispatches_bots(echo: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = daemonkit_main(["bots", ECHO_BOT, "--target", echo, "--duration", "0.3s", "--quiet"])
    assert code == 0
    assert "EchoBot" in capsys.readouterr().out


def test_server_pid_reports_memory_per_bot(echo: str) -> None:
    code, out = run(
        ECHO_BOT, "--target", echo, "--bots", "30", "--duration", "1.2s", "--quiet",
        "--server-pid", str(os.getpid()),
    )  # fmt: skip
    assert code == 0, out
    assert "30 bots connected" in out
    assert "per bot" in out


@pytest.mark.slow
def test_procs_spreads_bots_over_worker_processes(echo: str, tmp_path: Path) -> None:
    code, out = run(
        ECHO_BOT, "--target", echo, "--bots", "10", "--duration", "1.5s", "--quiet",
        "--procs", "2", "--json", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert code == 0, out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["procs"] == 2
    assert data["peak_connected"] == 10
    assert data["requests"] > 0 and data["errors"] == 0
    # The merged series comes from both workers' intervals.
    assert data["stats"]["series"] and data["stats"]["series"][0]["active"] == 10


def test_max_rate_search_reports_no_passing_rate(tmp_path: Path) -> None:
    with DaemonRunner(SlowEcho()) as server:
        code, out = run(
            ECHO_BOT, "--target", str(server.address), "--bots", "2", "--duration", "0.3s",
            "--quiet", "--max-rate-search", "--p99", "10ms", "--rate", "4",
        )  # fmt: skip
    assert code == bots_cli.EXIT_THRESHOLD
    assert "max-rate search: p99 target 10 ms" in out
    assert "no rate kept p99 under the target" in out


def test_every_duration_option_takes_the_one_syntax() -> None:
    words = ["--duration", "500ms", "--connect-timeout", "2m", "--stop-timeout", "1h"]
    args = bots_cli.build_parser().parse_args(
        ["x.py", "--target", "tcp://127.0.0.1:1", *words, "--p99", "30"]
    )
    assert (args.duration, args.connect_timeout, args.stop_timeout, args.p99) == (
        0.5,
        120.0,
        3600.0,
        30.0,
    )


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_a_duration_no_wait_can_last_names_the_setting(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """inf, nan and -1 are numbers: the message names the setting, as run's does."""
    argv = ["x.py", "--target", "tcp://127.0.0.1:1", "--connect-timeout", value]
    assert bots_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "argument --connect-timeout: connect_timeout must be" in err, err


def test_bots_has_version(capsys: pytest.CaptureFixture[str]) -> None:
    from daemonkit import CORE, __version__

    assert bots_cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"daemonkit {__version__} ({CORE} core)\n"


def test_parse_duration() -> None:
    assert bots_cli.parse_duration("30s") == 30.0
    assert bots_cli.parse_duration("2m") == 120.0
    assert bots_cli.parse_duration("500ms") == 0.5
    assert bots_cli.parse_duration("1.5") == 1.5
    with pytest.raises(Exception, match="not a duration"):
        bots_cli.parse_duration("soon")


Runner = Callable[..., tuple[int, str]]


# -- messages, not tracebacks (issue 10, items 4 and 11) -----------------------------

HUGE = "1" + "0" * 308  # 1e308 in the digits the duration syntax takes
OVERFLOW = "9" * 400  # float() makes it inf
TARGET = "tcp://127.0.0.1:1"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--log-level", "bogus"], "argument --log-level: invalid choice: 'bogus'"),
        (["--duration", HUGE], "argument -t/--duration: duration"),
        (["--duration", OVERFLOW], "argument -t/--duration: duration"),
        (["--connect-timeout", HUGE], "argument --connect-timeout: connect_timeout"),
        (["--stop-timeout", HUGE], "argument --stop-timeout: stop_timeout"),
        (["--stop-timeout", OVERFLOW], "argument --stop-timeout: stop_timeout"),
        (["--max-rate-search", "--p99", "0"], "argument --p99: p99 must be more than 0"),
        (["--max-rate-search", "--p99", OVERFLOW], "argument --p99: p99"),
        (["--rate", "inf"], "argument --rate: rate must be a finite number"),
        (["--rate", "nan"], "argument --rate: rate must be"),
        (["--rate", "1e308"], "argument --rate: rate must be at most"),
        (["--spawn-rate", "inf"], "argument -r/--spawn-rate: spawn_rate must be a finite number"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_option(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each was a traceback (log level, p99 0), a hang (rate 1e308) or let through."""
    assert bots_cli.main([ECHO_BOT, "--target", TARGET, *extra], out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("option", ["--json", "--csv", "--html"])
def test_a_report_that_cannot_be_written_is_refused_before_the_run(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not after minutes of load: the directory is checked first (and --max-rate-search too)."""
    missing = str(tmp_path / "missing" / "report")
    for extra in ([], ["--max-rate-search", "--p99", "10ms"]):
        argv = [ECHO_BOT, "--target", TARGET, "--duration", "0.2s", option, missing, *extra]
        assert bots_cli.main(argv, out=io.StringIO()) == bots_cli.EXIT_CONFIG
        err = capsys.readouterr().err
        assert f"{option} {missing}: the directory {tmp_path / 'missing'} does not exist" in err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_short_flags_are_locusts() -> None:
    args = bots_cli.build_parser().parse_args(
        ["x.py", "-H", "tcp://127.0.0.1:1", "-u", "50", "-r", "10", "-t", "30s"]
    )
    assert (args.target, args.bots, args.spawn_rate, args.duration) == (
        "tcp://127.0.0.1:1", 50, 10.0, 30.0
    )  # fmt: skip
    help_text = bots_cli.build_parser().format_help()
    for flag in (
        "-H ENDPOINT, --target",
        "-u N, --bots",
        "-r N, --spawn-rate",
        "-t TIME, --duration",
    ):
        assert flag in help_text
