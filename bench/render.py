"""Render a bench/run.py result file: tables, PASS/MISS per target, charts, docs/benchmarks.md.

Usage: python bench/render.py RESULTS.jsonl [--docs DIR] [--quiet]

Reads the JSON lines bench/run.py wrote (a ``meta`` line, then ``sample``,
``error`` and ``skip`` lines, then ``end``), and writes DIR/benchmarks.md
(default: docs/) with one table per workload, the targets' verdicts, the
method and the machine, and one PNG chart per workload in
DIR/_static/bench/ (matplotlib; without it the charts are left out and the
page says so). Prints the tables and the verdicts unless ``--quiet``.

Every figure in a table is a median over the rounds, with the min-max range;
every ratio is computed within a round (both servers measured minutes apart
at most, under the same noise) and then summarized the same way.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _catalog import BY_NAME, C_NAMES, PURE_SUFFIX, TARGETS, Target, Workload

REPO_DIR = Path(__file__).resolve().parent.parent
CHART_DIR = Path("_static") / "bench"
#: The load generator above this share of its core may have set the figure.
SATURATED = 0.9
#: Above this share of a run lost to other tasks or steal, a row is flagged noisy.
NOISY = 0.1
#: Median noise above this, or a load average above BUSY_LOAD, marks the run "busy".
BUSY_NOISE = 0.05
BUSY_LOAD = 1.0
#: A min-max range narrower than this share of its median is not shown.
SPREAD_SHOWN = 0.02


@dataclass
class Results:
    """One result file, grouped."""

    meta: dict[str, Any]
    end: dict[str, Any]
    samples: dict[str, dict[str, list[dict[str, Any]]]]  # workload -> server -> samples
    problems: dict[str, dict[str, str]]  # workload -> server -> "skipped: ..." / "failed: ..."
    order: dict[str, list[str]] = field(default_factory=dict)  # workload -> servers seen


def load(path: Path) -> Results:
    """Read a result file; raises ValueError on a line that is not JSON."""
    res = Results({}, {}, defaultdict(lambda: defaultdict(list)), defaultdict(dict))
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
            kind = rec.get("kind")
            if kind == "meta":
                res.meta = rec
            elif kind == "end":
                res.end = rec
            elif kind in ("sample", "error", "skip"):
                wl, server = rec["workload"], rec["server"]
                seen = res.order.setdefault(wl, [])
                if server not in seen:
                    seen.append(server)
                if kind == "sample":
                    res.samples[wl][server].append(rec)
                elif kind == "skip":
                    res.problems[wl][server] = f"skipped: {rec['reason']}"
                else:
                    first = str(rec["error"]).strip().splitlines()
                    res.problems[wl].setdefault(server, f"failed: {first[0] if first else '?'}")
    return res


# -- statistics --------------------------------------------------------------------


def med(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def span(values: Iterable[float | None]) -> tuple[float, float, float] | None:
    vals = [v for v in values if v is not None]
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def by_round(s: dict[str, Any]) -> Any:
    """The key pairing samples of one round."""
    return s["round"]


def by_level(s: dict[str, Any]) -> Any:
    """The key pairing samples of one round and idle level (memory)."""
    return (s["round"], s["level"])


def round_ratios(
    mine: Sequence[dict[str, Any]],
    other: Sequence[dict[str, Any]],
    metric: str,
    key: Callable[[dict[str, Any]], Any] = by_round,
) -> list[float]:
    """``metric`` of mine over other's, sample by sample of the same round (and level)."""
    by_key = {key(s): s for s in other}
    out = []
    for s in mine:
        o = by_key.get(key(s))
        if o is not None and s.get(metric) is not None and o.get(metric):
            out.append(s[metric] / o[metric])
    return out


# -- formatting --------------------------------------------------------------------


def num(v: float | None, digits: int = 0) -> str:
    """A number with thousands separators; '-' for None."""
    if v is None:
        return "-"
    if digits == 0 and abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}" if digits else f"{v:.3g}"


def rng(s: tuple[float, float, float] | None, digits: int = 0) -> str:
    return "-" if s is None else f"{num(s[1], digits)}-{num(s[2], digits)}"


def ratio(values: Sequence[float]) -> str:
    s = span(values)
    if s is None:
        return "-"
    if len(values) == 1 or s[2] - s[1] <= SPREAD_SHOWN * s[0]:
        return f"{s[0]:.2f}"
    return f"{s[0]:.2f} ({s[1]:.2f}-{s[2]:.2f})"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None
) -> list[str]:
    """A markdown table; ``align`` has one l or r per column.

    By default numbers are right-aligned, the first column and a last "notes" one left.
    """
    if align is None:
        last = "l" if header[-1] == "notes" else "r"
        align = "l" + "r" * (len(header) - 2) + last
    out = ["| " + " | ".join(header) + " |"]
    out.append("|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|")
    for row in rows:
        cells = list(row) + ["-"] * (len(header) - len(row))
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return out


