"""Cross-instance fan-out through Redis: daemonkit's broker against Socket.IO's Redis adapter.

Issue 13's performance comparison. Each sample starts a fresh
``redis-server`` (in memory, no persistence) and two instances of one
server sharing it, then runs ``bench/wsload.c --mode fanout`` with its
subscribers spread over both instances (``--ports A,B``: subscriber i on
the instance i mod 2, so 500 on each at full size) and one publisher on the
first, which keeps ``--pipeline`` messages ahead of the slowest subscriber.
Every publication is delivered to the publisher's instance's subscribers
directly and to the other instance's through Redis.

* ``daemonkit-broker``: ``bench/servers/ws_daemonkit.py`` (``/sub`` joins
  the group, ``/pub`` broadcasts to it) run by the CLI with ``--broker
  redis://...``: the group spans both instances through daemonkit's broker
  (a Redis stream).
* ``socketio-redis``: ``bench/servers/socketio_fanout.js``: Socket.IO with
  ``@socket.io/redis-adapter`` (Redis pub/sub) on the ``redis`` client, as
  Socket.IO's docs set it up, versions pinned in ``bench/node/package.json``
  and installed by ``bench/_deps.py`` into ``bench/node/node_modules``.

The load generator is the same C program for both: ``wsload --eio`` speaks
Socket.IO's protocol itself (Engine.IO 4's WebSocket transport, the ``40``
connect packet, events as ``42["m","..."]``) rather than running
``socket.io-client`` in Node, because a Node client process would cost as
much CPU as a server on this 2-core machine, would be a different load
generator for each side, and could not check every byte. The message is the
same size on the wire for both (``--size``, 64 bytes: for Socket.IO the whole
event packet), at the same closed-loop rate rule.

Figures, over wsload's measured window (the median of the rounds):
deliveries/s (one message arriving at one subscriber), the p99 delivery
latency (publisher's send to a subscriber's read, every delivery), the CPU
of both server instances per delivery and deliveries per server CPU second,
Redis's CPU per delivery apart, and the ratios daemonkit/Socket.IO of the
same round. Issue 13's target: at least 2x Socket.IO's deliveries per CPU
second, with a lower p99. Servers and Redis share the first core, wsload
runs on the second: on a 2-core machine the figures are per CPU, not a
claim of scaling.

Usage::

    python bench/broker_fanout.py            # 3 rounds x 4 s, 2 x 500 subscribers
    python bench/broker_fanout.py --quick    # 1 round x 1.5 s, 2 x 100 subscribers
    python bench/broker_fanout.py --jsonl    # samples as JSON lines on stdout (bench/run.py)

Results also go to ``bench/results/broker_fanout-<timestamp>.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    RESULTS_DIR,
    BenchError,
    Server,
    build_c,
    free_port,
    plan_cpus,
    process_cpu_seconds,
    python_executable,
    stop_all,
)
from _deps import NODE_MODULES, ensure_node
from http_ws import run_wsload

DAEMONKIT = "daemonkit-broker"
SOCKETIO = "socketio-redis"
SERVERS = (DAEMONKIT, SOCKETIO)
#: Issue 13's target: daemonkit's deliveries per server CPU second over Socket.IO's.
TARGET = 2.0
INSTANCES = 2
#: A load generator busier than this share of its run may have set the figure.
SATURATED = 0.9
#: Seconds a wsload run may take past warm-up + duration (connects, synchronising).
SLACK = 60.0


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: float
    warmup: float
    subscribers: int  # per instance
    pipeline: int
    size: int
    servers: tuple[str, ...]


def instance_argv(server: str, port: int, redis_url: str) -> tuple[list[str], dict[str, str]]:
    """One instance's command line and extra environment."""
    if server == DAEMONKIT:
        argv = [python_executable(), str(BENCH_DIR / "servers" / "_dk_run.py")]
        argv += ["run", "bench/servers/ws_daemonkit.py", "--listen", f"ws://127.0.0.1:{port}"]
        argv += ["--broker", redis_url, "--log-level", "warning"]
        return argv, {}
    node = shutil.which("node") or "node"
    argv = [node, str(BENCH_DIR / "servers" / "socketio_fanout.js"), str(port), redis_url]
    return argv, {"NODE_PATH": str(NODE_MODULES)}


