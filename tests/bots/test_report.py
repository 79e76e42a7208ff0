"""The end-of-run summary and the JSON, CSV and HTML reports agree with the histograms."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from daemonkit.bots.histogram import RELATIVE_PRECISION
from daemonkit.bots.report import format_seconds, format_summary, write_csv, write_html, write_json
from daemonkit.bots.result import RunResult, ServerMemory
from daemonkit.bots.stats import Stats

HOSTILE_TARGET = 'tcp://<script>alert("t")</script>:7000'
HOSTILE_BOT = "Evil&Bot<b>"
HOSTILE_KIND = "<script>alert(1)</script>"


def uniform_stats(seconds: int = 5) -> Stats:
    """echo: 1..1000 ms once each over ``seconds`` intervals; login: 100 x 5 ms; some errors."""
    stats = Stats()
    per = 1000 // seconds
    for second in range(seconds):
        for i in range(second * per + 1, (second + 1) * per + 1):
            stats.record("echo", i / 1000)
        for _ in range(100 // seconds):
            stats.record("login", 0.005)
        stats.fail("echo", "timeout")
        stats.roll(float(second + 1), 1.0, 10 * (second + 1))
    stats.fail("echo", HOSTILE_KIND)
    for _ in range(50):
        stats.connected(0.002)
    stats.connect_failed("ConnectionRefusedError")
    return stats


def make_result(stats: Stats | None = None, **kwargs: object) -> RunResult:
    fields: dict[str, object] = {
        "target": "tcp://127.0.0.1:7000",
        "bot": "EchoBot",
        "bots": 50,
        "duration": 5.0,
        "elapsed": 5.0,
        "stats": uniform_stats() if stats is None else stats,
        "peak_connected": 50,
    }
    fields.update(kwargs)
    return RunResult(**fields)  # type: ignore[arg-type]


def row_of(summary: str, name: str) -> list[str]:
    """The cells of the table row named ``name`` in a text summary."""
    rows = [line.split() for line in summary.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1, summary
    return rows[0]


# -- format_seconds -------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0us"),
        (1e-6, "1us"),
        (850e-6, "850us"),
        (0.0009996, "1.00ms"),
        (0.00123, "1.23ms"),
        (0.0013, "1.30ms"),
        (0.0123, "12.3ms"),
        (0.123, "123ms"),
        (0.9996, "1.00s"),
        (1.5, "1.50s"),
        (12.34, "12.3s"),
        (1234.4, "1,234s"),
        (-0.002, "-2.00ms"),
    ],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


# -- the text summary -----------------------------------------------------------


def test_summary_rows_agree_with_the_histograms() -> None:
    result = make_result()
    summary = format_summary(result)
    echo = result.stats.operations["echo"].latency
    assert abs(echo.percentile(50) - 0.5) <= 0.5 * RELATIVE_PRECISION + 0.001
    assert abs(echo.percentile(99) - 0.99) <= 0.99 * RELATIVE_PRECISION + 0.001

    cells = row_of(summary, "echo")
    assert cells == [
        "echo",
        "1,000",
        "200",
        *(format_seconds(echo.percentile(p)) for p in (50, 90, 99, 99.9)),
        format_seconds(echo.max),
        "6",
    ]
    assert cells[3] == "502ms" and cells[7] == "1.00s"
    assert row_of(summary, "login")[1:] == ["100", "20.0", *["5.00ms"] * 5, "0"]
    total = result.stats.latency()
    assert row_of(summary, "total")[1:] == [
        "1,100",
        "220",
        *(format_seconds(total.percentile(p)) for p in (50, 90, 99, 99.9)),
        "1.00s",
        "6",
    ]
    assert row_of(summary, "connect")[1:] == ["50", "10.0", *["2.00ms"] * 5, "1"]


def test_summary_header_columns_and_notes() -> None:
    result = make_result(
        server=ServerMemory(pid=1, baseline=42_048_307, peak=54_840_115, connected=10000),
        cpu=[0.25, 0.5, 0.75],
        warnings=["bots process CPU near one core"],
        model="open",
        rate=20.0,
        procs=2,
    )
    lines = format_summary(result).splitlines()
    assert lines[0] == (
        "tcp://127.0.0.1:7000: EchoBot x 50 bots, open model at 20.0 req/s, 2 procs, "
        "5.0s elapsed, 220 req/s"
    )
    assert lines[2].split() == [
        "operation", "count", "req/s", "p50", "p90", "p99", "p99.9", "max", "errors"
    ]  # fmt: skip
    # Columns are aligned: every row of the table has the same width as its header.
    table = lines[2:7]
    assert len({len(line) for line in table}) == 1, table
    assert "errors by kind:" in lines
    kinds = lines[lines.index("errors by kind:") + 1 :][:3]
    assert [k.split()[-1] for k in kinds] == ["5", "1", "1"]
    assert kinds[0].strip().startswith("echo: timeout")
    assert any(HOSTILE_KIND in k for k in kinds)
    assert "daemon RSS 40.1 MiB -> 52.3 MiB with 10000 bots connected: 1.2 KiB per bot" in lines
    assert "bots process CPU: mean 50%, max 75% of one core" in lines
    assert "warning: bots process CPU near one core" in lines
    assert "0.78% (1/128)" in lines[-1]
    assert all(line.isascii() for line in lines if HOSTILE_KIND not in line)


def test_summary_single_operation_has_no_total_and_handles_failures_only() -> None:
    stats = Stats()
    stats.record("echo", 0.001)
    stats.fail("broken", "timeout")
    summary = format_summary(make_result(stats))
    assert row_of(summary, "broken")[1:] == ["0", "0.0", *["-"] * 5, "1"]
    assert "total" in summary  # two operations, even if one only failed
    stats = Stats()
    stats.record("echo", 0.001)
    summary = format_summary(make_result(stats))
    assert not any(line.startswith(("total", "connect")) for line in summary.splitlines())
    assert "errors by kind" not in summary and "daemon RSS" not in summary


def test_summary_of_an_empty_run() -> None:
    summary = format_summary(
        make_result(Stats(), elapsed=0.0, server=ServerMemory(1, 1024, 1024, 0))
    )
    assert "no operations ran" in summary
    assert "0.0 req/s" in summary.splitlines()[0]
    assert "daemon RSS 1.0 KiB -> 1.0 KiB with no bots connected" in summary


# -- JSON ---------------------------------------------------------------------------


def test_json_summary_holds_the_printed_numbers(tmp_path: Path) -> None:
    stats = uniform_stats()
    stats.fail("broken", "reset")
    result = make_result(stats)
    path = tmp_path / "run.json"
    write_json(result, path)
    data = json.loads(path.read_text())
    summary = format_summary(result)

    echo = data["summary"]["operations"]["echo"]
    hist = result.stats.operations["echo"].latency
    assert echo == {
        "count": 1000,
        "rps": 200.0,
        "p50": hist.percentile(50),
        "p90": hist.percentile(90),
        "p99": hist.percentile(99),
        "p99_9": hist.percentile(99.9),
        "max": 1.0,
        "errors": 6,
    }
    for name in ("echo", "login"):
        row = data["summary"]["operations"][name]
        printed = [format_seconds(row[k]) for k in ("p50", "p90", "p99", "p99_9", "max")]
        assert row_of(summary, name)[3:8] == printed
    assert data["summary"]["operations"]["broken"]["p99"] is None
    assert data["summary"]["total"]["count"] == 1100
    assert data["summary"]["connect"]["errors"] == 1
    assert data["target"] == result.target and data["requests"] == 1100
    # The rest is RunResult.to_dict, so the file loads back.
    again = RunResult.from_dict(data)
    assert again.stats.operations["echo"].latency == hist
    assert format_summary(again) == summary


# -- CSV ----------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_csv_files_match_the_table(tmp_path: Path) -> None:
    result = make_result()
    paths = write_csv(result, tmp_path / "run")
    assert [p.name for p in paths] == ["run_stats.csv", "run_history.csv", "run_failures.csv"]

    stats = {row["name"]: row for row in read_csv(paths[0])}
    assert list(stats) == ["echo", "login", "connect", "Aggregated"]
    hist = result.stats.operations["echo"].latency
    echo = stats["echo"]
    assert (echo["count"], echo["failures"], float(echo["rps"])) == ("1000", "6", 200.0)
    for column, p in [("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p99_9_ms", 99.9)]:
        assert float(echo[column]) == pytest.approx(hist.percentile(p) * 1e3, abs=1e-3)
        assert format_seconds(float(echo[column]) / 1e3) == format_seconds(hist.percentile(p))
    assert float(echo["max_ms"]) == 1000.0
    assert float(echo["mean_ms"]) == pytest.approx(500.5)
    assert stats["Aggregated"]["count"] == "1100"
    assert stats["Aggregated"]["failures"] == "6"
    assert stats["connect"]["failures"] == "1"

    history = read_csv(paths[1])
    assert len(history) == len(result.stats.series) == 5
    for row, sample in zip(history, result.stats.series, strict=True):
        assert float(row["t"]) == sample.t
        assert int(row["active"]) == sample.active
        assert int(row["requests"]) == sample.requests == 220
        assert int(row["errors"]) == sample.errors
        assert float(row["p99_ms"]) == pytest.approx(sample.p99 * 1e3, abs=1e-3)

    failures = {(r["operation"], r["kind"]): int(r["count"]) for r in read_csv(paths[2])}
    assert failures == {
        ("connect", "ConnectionRefusedError"): 1,
        ("echo", "timeout"): 5,
        ("echo", HOSTILE_KIND): 1,
    }


def test_csv_leaves_latency_blank_without_successes(tmp_path: Path) -> None:
    stats = Stats()
    stats.fail("echo", "timeout")
    stats.roll(1.0, 1.0, 1)
    paths = write_csv(make_result(stats), tmp_path / "x")
    echo = read_csv(paths[0])[0]
    assert echo["name"] == "echo" and echo["failures"] == "1"
    assert echo["p99_ms"] == "" and echo["mean_ms"] == ""
    assert read_csv(paths[1])[0]["p50_ms"] == ""


# -- HTML ---------------------------------------------------------------------------

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "source"}


class Checker(HTMLParser):
    """Records tags, text and nesting errors of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in VOID:
            self.stack.append(tag)
        self._in_cell = tag in ("td", "th")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()
        self._in_cell = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_cell:
            self.cells.append(data)