def c_row(res: Results, wl: str) -> str | None:
    """The C reference server's row name in this workload, if it has samples."""
    return next((n for n in C_NAMES if res.samples[wl].get(n)), None)


def saturated(s: dict[str, Any]) -> bool:
    return max(s.get("loadgen_busy") or 0.0, s.get("loadgen_cpu_share") or 0.0) > SATURATED


def core_notes(name: str, ss: Sequence[dict[str, Any]]) -> list[str]:
    """The daemonkit core a server's samples ran on, flagged when a -pure one was not pure."""
    cores = sorted({s["core"] for s in ss if s.get("core")})
    if not cores:
        return []
    notes = [f"core: {'/'.join(cores)}"]
    if name.endswith(PURE_SUFFIX) and cores != ["pure"]:
        notes.append("**expected the pure core**")
    return notes


def problem_rows(res: Results, wl: str, ncols: int) -> list[list[str]]:
    rows = []
    for server, why in res.problems.get(wl, {}).items():
        if not res.samples[wl].get(server):
            rows.append([f"`{server}`", why] + ["-"] * (ncols - 2))
    return rows


def sort_servers(res: Results, wl: str, metric: str, lower_is_better: bool = False) -> list[str]:
    names = [n for n in res.order.get(wl, []) if res.samples[wl].get(n)]
    sign = 1 if lower_is_better else -1
    return sorted(names, key=lambda n: sign * (med(s[metric] for s in res.samples[wl][n]) or 0))


# -- one table per kind ---------------------------------------------------------------


@dataclass
class Rendered:
    """One workload's markdown lines and its chart's bars."""

    lines: list[str]
    bars: list[tuple[str, float, float, float, bool]]  # name, median, min, max, saturated
    unit: str


def row_notes(res: Results, wl: Workload, name: str, ss: Sequence[dict[str, Any]]) -> list[str]:
    """A throughput row's notes: C, core, saturated load generator, errors, noise, problems."""
    notes = []
    if name in C_NAMES:
        notes.append("C reference")
    notes += core_notes(name, ss)
    sat = sum(saturated(s) for s in ss)
    if sat:
        notes.append(f"**saturated** ({sat}/{len(ss)})")
    errs = sum(s.get("errors", 0) for s in ss)
    if errs:
        notes.append(f"{errs} errors")
    noise = med(s.get("noise") for s in ss)
    if noise is not None and noise > NOISY:
        notes.append(f"noisy ({noise:.0%})")
    if name in res.problems.get(wl.name, {}):
        notes.append(res.problems[wl.name][name])
    return notes


def throughput_table(res: Results, wl: Workload) -> Rendered:
    """Echo and fan-out: msgs/s, ratios to the raw reference and the C server, CPU, latency."""
    data = res.samples[wl.name]
    ref = data.get(wl.reference or "", [])
    cname = c_row(res, wl.name)
    cref = data.get(cname, []) if cname else []
    header = [
        "server",
        wl.unit,
        "min-max",
        f"x {wl.reference}",
        f"x {cname or 'C'}",
        "srv µs/msg",
        "srv CPU",
        "LG CPU",
        "p50 µs",
        "p99 µs",
        "notes",
    ]
    rows, bars = [], []
    for name in sort_servers(res, wl.name, "msgs_per_s"):
        ss = data[name]
        rate = span(s["msgs_per_s"] for s in ss)
        assert rate is not None
        sat = sum(saturated(s) for s in ss)
        notes = row_notes(res, wl, name, ss)
        rows.append(
            [
                f"`{name}`",
                num(rate[0]),
                rng(rate),
                "1 (ref)" if name == wl.reference else ratio(round_ratios(ss, ref, "msgs_per_s")),
                "1 (ref)" if name == cname else ratio(round_ratios(ss, cref, "msgs_per_s")),
                num(med(s.get("server_us_per_msg") for s in ss), 2),
                pct(med(s.get("server_cpu_share") for s in ss)),
                pct(med(s.get("loadgen_cpu_share") for s in ss)),
                num(med(s.get("lat_p50_us") for s in ss), 0),
                num(med(s.get("lat_p99_us") for s in ss), 0),
                "; ".join(notes),
            ]
        )
        bars.append((name, rate[0], rate[1], rate[2], sat > len(ss) / 2))
    rows += problem_rows(res, wl.name, len(header))
    return Rendered(table(header, rows), bars, wl.unit)


