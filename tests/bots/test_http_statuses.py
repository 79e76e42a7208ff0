"""HTTP responses counted by status code: 2xx and 3xx as well as failures, in every report.

Against the project's http_hello (200, 404) and the stdlib's http.server (301),
in one process and merged over ``--procs`` workers.
"""

from __future__ import annotations

import csv
import http.server
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit.bots import BotRunner, HttpBot, RunResult
from daemonkit.bots.report import format_summary, write_csv, write_html, write_json
from daemonkit.bots.stats import Stats
from daemonkit.cli import bots as bots_cli
from daemonkit.testing import DaemonRunner
from tests.helpers import load_example, serve_stdlib_http

http_hello = load_example("http_hello")

BOT_FILE = """
from daemonkit.bots import HttpBot


class Pages(HttpBot):
    async def script(self):
        for _ in range(3):
            await self.get("/")
            await self.get("/nowhere")
"""


@pytest.fixture
def hello() -> Iterator[str]:
    with DaemonRunner(http_hello.HelloDaemon(listen="http://127.0.0.1:0")) as d:
        yield str(d.address)


class Moved(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(301 if self.path == "/old" else 200)
        if self.path == "/old":
            self.send_header("Location", "/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stdlib() -> Iterator[str]:
    yield from serve_stdlib_http(Moved)


class Pages(HttpBot):
    async def script(self) -> None:
        for _ in range(3):
            await self.get("/")
            await self.get("/nowhere")


class Redirected(HttpBot):
    async def script(self) -> None:
        for _ in range(2):
            resp = await self.get("/old")
            assert resp.status == 301 and resp.header("location") == "/"
            await self.get("/")


def run(bot: type[HttpBot], target: str, bots: int = 2) -> RunResult:
    return BotRunner(bot, target, bots=bots, duration=0.6, stop_timeout=1.0).run()


def test_every_response_is_counted_by_its_status(hello: str) -> None:
    result = run(Pages, hello)
    ops = result.stats.operations
    assert ops["/"].statuses == {200: 6} and ops["/"].count == 6
    # The 404s are failures and are counted by code as well.
    assert ops["/nowhere"].statuses == {404: 6} and ops["/nowhere"].errors == {"HTTP 404": 6}
    assert result.stats.statuses() == {200: 6, 404: 6}


def test_a_redirect_is_a_success_with_its_own_code(stdlib: str) -> None:
    result = run(Redirected, stdlib, bots=1)
    ops = result.stats.operations
    assert ops["/old"].statuses == {301: 2} and ops["/old"].count == 2
    assert not ops["/old"].errors and ops["/"].statuses == {200: 2}


def _result() -> RunResult:
    stats = Stats()
    for _ in range(3):
        stats.record("/", 0.001)
        stats.status("/", 200)
    stats.fail("/", "HTTP 503")
    stats.status("/", 503)
    stats.record("/login", 0.002)
    stats.status("/login", 302)
    stats.record("tcp-op", 0.001)  # no status: not an HTTP operation
    return RunResult("http://127.0.0.1:1", "Pages", 2, 1.0, 1.0, stats)


def test_the_summary_lists_the_codes_per_operation() -> None:
    text = format_summary(_result())
    block = text.split("HTTP status codes:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split() for line in block] == [
        ["/", "200", "3"],
        ["/", "503", "1"],
        ["/login", "302", "1"],
    ]


def test_json_csv_and_html_have_the_codes(tmp_path: Path) -> None:
    result = _result()
    write_json(result, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["summary"]["statuses"] == {"/": {"200": 3, "503": 1}, "/login": {"302": 1}}
    # The raw stats keep them too, and read back.
    back = RunResult.from_dict(data)
    assert back.stats.operations["/"].statuses == {200: 3, 503: 1}

    paths = write_csv(result, tmp_path / "r")
    assert [p.name for p in paths][-1] == "r_statuses.csv"
    with (tmp_path / "r_statuses.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["operation", "status", "count"],
        ["/", "200", "3"],
        ["/", "503", "1"],
        ["/login", "302", "1"],
    ]

    write_html(result, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "<h2>HTTP status codes</h2>" in page and "<td>/login</td>" in page


def test_a_run_without_http_writes_no_status_file(tmp_path: Path) -> None:
    stats = Stats()
    stats.record("echo", 0.001)
    result = RunResult("tcp://127.0.0.1:1", "EchoBot", 1, 1.0, 1.0, stats)
    assert len(write_csv(result, tmp_path / "r")) == 3
    assert "HTTP status codes" not in format_summary(result)


def test_workers_codes_add_up() -> None:
    a, b = Stats(), Stats()
    a.status("/", 200)
    b.status("/", 200)
    b.status("/", 404)
    merged = Stats()
    for part in (a, b):
        merged.merge(Stats.from_dict(json.loads(json.dumps(part.to_dict()))))
    assert merged.operations["/"].statuses == {200: 2, 404: 1}


@pytest.mark.slow
def test_procs_merge_the_codes_of_every_worker(hello: str, tmp_path: Path) -> None:
    botfile = tmp_path / "pages.py"
    botfile.write_text(BOT_FILE)
    out = io.StringIO()
    code = bots_cli.main(
        [str(botfile), "-H", hello, "-u", "4", "-t", "1s", "--quiet", "--procs", "2",
         "--allow-failures", "--json", str(tmp_path / "r.json")],
        out=out,
    )  # fmt: skip
    assert code == 0, out.getvalue()
    data = json.loads((tmp_path / "r.json").read_text())
    # Four bots over two processes, three of each page per bot.
    assert data["summary"]["statuses"] == {"/": {"200": 12}, "/nowhere": {"404": 12}}
    assert "HTTP status codes:" in out.getvalue()