def one_sample(st: Settings, wsload: Path, server: str, rnd: int, tmp: Path) -> dict[str, Any]:
    """Start Redis and two instances of ``server``, run wsload once, return the sample."""
    plan = plan_cpus()
    redis_port = free_port()
    redis = Server(
        "redis",
        [
            *("redis-server", "--port", str(redis_port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp)),
        ],
        cpus=plan.server,
    )
    url = f"redis://127.0.0.1:{redis_port}/0"
    servers = [redis]
    core_file = tmp / f"core-{server}-{rnd}"
    try:
        redis.start(redis_port)
        redis.wait_ready()
        instances = []
        for i in range(INSTANCES):
            port = free_port()
            argv, env = instance_argv(server, port, url)
            if server == DAEMONKIT and i == 0:
                env["BENCH_CORE_FILE"] = str(core_file)
            instance = Server(f"{server}-{i}", argv, cpus=plan.server, env=env)
            servers.append(instance)
            instances.append(instance)
            instance.start(port)
        for instance in instances:
            instance.wait_ready()
        marks: dict[str, list[float]] = {}

        def on_event(name: str) -> None:
            marks[name] = [process_cpu_seconds(s.proc.pid) for s in servers if s.proc]

        args = [
            "--host=127.0.0.1",
            "--ports=" + ",".join(str(s.port) for s in instances),
            "--mode=fanout",
            f"--connections={st.subscribers * INSTANCES}",
            f"--pipeline={st.pipeline}",
            f"--size={st.size}",
            f"--duration={st.duration}",
            f"--warmup={st.warmup}",
        ]
        if server == SOCKETIO:
            args.append("--eio")
        rec = run_wsload(wsload, args, plan.loadgen, st.warmup + st.duration + SLACK, on_event)
        if "window_open" not in marks or "window_close" not in marks:
            raise BenchError("wsload printed no window marks")
        for s in servers:
            if not s.alive():
                raise BenchError(f"{s.name} exited during the run:\n{s.stderr_tail()}")
        used = [b - a for a, b in zip(marks["window_open"], marks["window_close"], strict=True)]
        deliveries, seconds = rec["msgs"], rec["seconds"]
        if deliveries == 0 or seconds <= 0:
            raise BenchError(f"no delivery in the window ({rec.get('stderr', '')})")
        redis_cpu, server_cpu = used[0], sum(used[1:])
        busy = 1.0 - rec["wait_seconds"] / seconds
        lg_share = rec["cpu_seconds"] / seconds
        core = core_file.read_text().strip() if server == DAEMONKIT else None
        return {
            "kind": "sample",
            "workload": "broker-fanout",
            "server": server,
            "round": rnd,
            "core": core,
            "msgs_per_s": rec["msgs_per_s"],
            "deliveries": deliveries,
            "published": rec["published"],
            "seconds": seconds,
            "subscribers": st.subscribers * INSTANCES,
            "instances": INSTANCES,
            "pipeline": st.pipeline,
            "size": st.size,
            "errors": rec["errors"],
            "lat_p50_us": rec["lat_p50_us"],
            "lat_p99_us": rec["lat_p99_us"],
            "lat_max_us": rec["lat_max_us"],
            "server_cpu_s": server_cpu,
            "server_cpu_share": server_cpu / seconds,
            "instance_cpu_s": used[1:],
            "server_us_per_msg": server_cpu / deliveries * 1e6,
            "deliveries_per_cpu_s": deliveries / server_cpu if server_cpu > 0 else None,
            "redis_cpu_s": redis_cpu,
            "redis_us_per_msg": redis_cpu / deliveries * 1e6,
            "loadgen_cpu_share": lg_share,
            "loadgen_busy": busy,
            "loadgen_saturated": max(lg_share, busy) >= SATURATED,
        }
    finally:
        stop_all(servers[1:])  # the instances first: a daemonkit one says goodbye to Redis
        redis.stop()