def lag_table(res: Results, wl: Workload) -> Rendered:
    data = res.samples[wl.name]
    ref = data.get(wl.reference or "", [])
    header = [
        "server",
        "lag p99 ms",
        "min-max",
        f"x {wl.reference}",
        "p50 ms",
        "max ms",
        "msgs/s meanwhile",
        "srv CPU",
        "notes",
    ]
    rows, bars = [], []
    for name in sort_servers(res, wl.name, "lag_p99_ms", lower_is_better=True):
        ss = data[name]
        p99 = span(s["lag_p99_ms"] for s in ss)
        assert p99 is not None
        rows.append(
            [
                f"`{name}`",
                num(p99[0], 2),
                rng(p99, 2),
                "1 (ref)" if name == wl.reference else ratio(round_ratios(ss, ref, "lag_p99_ms")),
                num(med(s["lag_p50_ms"] for s in ss), 2),
                num(med(s["lag_max_ms"] for s in ss), 2),
                num(med(s.get("msgs_per_s") for s in ss)),
                pct(med(s.get("server_cpu_share") for s in ss)),
                "; ".join(core_notes(name, ss)),
            ]
        )
        bars.append((name, p99[0], p99[1], p99[2], False))
    rows += problem_rows(res, wl.name, len(header))
    return Rendered(table(header, rows), bars, "ms (p99 lateness of a 10 ms timer)")


def memory_table(res: Results, wl: Workload) -> Rendered:
    data = res.samples[wl.name]
    levels = sorted({s["level"] for ss in data.values() for s in ss})
    ref = data.get(wl.reference or "", [])
    cname = c_row(res, wl.name)
    cref = data.get(cname, []) if cname else []
    header = ["server"]
    for level in levels:
        header += [f"KiB/conn at {level:,}", f"x {wl.reference}", f"x {cname or 'C'}"]
    header += ["RSS before, MiB", "notes"]
    rows, bars = [], []
    top = levels[-1] if levels else 0
    for name in sort_servers(res, wl.name, "kib_per_conn", lower_is_better=True):
        ss = data[name]
        row = [f"`{name}`"]
        for level in levels:
            at = [s for s in ss if s["level"] == level]
            k = span(s["kib_per_conn"] for s in at)
            cell = "-" if k is None else num(k[0], 2)
            if k is not None and k[0] > 0 and (k[2] - k[1]) / k[0] > SPREAD_SHOWN:
                cell += f" ({rng(k, 2)})"
            row += [
                cell,
                "1 (ref)"
                if name == wl.reference
                else ratio(round_ratios(at, ref, "kib_per_conn", by_level)),
                "1 (ref)"
                if name == cname
                else ratio(round_ratios(at, cref, "kib_per_conn", by_level)),
            ]
            if level == top and k is not None:
                bars.append((name, k[0], k[1], k[2], False))
        base = med(s["rss_base_kib"] for s in ss)
        failed = sum(s.get("failed", 0) for s in ss)
        notes = core_notes(name, ss) + ([f"{failed} connections failed"] if failed else [])
        row += [num(None if base is None else base / 1024, 1), "; ".join(notes)]
        rows.append(row)
    rows += problem_rows(res, wl.name, len(header))
    return Rendered(table(header, rows), bars, f"KiB per idle connection at {top:,}")


def churn_table(res: Results, wl: Workload) -> Rendered:
    data = res.samples[wl.name]
    ref = data.get(wl.reference or "", [])
    cname = c_row(res, wl.name)
    cref = data.get(cname, []) if cname else []
    header = [
        "server",
        "cycles/s",
        "min-max",
        f"x {wl.reference}",
        f"x {cname or 'C'}",
        "srv µs/cycle",
        "fds before → end",
        "RSS at 10 %, MiB",
        "RSS growth, KiB",
        "at baseline",
        "notes",
    ]
    rows, bars = [], []
    for name in sort_servers(res, wl.name, "cycles_per_s"):
        ss = data[name]
        rate = span(s["cycles_per_s"] for s in ss)
        assert rate is not None
        worst = max(ss, key=lambda s: s["rss_growth_kib"])
        ok = all(s["back_at_baseline"] and s["rss_growth_kib"] <= 1024 for s in ss)
        fds = max(ss, key=lambda s: s["fds_end"] - s["fds_base"])
        errs = sum(s.get("errors", 0) for s in ss)
        rows.append(
            [
                f"`{name}`",
                num(rate[0]),
                rng(rate),
                "1 (ref)" if name == wl.reference else ratio(round_ratios(ss, ref, "cycles_per_s")),
                "1 (ref)" if name == cname else ratio(round_ratios(ss, cref, "cycles_per_s")),
                num(med(s.get("server_us_per_cycle") for s in ss), 1),
                f"{fds['fds_base']} → {fds['fds_end']}",
                num(med(s["rss_first_kib"] for s in ss) / 1024, 1),  # type: ignore[operator]
                f"{worst['rss_growth_kib']:+,}",
                "yes" if ok else "**no**",
                "; ".join(core_notes(name, ss) + ([f"{errs} errors"] if errs else [])),
            ]
        )
        bars.append((name, rate[0], rate[1], rate[2], False))
    rows += problem_rows(res, wl.name, len(header))
    return Rendered(table(header, rows), bars, "connect+close cycles per second")


