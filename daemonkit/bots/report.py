"""Report: what a finished bots run prints and writes.

* :func:`format_summary` is the plain-text summary shown at the end of a run
  (ASCII only, aligned columns, fit for CI logs).
* :func:`write_json` writes :meth:`RunResult.to_dict` plus a ``"summary"``
  holding the very numbers the text table prints, in seconds.
* :func:`write_csv` writes Locust-style ``_stats``, ``_history`` and
  ``_failures`` CSV files, and ``_statuses`` when HTTP responses were counted.
* :func:`write_html` writes one self-contained HTML page whose charts are
  inline SVG drawn here, so it opens anywhere with no network.
* :func:`write_search_csv` and :func:`write_search_html` write the summary
  of a ``--max-rate-search``: one row per step, and the curve of p99
  against the rate.

Every table (text, JSON, CSV, HTML) comes from the same rows: one per
request operation, a ``total`` over the requests, one per custom measure
(``record()``, and failures counted outside a request such as a dropped
``connection``: neither is in the total), and ``connect`` read from
``stats.connect``. Latency figures are read from the
histograms, so they are within :data:`RELATIVE_PRECISION` of the truth.
HTTP responses are also counted by status code per operation (2xx and 3xx
as well as the failing ones), in every report.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemonkit.bots.histogram import RELATIVE_PRECISION, Histogram
from daemonkit.bots.result import RunResult
from daemonkit.bots.search import SearchResult
from daemonkit.bots.stats import Sample

__all__ = [
    "format_seconds",
    "format_summary",
    "write_csv",
    "write_html",
    "write_json",
    "write_search_csv",
    "write_search_html",
]

_COLUMNS = ("operation", "count", "req/s", "p50", "p90", "p99", "p99.9", "max", "errors")


# -- number formatting -------------------------------------------------------


def _three_digits(value: float) -> str:
    """``value`` to three significant digits, trailing zeros kept (1.30, 12.0, 123)."""
    value = float(f"{value:.3g}")
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def format_seconds(seconds: float) -> str:
    """A latency for people: ``850us`` below 1 ms, else ``1.23ms``, ``12.0ms``, ``1.50s``.

    Microseconds are whole; milliseconds and seconds keep three significant
    digits (the histogram is only good to 0.8 % anyway).
    """
    if seconds < 0:
        return "-" + format_seconds(-seconds)
    us = round(seconds * 1e6)
    if us < 1000:
        return f"{us}us"
    ms = seconds * 1e3
    if float(f"{ms:.3g}") < 1000:
        return _three_digits(ms) + "ms"
    if seconds >= 1000:
        return f"{seconds:,.0f}s"
    return _three_digits(seconds) + "s"


def _format_rate(rate: float) -> str:
    """Operations per second: one decimal below 100, whole with separators above."""
    return f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"


def _format_bytes(n: float) -> str:
    """Bytes in binary units: ``512 B``, ``1.2 KiB``, ``40.1 MiB``."""
    if n < 1024:
        return f"{n:.0f} B"
    units = ["KiB", "MiB", "GiB"]
    n /= 1024
    while n >= 1024 and len(units) > 1:
        n /= 1024
        units.pop(0)
    return f"{n:.1f} {units[0]}"


def _precision_note() -> str:
    return (
        f"latencies are read from histograms and are within {RELATIVE_PRECISION:.2%} "
        f"(1/{round(1 / RELATIVE_PRECISION)}) of the measured value; max is exact"
    )


# -- the rows every report shares ---------------------------------------------


@dataclass(frozen=True)
class _Row:
    """One line of the summary table; latencies in seconds (0.0 when count is 0)."""

    name: str
    count: int
    errors: int
    rps: float
    p50: float
    p90: float
    p99: float
    p99_9: float
    max: float
    mean: float

    @classmethod
    def of(cls, name: str, latency: Histogram, errors: int, elapsed: float) -> _Row:
        return cls(
            name=name,
            count=latency.count,
            errors=errors,
            rps=latency.count / elapsed if elapsed > 0 else 0.0,
            p50=latency.percentile(50),
            p90=latency.percentile(90),
            p99=latency.percentile(99),
            p99_9=latency.percentile(99.9),
            max=latency.max,
            mean=latency.mean,
        )

    def latencies(self) -> tuple[float, float, float, float, float]:
        return (self.p50, self.p90, self.p99, self.p99_9, self.max)

    def cells(self) -> list[str]:
        """The row as the text and HTML tables show it."""
        lat = [format_seconds(v) if self.count else "-" for v in self.latencies()]
        return [self.name, f"{self.count:,}", _format_rate(self.rps), *lat, f"{self.errors:,}"]

    def summary(self) -> dict[str, Any]:
        """The row for JSON: seconds, ``None`` for latencies when nothing succeeded."""
        out: dict[str, Any] = {"count": self.count, "rps": self.rps}
        keys = ("p50", "p90", "p99", "p99_9", "max")
        out.update(
            {k: (v if self.count else None) for k, v in zip(keys, self.latencies(), strict=True)}
        )
        out["errors"] = self.errors
        return out

    def csv_cells(self) -> list[str]:
        """The row for ``_stats.csv``: milliseconds, empty when nothing succeeded."""
        ms = [_ms(v) if self.count else "" for v in (*self.latencies(), self.mean)]
        return [self.name, str(self.count), str(self.errors), f"{self.rps:.3f}", *ms]


@dataclass(frozen=True)
class _Table:
    operations: list[_Row]  # the request operations
    total: _Row  # over the requests only
    measures: list[_Row]  # custom measures, not requests
    connect: _Row | None  # None when the run made no connects at all

    def rows(self) -> list[_Row]:
        """The rows to display: requests, total when there are several, measures, connect."""
        rows = list(self.operations)
        if len(rows) > 1:
            rows.append(self.total)
        rows += self.measures
        if self.connect is not None:
            rows.append(self.connect)
        return rows


def _table(result: RunResult) -> _Table:
    stats, elapsed = result.stats, result.elapsed
    ops: list[_Row] = []
    measures: list[_Row] = []
    for op in stats.operations.values():
        row = _Row.of(op.name, op.latency, op.failures, elapsed)
        (measures if op.measure else ops).append(row)
    total = _Row.of("total", stats.latency(), sum(r.errors for r in ops), elapsed)
    connect_errors = sum(stats.connect_errors.values())
    connect = None
    if stats.connect.count or connect_errors:
        connect = _Row.of("connect", stats.connect, connect_errors, elapsed)
    return _Table(ops, total, measures, connect)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


# -- text -----------------------------------------------------------------------


def _header(result: RunResult) -> str:
    model = f"{result.model} model"
    if result.rate is not None:
        model += f" at {_format_rate(result.rate)} req/s"
    if len(result.classes) > 1:
        mix = ", ".join(f"{name} x {n:,}" for name, n in result.classes.items())
        parts = [f"{mix} ({result.bots:,} bots)", model]
    else:
        parts = [f"{result.bot} x {result.bots:,} bots", model]
    if result.procs > 1:
        parts.append(f"{result.procs} procs")
    parts.append(f"{result.elapsed:.1f}s elapsed")
    parts.append(f"{_format_rate(result.rps)} req/s")
    return f"{result.target}: " + ", ".join(parts)


def _align(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-align the first column, right-align the rest, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _server_line(result: RunResult) -> str | None:
    server = result.server
    if server is None:
        return None
    line = f"daemon RSS {_format_bytes(server.baseline)} -> {_format_bytes(server.peak)}"
    per_bot = server.per_bot
    if per_bot is None:
        return line + " with no bots connected"
    return line + f" with {server.connected} bots connected: {_format_bytes(per_bot)} per bot"


def _connections_line(result: RunResult) -> str | None:
    """Drops, reconnects and time disconnected; None when no connection dropped."""
    stats = result.stats
    if not stats.drops:
        return None
    line = f"connections: {stats.drops:,} dropped, {stats.reconnects:,} reconnected"
    failed = stats.reconnect_errors
    if failed:
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(failed.items(), key=lambda kv: -kv[1]))
        line += f" ({sum(failed.values()):,} failed attempts: {kinds})"
    outages = stats.outages
    if outages.count:
        line += (
            f"; disconnected {format_seconds(outages.mean * outages.count)} in all, "
            f"per drop mean {format_seconds(outages.mean)}, max {format_seconds(outages.max)}"
        )
    return line


def _cpu_line(result: RunResult) -> str | None:
    if not result.cpu:
        return None
    mean = sum(result.cpu) / len(result.cpu)
    line = f"bots process CPU: mean {mean:.0%}, max {max(result.cpu):.0%} of one core"
    if result.saturated:
        # Said once: a warning says it already when the runner saw it live.
        if any("load generator" in w for w in result.warnings):
            line += " (saturated)"
        else:
            line += " (saturated: the figures measure the load generator, not the daemon)"
    return line


def _errors_by_kind(result: RunResult) -> list[tuple[str, int]]:
    return sorted(result.stats.errors_by_kind().items(), key=lambda kv: (-kv[1], kv[0]))


def _status_rows(result: RunResult) -> list[tuple[str, int, int]]:
    """(operation, status code, responses), operations in table order, codes ascending."""
    return [
        (op.name, code, n)
        for op in result.stats.operations.values()
        for code, n in sorted(op.statuses.items())
    ]


def format_summary(result: RunResult, *, shown: Collection[str] = ()) -> str:
    """The plain-text summary of a finished run, ending in a newline.

    Warnings in ``shown`` were printed by the live display already and are
    not repeated.

    A header line, the table (one row per operation, ``total`` when there
    are several, measures, ``connect``), errors by kind, the HTTP responses
    by operation and status code, dropped connections
    and reconnects, the daemon's memory, the bots process's CPU, every
    warning and a note on the histogram precision.
    """
    table = _table(result)
    lines = [_header(result), ""]
    rows = table.rows()
    if rows:
        lines += _align([list(_COLUMNS), *(row.cells() for row in rows)])
    else:
        lines.append("no operations ran")
    errors = _errors_by_kind(result)
    if errors:
        lines += ["", "errors by kind:"]
        lines += ["  " + line for line in _align([[k, f"{n:,}"] for k, n in errors])]
    statuses = _status_rows(result)
    if statuses:
        lines += ["", "HTTP status codes:"]
        cells = [[name, str(code), f"{n:,}"] for name, code, n in statuses]
        lines += ["  " + line for line in _align(cells)]
    extra = [_connections_line(result), _server_line(result), _cpu_line(result)]
    extra += [f"warning: {w}" for w in result.warnings if w not in shown]
    if any(extra):
        lines.append("")
        lines += [line for line in extra if line]
    lines += ["", _precision_note()]
    return "\n".join(lines) + "\n"


# -- JSON and CSV -----------------------------------------------------------------


def write_json(result: RunResult, path: str | Path) -> None:
    """Write ``result.to_dict()`` to ``path`` with a ``"summary"`` of the printed table.

    ``summary`` is ``{"operations": {name: row}, "total": row, "measures":
    {name: row}, "connect": row or null, "statuses": {name: {code: n}}}``
    (operations are the requests, and the total is over them only); each row
    has ``count``, ``rps``, ``p50``, ``p90``, ``p99``, ``p99_9``, ``max``
    (seconds; null when nothing succeeded) and ``errors``; ``statuses``
    counts the HTTP responses of each operation by status code (a string,
    as JSON keys are), successes and failures alike.
    """
    table = _table(result)
    data = result.to_dict()
    data["summary"] = {
        "operations": {row.name: row.summary() for row in table.operations},
        "total": table.total.summary(),
        "measures": {row.name: row.summary() for row in table.measures},
        "connect": table.connect.summary() if table.connect is not None else None,
        "statuses": _statuses_json(result),
    }
    with Path(path).open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _statuses_json(result: RunResult) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, code, n in _status_rows(result):
        out.setdefault(name, {})[str(code)] = n
    return out


def write_csv(result: RunResult, prefix: str | Path) -> list[Path]:
    """Write ``{prefix}_stats.csv``, ``{prefix}_history.csv``, ``{prefix}_failures.csv``.

    Stats: one row per operation, ``connect`` (if any) and ``Aggregated``
    (the requests: no custom measures, no connects); latencies in milliseconds, empty where
    nothing succeeded. History: one row per second of the run. Failures:
    one row per (operation, kind), connects as operation ``connect``.
    When HTTP responses were counted, also ``{prefix}_statuses.csv``: one
    row per (operation, status code) with its count of responses.
    Returns the paths written.
    """
    table = _table(result)
    paths = [Path(f"{prefix}_{name}.csv") for name in ("stats", "history", "failures")]
    stats_head = ["name", "count", "failures", "rps", "p50_ms", "p90_ms", "p99_ms"]
    stats_head += ["p99_9_ms", "max_ms", "mean_ms"]
    rows = [*table.operations, *table.measures]
    if table.connect is not None:
        rows.append(table.connect)
    stats_rows = [row.csv_cells() for row in rows]
    aggregated = table.total.csv_cells()
    stats_rows.append(["Aggregated", *aggregated[1:]])

    history_head = ["t", "active", "requests", "errors", "rps", "p50_ms", "p90_ms", "p99_ms"]
    history_head.append("max_ms")
    history_rows = [
        [f"{s.t:g}", str(s.active), str(s.requests), str(s.errors), f"{s.rps:.3f}"]
        + [_ms(v) if s.requests else "" for v in (s.p50, s.p90, s.p99, s.max)]
        for s in result.stats.series
    ]

    failures = [["connect", k, str(n)] for k, n in result.stats.connect_errors.items()]
    for op in result.stats.operations.values():
        failures += [[op.name, k, str(n)] for k, n in op.errors.items()]

    contents = [
        (stats_head, stats_rows),
        (history_head, history_rows),
        (["operation", "kind", "count"], failures),
    ]
    statuses = _status_rows(result)
    if statuses:
        paths.append(Path(f"{prefix}_statuses.csv"))
        rows_out = [[name, str(code), str(n)] for name, code, n in statuses]
        contents.append((["operation", "status", "count"], rows_out))
    for path, (head, body) in zip(paths, contents, strict=True):
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(head)
            writer.writerows(body)
    return paths


# -- HTML and SVG -----------------------------------------------------------------

_W, _H = 960, 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 34, 40
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e")

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1000px; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.4em; word-break: break-all; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .2em .7em; border-bottom: 1px solid #ddd; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; }
svg { width: 100%; height: auto; background: #fcfcfc; border: 1px solid #e5e5e5; }
svg text { font: 12px system-ui, sans-serif; fill: #444; }
.warning { color: #a40; } .note { color: #777; font-size: .9em; }
"""