def parse_page(path: Path) -> Checker:
    checker = Checker()
    checker.feed(path.read_text(encoding="utf-8"))
    checker.close()
    assert checker.problems == []
    assert checker.stack == []
    return checker


def test_html_is_self_contained_escaped_and_has_the_numbers(tmp_path: Path) -> None:
    result = make_result(
        uniform_stats(),
        target=HOSTILE_TARGET,
        bot=HOSTILE_BOT,
        server=ServerMemory(pid=1, baseline=1 << 20, peak=2 << 20, connected=1024),
        warnings=["<i>careful</i>"],
    )
    path = tmp_path / "run.html"
    write_html(result, path)
    raw = path.read_text(encoding="utf-8")
    page = parse_page(path)

    assert raw.startswith("<!DOCTYPE html>")
    assert page.tags.count("svg") == 3
    assert page.tags.count("polyline") >= 3
    assert "script" not in page.tags and "b" not in page.tags and "i" not in page.tags
    assert "<script>" not in raw and "<b>" not in raw
    assert not any(name in ("src", "href") for name, _ in page.attrs)
    assert "http://" not in raw.replace('xmlns="http://www.w3.org/2000/svg"', "")
    text = "".join(page.text)
    for hostile in (HOSTILE_TARGET, HOSTILE_BOT, HOSTILE_KIND, "<i>careful</i>"):
        assert hostile in text
    hist = result.stats.operations["echo"].latency
    for p in (50, 90, 99, 99.9):
        assert format_seconds(hist.percentile(p)) in page.cells
    assert "1,000" in page.cells and "echo: timeout" in page.cells
    assert "daemon RSS 1.0 MiB -> 2.0 MiB with 1024 bots connected: 1.0 KiB per bot" in text
    for legend in ("req/s", "errors/s", "p50", "p90", "p99", "active bots", "run time (s)"):
        assert legend in text
    assert "no data" not in text