def timers_table(res: Results, wl: Workload) -> Rendered:
    data = res.samples[wl.name]
    ref = data.get(wl.reference or "", [])
    n = next((s["timers"] for ss in data.values() for s in ss), 0)
    header = ["variant", "ns/timer", "min-max", f"x {wl.reference}", f"seconds for {n:,}"]
    rows, bars = [], []
    for name in sort_servers(res, wl.name, "ns_per_op", lower_is_better=True):
        ss = data[name]
        v = span(s["ns_per_op"] for s in ss)
        assert v is not None
        rows.append(
            [
                name,
                num(v[0], 1),
                rng(v, 1),
                "1 (ref)" if name == wl.reference else ratio(round_ratios(ss, ref, "ns_per_op")),
                f"{med(s['seconds'] for s in ss):.3f}",
            ]
        )
        bars.append((name, v[0], v[1], v[2], False))
    rows += problem_rows(res, wl.name, len(header))
    return Rendered(table(header, rows), bars, "ns per timer scheduled and cancelled (CPU)")


def idle_timeout_table(res: Results, wl: Workload) -> Rendered:
    data = res.samples[wl.name]
    ref = data.get(wl.reference or "", [])
    n = next((s["connections"] for ss in data.values() for s in ss), 0)
    header = [
        "variant",
        "extra ns/read",
        "min-max",
        f"x {wl.reference}",
        "ns/read, timeout off",
        "ns/read, timeout on",
    ]
    rows, bars = [], []
    for name in sort_servers(res, wl.name, "extra_ns_per_read", lower_is_better=True):
        ss = data[name]
        v = span(s["extra_ns_per_read"] for s in ss)
        assert v is not None
        rows.append(
            [
                name,
                num(v[0], 1),
                rng(v, 1),
                "1 (ref)"
                if name == wl.reference
                else ratio(round_ratios(ss, ref, "extra_ns_per_read")),
                num(med(s["ns_per_read_off"] for s in ss), 1),
                num(med(s["ns_per_read_on"] for s in ss), 1),
            ]
        )
        bars.append((name, v[0], v[1], v[2], False))
    rows += problem_rows(res, wl.name, len(header))
    return Rendered(
        table(header, rows), bars, f"extra ns per read with {n:,} idle-timeout connections"
    )


def broker_table(res: Results, wl: Workload) -> Rendered:
    """Cross-instance fan-out: deliveries/s, p99, CPU per delivery, each against the reference."""
    data = res.samples[wl.name]
    ref = data.get(wl.reference or "", [])
    header = [
        "server",
        wl.unit,
        "min-max",
        f"x {wl.reference}",
        "p99 ms",
        f"{wl.reference} p99 / this",
        "srv µs/delivery",
        "deliveries per CPU s",
        f"x {wl.reference}",
        "Redis µs/delivery",
        "srv CPU",
        "LG CPU",
        "notes",
    ]
    rows, bars = [], []
    for name in sort_servers(res, wl.name, "msgs_per_s"):
        ss = data[name]
        rate = span(s["msgs_per_s"] for s in ss)
        assert rate is not None
        is_ref = name == wl.reference
        p99 = med(s.get("lat_p99_us") for s in ss)
        faster = [1 / r for r in round_ratios(ss, ref, "lat_p99_us")]
        notes = row_notes(res, wl, name, ss)
        sat = sum(saturated(s) for s in ss)
        rows.append(
            [
                f"`{name}`",
                num(rate[0]),
                rng(rate),
                "1 (ref)" if is_ref else ratio(round_ratios(ss, ref, "msgs_per_s")),
                num(None if p99 is None else p99 / 1000, 1),
                "1 (ref)" if is_ref else ratio(faster),
                num(med(s.get("server_us_per_msg") for s in ss), 2),
                num(med(s.get("deliveries_per_cpu_s") for s in ss)),
                "1 (ref)" if is_ref else ratio(round_ratios(ss, ref, "deliveries_per_cpu_s")),
                num(med(s.get("redis_us_per_msg") for s in ss), 2),
                pct(med(s.get("server_cpu_share") for s in ss)),
                pct(med(s.get("loadgen_cpu_share") for s in ss)),
                "; ".join(notes),
            ]
        )
        bars.append((name, rate[0], rate[1], rate[2], sat > len(ss) / 2))
    rows += problem_rows(res, wl.name, len(header))
    return Rendered(table(header, rows), bars, wl.unit)