def _nice_step(span: float, n: int = 5) -> float:
    """A step of 1, 2, 2.5 or 5 times a power of ten giving about ``n`` ticks over ``span``."""
    raw = span / n
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0):
        if m * magnitude >= raw:
            return m * magnitude
    return 10 * magnitude


def _ticks(hi: float) -> list[float]:
    """Ticks from 0 to at least ``hi`` (> 0), ending on a tick."""
    step = _nice_step(hi)
    count = math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(count + 1)]


def _tick_label(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:.3g}"


def _segments(x: Sequence[float], ys: Sequence[float | None]) -> list[list[tuple[float, float]]]:
    """The runs of consecutive points that have a value (``None`` breaks the line)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for a, b in zip(x, ys, strict=True):
        if b is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((a, b))
    return [run for run in runs if run]


def _svg_chart(
    x: Sequence[float],
    lines: Sequence[tuple[str, Sequence[float | None]]],
    x_label: str,
    *,
    x_end: float | None = None,
) -> str:
    """A line chart as inline SVG: axes with tick labels, grid, legend; "no data" if empty.

    A ``None`` value leaves a gap; a point with no neighbour is drawn as a dot.
    With ``x_end`` (a run's end) the x axis ends there, or at the last point
    if that is later, with no tick beyond; else at the tick after the last point.
    """
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" role="img">']
    frame = f'<rect x="{_LEFT}" y="{_TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>'
    if not x:
        out.append(frame)
        out.append(
            f'<text x="{_LEFT + pw / 2}" y="{_TOP + ph / 2}" text-anchor="middle">no data</text>'
        )
        out.append("</svg>")
        return "\n".join(out)
    if x_end is None:
        x_ticks = _ticks(max(max(x), 1e-9))
        x_hi = x_ticks[-1]
    else:
        x_hi = max(x_end, max(x), 1e-9)
        x_ticks = [t for t in _ticks(x_hi) if t <= x_hi * (1 + 1e-9)]
    y_max = max((y for _, ys in lines for y in ys if y is not None), default=0.0)
    y_ticks = _ticks(y_max if y_max > 0 else 1.0)
    y_hi = y_ticks[-1]

    def px(v: float) -> float:
        return round(_LEFT + v / x_hi * pw, 1)

    def py(v: float) -> float:
        return round(_TOP + ph - v / y_hi * ph, 1)

    for t in y_ticks:
        y = py(t)
        out.append(f'<line x1="{_LEFT}" y1="{y}" x2="{_LEFT + pw}" y2="{y}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y + 4}" text-anchor="end">{_tick_label(t)}</text>')
    for t in x_ticks:
        x0 = px(t)
        out.append(
            f'<line x1="{x0}" y1="{_TOP + ph}" x2="{x0}" y2="{_TOP + ph + 5}" stroke="#999"/>'
        )
        out.append(
            f'<text x="{x0}" y="{_TOP + ph + 18}" text-anchor="middle">{_tick_label(t)}</text>'
        )
    out.append(frame)
    out.append(
        f'<text x="{_LEFT + pw / 2}" y="{_H - 4}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
    )
    for i, (label, ys) in enumerate(lines):
        color = _COLORS[i % len(_COLORS)]
        for run in _segments(x, ys):
            if len(run) == 1:
                ((a, b),) = run
                out.append(f'<circle cx="{px(a)}" cy="{py(b)}" r="3" fill="{color}"/>')
                continue
            points = " ".join(f"{px(a)},{py(b)}" for a, b in run)
            out.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{points}"/>'
            )
        lx = _LEFT + i * 150
        out.append(f'<rect x="{lx}" y="10" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{lx + 17}" y="20">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _spans(series: Sequence[Sample]) -> list[float]:
    """Each sample's interval length: requests/rps when known, else the gap to the last."""
    spans, last = [], 0.0
    for s in series:
        span = s.requests / s.rps if s.requests and s.rps > 0 else s.t - last
        spans.append(span if span > 0 else 1.0)
        last = s.t
    return spans


def _charts(series: Sequence[Sample], end: float) -> list[tuple[str, str]]:
    """The three charts of a run, their time axes ending at the run's ``end``."""
    t = [s.t for s in series]
    errors_per_s = [s.errors / span for s, span in zip(series, _spans(series), strict=True)]
    label = "run time (s)"
    throughput = _svg_chart(
        t, [("req/s", [s.rps for s in series]), ("errors/s", errors_per_s)], label, x_end=end
    )
    latency = _svg_chart(
        t,
        [
            (name, [getattr(s, name) * 1e3 if s.requests else None for s in series])
            for name in ("p50", "p90", "p99")
        ],
        label,
        x_end=end,
    )
    active = _svg_chart(t, [("active bots", [float(s.active) for s in series])], label, x_end=end)
    return [
        ("Throughput (per second)", throughput),
        ("Latency (ms)", latency),
        ("Active bots", active),
    ]


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], first_text: bool = True) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        cls = "" if i == 0 and first_text else ' class="num"'
        return f"<{tag}{cls}>{html.escape(text)}</{tag}>"

    out = ["<table>", "<thead><tr>"]
    out += [cell("th", i, h) for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        attr = ' class="total"' if row and row[0] == "total" else ""
        out.append(f"<tr{attr}>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _settings(result: RunResult) -> list[tuple[str, str]]:
    items = []
    if result.command:
        items.append(("command", result.command))
    items += [
        ("target", result.target),
        ("bot", result.bot),
        ("bots", f"{result.bots:,}"),
        (
            "spawn rate",
            "all at once" if result.spawn_rate is None else f"{result.spawn_rate:,.1f} bots/s",
        ),
        ("model", result.model),
    ]
    if len(result.classes) > 1:
        items.insert(
            len(items) - 2,
            ("classes", ", ".join(f"{k} x {n:,}" for k, n in result.classes.items())),
        )
    if result.rate is not None:
        items.append(("rate", f"{_format_rate(result.rate)} req/s"))
    items += [
        ("procs", str(result.procs)),
        ("duration", f"{result.duration:g}s"),
        ("elapsed", f"{result.elapsed:.1f}s"),
    ]
    if result.started:
        items.append(("started", result.started))
    items += [
        ("peak connected", f"{result.peak_connected:,}"),
        ("requests", f"{result.stats.requests:,}"),
        ("errors", f"{result.stats.errors:,}"),
        ("req/s", _format_rate(result.rps)),
    ]
    items += [("threshold", verdict) for verdict in result.verdicts]
    return items


def write_html(result: RunResult, path: str | Path) -> None:
    """Write one self-contained HTML report (inline CSS and SVG, no scripts, no network).

    Settings (the command line, spawn rate, thresholds and their verdicts
    among them), the summary table, errors by kind, HTTP status codes,
    dropped connections, the
    daemon's memory, CPU, warnings and three charts over the run's
    per-second series, their time axes ending at the run's end: throughput,
    latency percentiles and active bots. Every string from the run is escaped.
    """
    esc = html.escape
    title = f"daemonkit bots: {result.target}"
    body = [f"<h1>{esc(title)}</h1>", "<h2>Settings</h2>"]
    body.append(_html_table(["setting", "value"], _settings(result)))
    body.append("<h2>Summary</h2>")
    rows = _table(result).rows()
    if rows:
        body.append(_html_table(_COLUMNS, [row.cells() for row in rows]))
    else:
        body.append("<p>no operations ran</p>")
    errors = _errors_by_kind(result)
    if errors:
        body.append("<h2>Errors by kind</h2>")
        body.append(_html_table(["error", "count"], [(k, f"{n:,}") for k, n in errors]))
    statuses = _status_rows(result)
    if statuses:
        body.append("<h2>HTTP status codes</h2>")
        cells = [(name, str(code), f"{n:,}") for name, code, n in statuses]
        body.append(_html_table(["operation", "status", "responses"], cells))
    lines = (_connections_line(result), _server_line(result), _cpu_line(result))
    facts = [line for line in lines if line]
    if facts:
        body.append("<h2>Resources</h2>")
        body += [f"<p>{esc(line)}</p>" for line in facts]
    if result.warnings:
        body.append("<h2>Warnings</h2>")
        body.append(
            "<ul>"
            + "".join(f'<li class="warning">{esc(w)}</li>' for w in result.warnings)
            + "</ul>"
        )
    for heading, svg in _charts(result.stats.series, result.elapsed):
        body += [f"<h2>{esc(heading)}</h2>", svg]
    body.append(f'<p class="note">{esc(_precision_note())}</p>')
    page = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
    ]
    Path(path).write_text("\n".join(page) + "\n", encoding="utf-8")


# -- the max-rate search -------------------------------------------------------------


def write_search_csv(search: SearchResult, path: str | Path) -> Path:
    """Write one row per step of ``search`` (rate, done, p99 in ms, verdict); return the path."""
    head = ["step", "rate", "rps", "p99_ms", "errors", "passed", "violations", "reports"]
    rows = [
        [
            str(i),
            f"{t.rate:g}",
            f"{t.rps:.3f}",
            _ms(t.p99),
            str(t.errors),
            str(t.passed).lower(),
            "; ".join(t.violations),
            " ".join(t.reports),
        ]
        for i, t in enumerate(search.trials, 1)
    ]
    out = Path(path)
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        writer.writerows(rows)
    return out


def write_search_html(
    search: SearchResult, path: str | Path, *, settings: Sequence[tuple[str, str]] = ()
) -> None:
    """Write the search's summary page: settings, the steps and two charts.

    The charts, over the rates tried (sorted): p99 against the rate with
    the target, and the rate done against the rate asked. Each step links
    to its own reports, when they were written.
    """
    esc = html.escape
    title = "daemonkit bots: max-rate search"
    body = [f"<h1>{esc(title)}</h1>"]
    if settings:
        body += ["<h2>Settings</h2>", _html_table(["setting", "value"], settings)]
    best = search.best
    answer = (
        "no rate kept p99 under the target"
        if best is None
        else f"highest rate with p99 <= {format_seconds(search.target_p99)}: "
        f"{best.rate:,.0f}/s (p99 {format_seconds(best.p99)})"
    )
    body.append(f"<p><b>{esc(answer)}</b></p>")
    body.append("<h2>Steps</h2>")
    head = ["step", "rate/s", "done/s", "p99", "errors", "result", "reports"]
    rows = ["<table>", "<thead><tr>"]
    rows += [f"<th>{esc(h)}</th>" for h in head]
    rows.append("</tr></thead><tbody>")
    for i, t in enumerate(search.trials, 1):
        verdict = "pass" if t.passed else "fail"
        if t.violations:
            verdict += ": " + "; ".join(v.removeprefix("FAIL ") for v in t.violations)
        links = " ".join(
            f'<a href="{esc(Path(p).name)}">{esc(Path(p).name)}</a>' for p in t.reports
        )
        cells = [str(i), f"{t.rate:,.0f}", f"{t.rps:,.0f}", format_seconds(t.p99)]
        cells += [f"{t.errors:,}", verdict]
        rows.append(
            "<tr>"
            + "".join(f'<td class="num">{esc(c)}</td>' for c in cells[:5])
            + f"<td>{esc(cells[5])}</td><td>{links}</td></tr>"
        )
    rows.append("</tbody></table>")
    body.append("\n".join(rows))
    ordered = sorted(search.trials, key=lambda t: t.rate)
    rates = [t.rate for t in ordered]
    target_ms = search.target_p99 * 1e3
    p99_chart = _svg_chart(
        rates,
        [("p99 (ms)", [t.p99 * 1e3 for t in ordered]), ("target", [target_ms] * len(ordered))],
        "rate asked (requests/s)",
    )
    done_chart = _svg_chart(
        rates,
        [("done/s", [t.rps for t in ordered]), ("asked/s", rates)],
        "rate asked (requests/s)",
    )
    body += ["<h2>p99 against the rate</h2>", p99_chart]
    body += ["<h2>Rate done against the rate asked</h2>", done_chart]
    page = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
    ]
    Path(path).write_text("\n".join(page) + "\n", encoding="utf-8")