def test_html_copes_with_no_series_and_a_single_point(tmp_path: Path) -> None:
    path = tmp_path / "empty.html"
    write_html(make_result(Stats(), elapsed=0.0), path)
    page = parse_page(path)
    assert page.tags.count("svg") == 3
    assert "".join(page.text).count("no data") == 3
    assert "polyline" not in page.tags

    stats = Stats()
    stats.record("echo", 0.004)
    stats.roll(1.0, 1.0, 3)
    path = tmp_path / "one.html"
    write_html(make_result(stats), path)
    page = parse_page(path)
    assert page.tags.count("svg") == 3
    assert "polyline" not in page.tags
    assert page.tags.count("circle") == 6  # req/s, errors/s, p50, p90, p99, active
    assert "no data" not in "".join(page.text)


def test_html_latency_chart_breaks_where_nothing_succeeded(tmp_path: Path) -> None:
    stats = Stats()
    for second in range(1, 6):
        if second != 3:
            stats.record("echo", second / 1000)
        else:
            stats.fail("echo", "timeout")
        stats.roll(float(second), 1.0, 1)
    path = tmp_path / "gap.html"
    write_html(make_result(stats), path)
    raw = path.read_text(encoding="utf-8")
    latency = raw[raw.index("<h2>Latency (ms)</h2>") : raw.index("<h2>Active bots</h2>")]
    assert latency.count("<polyline") == 6  # p50, p90, p99: two runs each around second 3
    ticks = [line for line in latency.splitlines() if 'text-anchor="end"' in line]
    assert [t.split(">")[1].split("<")[0] for t in ticks] == ["0", "1", "2", "3", "4", "5"]