RENDERERS: dict[str, Callable[[Results, Workload], Rendered]] = {
    "echo": throughput_table,
    "fanout": throughput_table,
    "resp": throughput_table,
    "lag": lag_table,
    "memory": memory_table,
    "churn": churn_table,
    "timers": timers_table,
    "idle-timeout": idle_timeout_table,
    "broker-fanout": broker_table,
}


def compiled_vs_pure(res: Results) -> list[str]:
    """Each daemonkit row beside its ``-pure`` twin of the same run: what the compile buys.

    The "before" of the compiled core is the pure-Python core, measured in the
    same rounds, so the ratio is one of like with like. The metric is the
    workload's own (higher is better unless the workload says otherwise), and
    server CPU per message where the workload has it.
    """
    rows = []
    for wl_name, by_server in res.samples.items():
        wl = workload_of(wl_name)
        for name, pure_ss in by_server.items():
            if not name.endswith(PURE_SUFFIX):
                continue
            compiled = by_server.get(name[: -len(PURE_SUFFIX)])
            if not compiled:
                continue
            memory = wl.kind == "memory"
            metric = "kib_per_conn" if memory else wl.metric
            ratios = round_ratios(compiled, pure_ss, metric, by_level if memory else by_round)
            cpu = [med(s.get("server_us_per_msg") for s in ss) for ss in (pure_ss, compiled)]
            rows.append(
                [
                    f"`{wl_name}`",
                    f"`{name[: -len(PURE_SUFFIX)]}`",
                    num(med(s.get(metric) for s in pure_ss), 2 if memory else 0),
                    num(med(s.get(metric) for s in compiled), 2 if memory else 0),
                    ratio(ratios) + (" (lower is better)" if memory else ""),
                    f"{num(cpu[0], 2)} → {num(cpu[1], 2)}" if None not in cpu else "-",
                ]
            )
    if not rows:
        return []
    header = ["workload", "server", "pure core", "compiled core", "x pure", "srv µs/msg"]
    return [
        "## The compiled core against the pure core",
        "",
        "Every `-pure` row runs the same daemon with `DAEMONKIT_NO_EXTENSIONS=1`, in the same"
        ' rounds: the pure-Python core is the "before" of the compiled one. Figures are'
        " medians in each workload's own unit (KiB per idle connection for memory); the"
        " ratio is taken round by round.",
        "",
        *table(header, rows, "llrrrr"),
        "",
    ]


def workload_of(name: str) -> Workload:
    """The catalog's workload, or a generic throughput one for a name it does not know."""
    return BY_NAME.get(name) or Workload(name, name, "echo", name, "msgs_per_s", "msgs/s")


# -- targets ----------------------------------------------------------------------


def verdict(res: Results, t: Target) -> tuple[str, str]:
    """Return (PASS | MISS | NOT MEASURED, the figure) for one target."""
    data = res.samples.get(t.workload, {})
    mine = data.get(t.server, [])
    if not mine:
        why = res.problems.get(t.workload, {}).get(t.server, "not run")
        return "NOT MEASURED", why
    if t.check == "churn":
        worst = max(s["rss_growth_kib"] for s in mine)
        back = all(s["back_at_baseline"] for s in mine)
        fds = ", ".join(f"{s['fds_base']}→{s['fds_end']}" for s in mine)
        ok = back and worst <= t.bound
        cycles = min(s["cycles"] for s in mine)
        figure = f"fds {fds}; RSS growth after the first 10 % at most {worst:+,} KiB"
        return ("PASS" if ok else "MISS"), f"{figure} ({cycles:,} cycles)"
    assert t.other is not None
    other = data.get(t.other, [])
    if not other:
        why = res.problems.get(t.workload, {}).get(t.other, "not run")
        return "NOT MEASURED", f"{t.other}: {why}"
    wl = workload_of(t.workload)
    metric = t.metric or wl.metric
    where = ""
    if t.level is not None:
        at = [s for s in mine if s.get("level") == t.level]
        if at:
            mine = at
        elif mine:
            # A run at other levels (--quick): judge at the highest one, and say so.
            top = max(s.get("level", 0) for s in mine)
            mine = [s for s in mine if s.get("level") == top]
            where = f" at {top:,}, not {t.level:,}"
    if wl.kind == "memory":
        rs = round_ratios(mine, other, metric, by_level)
    else:
        rs = round_ratios(mine, other, metric)
    s = span(rs)
    if s is None:
        return "NOT MEASURED", "no round with both"
    ok = s[0] <= t.bound if t.at_most else s[0] >= t.bound
    figure = f"{s[0]:.2f}x" + (f" ({s[1]:.2f}-{s[2]:.2f})" if len(rs) > 1 else "") + where
    return ("PASS" if ok else "MISS"), figure


