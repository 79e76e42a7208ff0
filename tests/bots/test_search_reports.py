"""``--max-rate-search`` writes every report asked for and honours --procs and --fail-if."""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit import Connection, Daemon, Lines
from daemonkit.bots.result import RunResult
from daemonkit.bots.search import search_max_rate
from daemonkit.bots.stats import Stats
from daemonkit.cli import bots as bots_cli
from daemonkit.testing import DaemonRunner
from tests.helpers import ROOT

ECHO_BOT = str(ROOT / "examples" / "echo_bot.py")


class LineEcho(Daemon):
    listen = "tcp://127.0.0.1:0"
    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line)


@pytest.fixture
def echo() -> Iterator[str]:
    with DaemonRunner(LineEcho()) as server:
        yield str(server.address)


def test_the_search_writes_a_report_per_step_and_a_summary(echo: str, tmp_path: Path) -> None:
    out = io.StringIO()
    # A step passes only if its bots delivered 95 % of its rate, and the
    # requests due before the bots have connected are lost: each step lasts a
    # whole second and starts at 20/s, so a connect may take 100 ms on a busy
    # machine. Step 2 (40/s) is failed by --fail-if even with a quarter of its
    # requests lost, so the check is always seen to fail a step.
    code = bots_cli.main(
        [ECHO_BOT, "--target", echo, "--bots", "2", "--duration", "1s", "--quiet",
         "--max-rate-search", "--p99", "1s", "--rate", "20",
         # A step fails once it makes more than 30 requests: above ~30/s.
         "--fail-if", "requests>30",
         "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r"),
         "--html", str(tmp_path / "r.html")],
        out=out,
    )  # fmt: skip
    text = out.getvalue()
    assert code == 0, text
    data = json.loads((tmp_path / "r.json").read_text())
    trials = data["trials"]
    assert 3 <= len(trials) <= 14
    # --fail-if judged every step: the rates with more than 40 requests failed by it.
    assert trials[0]["passed"] and not all(t["passed"] for t in trials)
    # (A step may also fail by delivering under 95 % of its rate on a busy machine.)
    assert any("FAIL requests>30" in " ".join(t["violations"]) for t in trials)
    assert all(not t["violations"] for t in trials if t["passed"])
    assert data["best_rate"] < 35
    # One set of reports per step, named after it, listed in the summary.
    for i, trial in enumerate(trials, 1):
        stem = f"r_step{i}_{trial['rate']:.0f}"
        assert trial["reports"] == [
            str(tmp_path / f"{stem}.json"),
            *(str(tmp_path / f"{stem}_{k}.csv") for k in ("stats", "history", "failures")),
            str(tmp_path / f"{stem}.html"),
        ]
        step = json.loads((tmp_path / f"{stem}.json").read_text())
        assert step["rate"] == trial["rate"]
        assert (tmp_path / f"{stem}.html").read_text().startswith("<!DOCTYPE html>")
    # The summary: a CSV row per step and an HTML page with the rate/p99 curve.
    with open(tmp_path / "r_search.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["rate"]) for r in rows] == [t["rate"] for t in trials]
    page = (tmp_path / "r.html").read_text()
    assert "p99 against the rate" in page and "<polyline" in page
    assert f"wrote {tmp_path / 'r.html'}" in text


def test_the_search_runs_each_step_over_procs(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, float]] = []

    def fake_run_procs(args: argparse.Namespace, argv: list[str], **_: object) -> RunResult:
        seen.append((args.procs, args.rate))
        stats = Stats()
        for _ in range(int(args.rate)):
            stats.record("echo", 0.001)
        return RunResult("tcp://127.0.0.1:1", "EchoBot", 4, 1.0, 1.0, stats, procs=args.procs)

    monkeypatch.setattr(bots_cli, "run_procs", fake_run_procs)
    code = bots_cli.main(
        [ECHO_BOT, "--target", "tcp://127.0.0.1:1", "--bots", "4", "--procs", "2",
         "--duration", "1s", "--quiet", "--max-rate-search", "--p99", "10ms", "--rate", "100",
         "--fail-if", "rps>300"],
        out=io.StringIO(),
    )  # fmt: skip
    assert code == 0
    assert seen[:3] == [(2, 100.0), (2, 200.0), (2, 400.0)]


def test_a_check_fails_a_step() -> None:
    def trial(rate: float) -> RunResult:
        stats = Stats()
        for _ in range(int(rate)):
            stats.record("echo", 0.001)
        return RunResult("tcp://x:1", "B", 1, 1.0, 1.0, stats)

    def check(run: RunResult) -> list[str]:
        return ["FAIL rps>300"] if run.rps > 300 else []

    result = search_max_rate(trial, p99=0.01, start=100, check=check)
    best = result.best
    assert best is not None and 270 <= best.rate <= 300
    assert result.trials[2].violations == ("FAIL rps>300",)