def tick_labels(svg: str) -> list[str]:
    """The x-axis tick labels of one chart (the text under the plot, centred)."""
    import re

    return re.findall(r'<text x="[\d.]+" y="[\d.]+" text-anchor="middle">([\d.,]+)</text>', svg)


def test_html_axes_end_at_the_runs_end(tmp_path: Path) -> None:
    # A 10 s run's samples, 1..10 s and the last, partial one at 10.05 s: the
    # axis used to run on to the next "nice" tick, 12.5 s; it must end at the
    # run's end, with no tick past it.
    stats = Stats()
    for t in [*range(1, 11), 10.05]:
        stats.record("echo", 0.001)
        stats.roll(float(t), 1.0, 5)
    path = tmp_path / "r.html"
    write_html(make_result(stats, duration=10.0, elapsed=10.05), path)
    page = path.read_text()
    charts = page.split("<svg")[1:]
    assert len(charts) == 3
    for chart in charts:
        labels = [float(label) for label in tick_labels(chart)]
        assert labels and max(labels) <= 10.05 and labels[-1] >= 7.5, labels
        # The last point is drawn at the plot's right edge (x = 960 - 20).
        assert ",".join(["940.0", ""]) in chart or 'cx="940.0"' in chart


def test_html_shows_the_command_line_spawn_rate_and_verdicts(tmp_path: Path) -> None:
    result = make_result(
        spawn_rate=25.0,
        command="daemonkit bots echo_bot.py -H tcp://127.0.0.1:7000 --fail-if 'p99>50ms'",
        verdicts=["ok p99>50ms: actual 3.2ms", "FAIL errors>0: actual 2"],
    )
    path = tmp_path / "r.html"
    write_html(result, path)
    page = path.read_text()
    command = "daemonkit bots echo_bot.py -H tcp://127.0.0.1:7000 --fail-if &#x27;p99&gt;50ms&#x27;"
    assert command in page
    assert "spawn rate" in page and "25.0 bots/s" in page
    assert "ok p99&gt;50ms: actual 3.2ms" in page
    assert "FAIL errors&gt;0: actual 2" in page
    restored = RunResult.from_dict(result.to_dict())
    assert (restored.spawn_rate, restored.command, restored.verdicts) == (
        result.spawn_rate, result.command, result.verdicts
    )  # fmt: skip


SATURATED = (
    "the bots process is at 97% CPU: its figures measure the load generator, not the daemon; "
    "spread the bots with --procs N"
)


def test_the_summary_says_each_warning_once() -> None:
    result = make_result(cpu=[0.97, 0.99], saturated=True, warnings=[SATURATED])
    text = format_summary(result)
    assert text.count("load generator") == 1
    assert "(saturated)" in text
    # A warning the live display already showed is not printed again.
    assert "load generator" not in format_summary(result, shown=[SATURATED])
    # Saturated with no warning (a short run): the CPU line explains it.
    assert (
        format_summary(make_result(cpu=[0.97, 0.99], saturated=True)).count("load generator") == 1
    )


def test_procs_merge_the_workers_same_warnings() -> None:
    from daemonkit.bots.procs import merge_warnings

    merged = merge_warnings(
        [[SATURATED, "3 of 10 bots could not connect"], [SATURATED.replace("97", "95")]]
    )
    assert merged == [
        "workers 0, 1: " + SATURATED,
        "worker 0: 3 of 10 bots could not connect",
    ]