def verdict_lines(res: Results) -> list[tuple[str, str, str]]:
    """(verdict, target, figure) for every target whose workload was in the run."""
    ran = set(res.meta.get("workloads") or res.samples)
    return [(*verdict(res, t), t.name) for t in TARGETS if t.workload in ran]


# -- charts -----------------------------------------------------------------------


def color(name: str) -> str:
    if name in C_NAMES:
        return "#7f7f7f"
    if name.startswith("daemonkit"):
        return "#d95f02"
    if name.startswith("raw") or name.startswith("uvloop") or name.startswith("asyncio"):
        return "#1b9e77"
    return "#7570b3"


def chart(path: Path, title: str, r: Rendered, lower_is_better: bool) -> bool:
    """Draw one horizontal bar chart (median, min-max whiskers); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not r.bars:
        return False
    bars = sorted(r.bars, key=lambda b: b[1], reverse=lower_is_better)
    names = [b[0] for b in bars]
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(bars) + 1.3), dpi=100)
    ys = range(len(bars))
    ax.barh(
        list(ys),
        [b[1] for b in bars],
        xerr=[[b[1] - b[2] for b in bars], [b[3] - b[1] for b in bars]],
        color=[color(n) for n in names],
        hatch=None,
        capsize=3,
        error_kw={"elinewidth": 1, "ecolor": "#333333"},
    )
    for y, b in zip(ys, bars, strict=True):
        label = f" {b[1]:,.0f}" if b[1] >= 100 else f" {b[1]:.3g}"
        ax.text(b[3], y, label + (" (sat.)" if b[4] else ""), va="center", fontsize=8)
    ax.set_yticks(list(ys), names, fontsize=9)
    ax.set_xlabel(r.unit + (" — lower is better" if lower_is_better else ""), fontsize=9)
    ax.set_title(title, fontsize=11)
    ax.set_xlim(0, max(b[3] for b in bars) * 1.25 or 1)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return True


# -- the page ---------------------------------------------------------------------

METHOD = """\
Every figure on this page comes from **one run** of `bench/run.py`, and every
comparison is a **ratio measured in the same round**: the machines this is
developed on are shared and noisy, so absolute numbers swing from minute to
minute while ratios taken seconds apart hold.

- **Pinning.** Servers run on the first CPU this process may use (core 0),
  the load generator and the driver on the second (core 1), with
  `sched_setaffinity` (what `taskset` does).
- **Load generator.** `bench/loadgen.c`: single-threaded C over non-blocking
  sockets and epoll, so that it is not what limits a Python server. Closed
  loop: each connection keeps `pipeline` messages in flight and sends one
  more whenever one has come back whole; every echoed byte is checked.
  Latency percentiles come from client-side timestamps (each message stamped
  when queued and when its last byte returns). Its own CPU is reported for
  every row (**LG CPU**).
- **Saturated.** A row is marked **saturated** when the load generator was
  busy (not waiting in `epoll_wait`) or on-CPU for more than 90 % of the
  measured window: it, not the server, may have set that figure. The C
  server is meant to saturate it: its row shows the ceiling of the
  measurement, and a Python server close to it may be limited by the load
  generator too. **srv µs/msg** (server CPU time from `/proc/PID/stat` per
  message) does not depend on who was the bottleneck: compare it as well.
- **Interleaving.** A group's servers are started once; each round runs every
  workload of the group against every server, in an order rotated each
  round. Memory and churn start a fresh server for every sample.
- **Medians.** Every cell is the median over the rounds, with the min-max
  range; ratios are computed within each round, then summarized the same way.
- **Loopback only.** Everything talks over 127.0.0.0/8. On loopback the
  kernel's TCP work for a message is mostly paid on the sender's core, in
  softirq time that per-process CPU figures leave out.
- **Noise.** A row is flagged *noisy* when the server or the load generator
  was kept off its core (run-queue wait from `/proc/PID/schedstat`, or steal
  from `/proc/stat`) for more than 10 % of the run.