def run(st: Settings, wsload: Path, emit: Any) -> list[dict[str, Any]]:
    """Every round, the servers in an order rotated each round; emit each sample."""
    samples = []
    with tempfile.TemporaryDirectory(prefix="dk-broker-") as tmp:
        for rnd in range(st.rounds):
            k = rnd % len(st.servers)
            for server in [*st.servers[k:], *st.servers[:k]]:
                try:
                    sample = one_sample(st, wsload, server, rnd, Path(tmp))
                except (BenchError, OSError, ValueError, KeyError) as exc:
                    sample = {
                        "kind": "error",
                        "workload": "broker-fanout",
                        "server": server,
                        "round": rnd,
                        "error": str(exc),
                    }
                emit(sample)
                if sample["kind"] == "sample":
                    samples.append(sample)
    return samples


def summary(samples: Sequence[dict[str, Any]]) -> list[str]:
    """A markdown table: medians per server, and the same-round ratios to Socket.IO."""

    def med(values: Sequence[float]) -> float | None:
        return statistics.median(values) if values else None

    def ratio(server: str, field: str, invert: bool = False) -> str:
        ours = {s["round"]: s[field] for s in samples if s["server"] == server}
        theirs = {s["round"]: s[field] for s in samples if s["server"] == SOCKETIO}
        found = [
            (theirs[r] / v if invert else v / theirs[r])
            for r, v in ours.items()
            if r in theirs and v and theirs[r]
        ]
        return f"{statistics.median(found):.2f}x" if found else "-"

    lines = [
        "| server | deliveries/s | x socketio | p99 ms | socketio p99 / this | srv µs/delivery "
        "| deliveries per CPU s | x socketio | Redis µs/delivery | LG CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for server in SERVERS:
        ss = [s for s in samples if s["server"] == server]
        if not ss:
            continue
        get = {f: med([s[f] for s in ss if s.get(f) is not None]) for f in ss[0]}
        lines.append(
            f"| `{server}` | {get['msgs_per_s']:,.0f} | {ratio(server, 'msgs_per_s')} "
            f"| {get['lat_p99_us'] / 1000:.1f} | {ratio(server, 'lat_p99_us', invert=True)} "
            f"| {get['server_us_per_msg']:.2f} | {get['deliveries_per_cpu_s']:,.0f} "
            f"| {ratio(server, 'deliveries_per_cpu_s')} | {get['redis_us_per_msg']:.2f} "
            f"| {get['loadgen_cpu_share']:.0%} |"
        )
    return lines


def verdict(samples: Sequence[dict[str, Any]]) -> str:
    """Issue 13's target, judged on the same-round ratios."""
    per_cpu, p99 = [], []
    rounds = {s["round"] for s in samples}
    for r in sorted(rounds):
        by = {s["server"]: s for s in samples if s["round"] == r}
        if DAEMONKIT in by and SOCKETIO in by:
            d, s = by[DAEMONKIT], by[SOCKETIO]
            per_cpu.append(d["deliveries_per_cpu_s"] / s["deliveries_per_cpu_s"])
            p99.append(d["lat_p99_us"] / s["lat_p99_us"])
    if not per_cpu:
        return "VERDICT broker-fanout: NOT MEASURED (no round with both servers)"
    cpu_ratio, p99_ratio = statistics.median(per_cpu), statistics.median(p99)
    ok = cpu_ratio >= TARGET and p99_ratio < 1.0
    return (
        f"VERDICT broker-fanout: {'PASS' if ok else 'MISS'}: deliveries per server CPU second "
        f"{cpu_ratio:.2f}x Socket.IO's (target >= {TARGET:g}x), p99 {p99_ratio:.2f}x "
        "Socket.IO's (target < 1)"
    )


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="Cross-instance fan-out through Redis: daemonkit's broker vs Socket.IO's "
        "Redis adapter (issue 13)."
    )
    parser.add_argument("--quick", action="store_true", help="1 round x 1.5 s, 2 x 100 subs")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (3; quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per run (4; quick 1.5)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds first (1; quick 0.5)")
    parser.add_argument("--subscribers", type=int, help="per instance (500; quick 100)")
    parser.add_argument("--pipeline", type=int, default=16, help="messages ahead (16)")
    parser.add_argument("--size", type=int, default=64, help="message bytes on the wire (64)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--no-install", action="store_true", help="install no npm package")
    parser.add_argument("--jsonl", action="store_true", help="samples on stdout, nothing else")
    parser.add_argument("--out", type=Path, help="results directory (bench/results)")
    args = parser.parse_args(argv)
    servers = tuple(s.strip() for s in args.servers.split(",") if s.strip())
    unknown = [s for s in servers if s not in SERVERS]
    if unknown or not servers:
        parser.error(f"--servers takes {', '.join(SERVERS)}, not {', '.join(unknown) or '-'}")
    q = args.quick
    st = Settings(
        rounds=args.rounds or (1 if q else 3),
        duration=args.duration or (1.5 if q else 4.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if q else 1.0),
        subscribers=args.subscribers or (100 if q else 500),
        pipeline=args.pipeline,
        size=args.size,
        servers=servers,
    )
    if st.rounds < 1 or st.subscribers < 1 or st.duration <= 0 or st.size < 11:
        parser.error("--rounds, --subscribers >= 1, --duration > 0, --size >= 11")
    return st, args


def main(argv: Sequence[str] | None = None) -> int:
    st, args = parse_args(argv)
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if args.jsonl else print
    notes: list[str] = []
    skipped: dict[str, str] = {}
    if SOCKETIO in st.servers and not ensure_node(notes, install=not args.no_install):
        skipped[SOCKETIO] = notes[-1] if notes else "the Node packages are not installed"
        st = dataclasses.replace(st, servers=tuple(s for s in st.servers if s != SOCKETIO))
    for note in notes:
        say(f"broker_fanout.py: {note}")
    if shutil.which("redis-server") is None:
        say("broker_fanout.py: redis-server is not installed (apt-get install redis-server)")
        return 2
    try:
        wsload = build_c("wsload")
    except BenchError as exc:
        say(f"broker_fanout.py: {exc}")
        return 2
    out_dir = args.out or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"broker_fanout-{datetime.datetime.now():%Y%m%d-%H%M%S}.jsonl"
    with open(path, "w") as out:
        meta = {
            "kind": "meta",
            "settings": dataclasses.asdict(st),
            "loadavg": os.getloadavg(),
            "notes": notes,
        }
        out.write(json.dumps(meta) + "\n")

        def emit(record: dict[str, Any]) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()
            if args.jsonl:
                print(json.dumps(record), flush=True)
            if record["kind"] == "skip":
                say(f"  {record['server']}: skipped: {record['reason']}")
            elif record["kind"] == "error":
                say(f"  round {record['round'] + 1} {record['server']}: FAILED {record['error']}")
            else:
                say(
                    f"  round {record['round'] + 1} {record['server']:<17} "
                    f"{record['msgs_per_s']:>12,.0f} deliveries/s  p99 "
                    f"{record['lat_p99_us'] / 1000:6.1f} ms  "
                    f"{record['server_us_per_msg']:6.2f} µs CPU/delivery"
                )

        for server, why in skipped.items():
            emit({"kind": "skip", "workload": "broker-fanout", "server": server, "reason": why})
        samples = run(st, wsload, emit)
    if not args.jsonl:
        print()
        print("\n".join(summary(samples)))
        print()
        print(verdict(samples))
        print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