"""

WHERE_TIME_GOES = """\
`perf` profiles of the servers under these loads (server pinned to one core,
`perf record -g -p PID`, shares of the server's samples) say where a
message's time goes:

- **Raw echo, 64 B, pipeline 16:** the kernel takes 84 % of the daemonkit
  echo server's time and 85 % of the bare uvloop Protocol's; uvloop's C code
  6 % of each. What is left is the Python side: one Python frame per read in
  both (the Protocol's `data_received`; daemonkit's user `on_read`), and for
  daemonkit the compiled core around it (1.5 %: `data_received`, `write`,
  the flush) plus two attribute lookups on the host and the idle clock's
  reading. In-process, without sockets, a read costs a bare Protocol about
  70 ns and a daemonkit daemon about 150 ns: the raw-echo rows' user-CPU
  ratio of about 1.2.
- **Line echo, pipeline 16:** the `write()` system call is over half of the
  server's samples and `read()` a ninth, for daemonkit and the
  hand-written Protocol alike; splitting, joining and the calls are the rest.
- **Redis protocol, pipeline 1:** the hand-written reference spends 57 % in
  the kernel and 35 % in the interpreter (its parser in Python), so a
  server whose parsing cost nothing would be at most about 1.5 times as fast
  at one request in flight; at 16 in flight the parsing weighs more and the
  compiled `Resp` framer shows.

daemonkit timers sit on a 1 ms grid and never fire early, so its loop-lag
figures include up to about 1 ms of rounding that a bare `call_later` does
not have.
"""

REPRODUCE = """\
```sh
make bench         # the full run: installs what is missing, renders this page
make bench-quick   # ~2 minutes, every workload lightly; renders into bench/results/
.venv/bin/python bench/run.py --only raw-64-p16,lines-64-p16 --rounds 5
.venv/bin/python bench/run.py --list                       # workloads and servers
.venv/bin/python bench/render.py bench/results/run-YYYYMMDD-HHMMSS.jsonl  # re-render
```

`bench/run.py` installs the `bench` extra with pip (Twisted, gevent, Tornado,
matplotlib) and Debian's `libuv1-dev` with apt-get (as root) when they are
missing (`--no-install` to skip that); what still cannot run shows as a
"skipped" row. The raw JSON lines of every run are kept in `bench/results/`
(git-ignored), and the run behind this page is committed beside its charts
as `docs/_static/bench/results.jsonl`: `bench/render.py FILE` re-renders this
page and its charts from such a file. See `bench/README.md` for the options.
"""


def shown_command(command: str) -> str:
    """The run's command without its --note (the note is shown on its own)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w == "--note":
            skip = True
        elif not w.startswith("--note="):
            out.append(w)
    return shlex.join(out)


def machine_lines(res: Results) -> list[str]:
    m, mach = res.meta, res.meta.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in mach.get("versions", {}).items() if v)
    noise = med(
        s.get("noise")
        for wl in res.samples.values()
        for ss in wl.values()
        for s in ss
        if s.get("noise") is not None
    )
    load0 = mach.get("loadavg_start") or [0.0]
    load1 = res.end.get("loadavg_end") or [None]
    lines = [
        f"- **Date:** {m.get('started', '?')} (took {res.end.get('elapsed_s', '?')} s)",
        f"- **Command:** `{shown_command(m.get('command', '?'))}`",
        f"- **Machine:** {mach.get('nproc', '?')} CPUs ({mach.get('cpu_model', '?')}),"
        f" Linux {mach.get('kernel', '?')}, Python {mach.get('python', '?')}",
        f"- **Versions:** {versions or '?'}",
        f"- **Pinning:** {m.get('cpus', '?')}",
        f"- **C reference:** `{m.get('c_server') or 'none'}`"
        + (
            " (libuv, bench/cecho_uv.c)"
            if m.get("c_server") == "c-libuv"
            else " (plain epoll, bench/cecho.c: libuv was not available)"
        ),
        f"- **Rounds:** {m.get('rounds')} x {m.get('duration')} s measured"
        f" (+ {m.get('warmup')} s warm-up) per load; idle levels"
        f" {', '.join(f'{x:,}' for x in m.get('idle_levels', []))};"
        f" churn {m.get('churn_cycles', 0):,} cycles; timers {m.get('timers_n', 0):,};"
        f" idle timeouts {m.get('idle_conns', 0):,} connections",
        f"- **Load average:** {load0[0]:.2f} at the start,"
        f" {'?' if load1[0] is None else f'{load1[0]:.2f}'} at the end;"
        f" median share of a run lost to other tasks: {pct(noise)}",
    ]
    if m.get("missing"):
        lines.append(f"- **Not installed:** {', '.join(m['missing'])} (their rows are skipped)")
    cores: dict[str, set[str]] = defaultdict(set)
    for wl_samples in res.samples.values():
        for server, ss in wl_samples.items():
            for s in ss:
                if s.get("core"):
                    cores[s["core"]].add(server)
    if cores:
        shown = "; ".join(
            f"{core}: {', '.join(f'`{n}`' for n in sorted(names))}"
            for core, names in sorted(cores.items())
        )
        lines.append(
            f"- **daemonkit core** (as each server reported it; `-pure` servers run with"
            f" `DAEMONKIT_NO_EXTENSIONS=1`): {shown}"
        )
    return lines


def banner(res: Results) -> list[str]:
    m = res.meta
    load0 = (m.get("machine", {}).get("loadavg_start") or [0.0])[0]
    noise = med(
        s.get("noise")
        for wl in res.samples.values()
        for ss in wl.values()
        for s in ss
        if s.get("noise") is not None
    )
    warn = []
    if m.get("quick"):
        warn.append(
            "this is a **`--quick` smoke run** (one short round per server, fewer"
            " connections): it shows that everything works, not how fast"
        )
    if m.get("note"):
        warn.append(m["note"])
    if load0 > BUSY_LOAD or (noise or 0) > BUSY_NOISE:
        warn.append(
            f"the machine was **busy** (load average {load0:.2f} at the start; median"
            f" {pct(noise)} of a run lost to other tasks): absolute figures are rough,"
            " ratios within a round are the figures to read"
        )
    if not warn:
        return []
    return ["```{note}", "Read these figures with care: " + "; ".join(warn) + ".", "```", ""]


def render(path: Path, docs: Path, *, echo: bool = True) -> str:
    """Render ``path`` into ``docs``/benchmarks.md and its charts; return the markdown."""
    res = load(path)
    ran = [n for n in (res.meta.get("workloads") or []) if n in res.order or n in BY_NAME]
    ran += [n for n in res.order if n not in ran]
    try:
        rel = path.resolve().relative_to(REPO_DIR)
    except ValueError:
        rel = path
    md = [
        "# Benchmarks",
        "",
        f"<!-- Generated by bench/render.py from {rel.name}: edit bench/render.py instead. -->",
        "",
        "daemonkit side by side with what people choose between for a long-lived network"
        " daemon in Python -- Twisted, plain asyncio (Protocols or streams, on uvloop or the"
        " stdlib loop), gevent, Tornado -- and a C server on libuv as the physical limit.",
        "",
        *banner(res),
        "## The run",
        "",
        *machine_lines(res),
        "",
        "## Targets",
        "",
        "The speed targets (reported, not asserted: a MISS does not fail the run).",
        "",
    ]
    verdicts = verdict_lines(res)
    md += table(["verdict", "target", "measured"], [[v, t, f] for v, f, t in verdicts], "lll")
    md += ["", *compiled_vs_pure(res)]
    md += ["## Where the time goes", "", WHERE_TIME_GOES]
    md += ["## How it is measured", "", METHOD, "## Results", ""]
    charts_ok = True
    for name in ran:
        if not res.samples.get(name) and not res.problems.get(name):
            continue
        wl = workload_of(name)
        r = RENDERERS.get(wl.kind, throughput_table)(res, wl)
        md += [f"### {wl.title}", ""]
        if wl.about:
            md += [wl.about[0].upper() + wl.about[1:] + ".", ""]
        md += [*r.lines, ""]
        png = CHART_DIR / f"{name}.png"
        if chart(docs / png, wl.title, r, wl.lower_is_better):
            md += [f"![{wl.title}]({png.as_posix()})", ""]
        elif r.bars:
            charts_ok = False
    if not charts_ok:
        md += ["(matplotlib is not installed: no charts.)", ""]
    md += [
        "## Reproducing",
        "",
        REPRODUCE,
        "HTTP hello (`wrk` against uvicorn and aiohttp) and WebSocket echo (against the"
        " `websockets` server) are measured by `bench/http_ws.py` (`make bench-http-ws`);"
        " their figures are in the HTTP and WebSocket guides.",
        "",
    ]
    text = "\n".join(md)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "benchmarks.md").write_text(text)
    if echo:
        for name in ran:
            if res.samples.get(name) or res.problems.get(name):
                wl = workload_of(name)
                print(f"\n== {wl.title} ({name}) ==")
                print("\n".join(RENDERERS.get(wl.kind, throughput_table)(res, wl).lines))
        print("\nTargets:")
        for v, f, t in verdicts:
            print(f"  {v:<12} {t}: {f}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Re-render a bench/run.py result file.")
    parser.add_argument("results", type=Path, help="a bench/results/run-*.jsonl file")
    parser.add_argument("--docs", type=Path, default=REPO_DIR / "docs", help="default: docs/")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    try:
        render(args.results, args.docs, echo=not args.quiet)
    except (OSError, ValueError) as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"\nwrote {args.docs / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
