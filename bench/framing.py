"""Time the framers' feed() on the daemon's hot path.

Run ``python bench/framing.py``; it takes a few seconds and prints the time
per feed() call (best of several rounds) for each framer and input shape:

* 16 pipelined 64-byte frames per chunk (the common case),
* one 64-byte frame per chunk,
* 64-byte frames read 1000 bytes at a time, so most reads end mid-frame,
* one 64 KiB frame fed one byte at a time, and in 1 KiB chunks (the
  linearity cases: per-feed cost must not grow with the buffered length).

``bytes.split`` on the same chunk is printed first as the floor.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from daemonkit.framing import Framer, LengthPrefixed, Lines, Netstrings

ROUNDS = 25
TARGET_NS = 20_000_000  # many short rounds: the best one is the least disturbed
LINE = b"x" * 63  # 64 bytes with its b"\n"
BIG = 64 * 1024


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def best_ns_per_call(run: Callable[[], object], calls: int) -> float:
    """Best time of *run* over ROUNDS rounds, divided by the calls it makes."""
    start = time.perf_counter_ns()
    run()
    once = max(time.perf_counter_ns() - start, 1)
    repeat = max(1, TARGET_NS // once)
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(repeat):
            run()
        best = min(best, (time.perf_counter_ns() - start) / (repeat * calls))
    return best


def bench_feed(framer: Framer, pieces: list[bytes], frames: int) -> float:
    feed = framer.feed

    def run() -> None:
        got = 0
        for piece in pieces:
            got += len(feed(piece))
        if got != frames:
            raise AssertionError(f"{framer!r}: {got} frames, expected {frames}")

    return best_ns_per_call(run, len(pieces))


def report(name: str, ns: float, pieces: int) -> None:
    if pieces == 1:
        print(f"  {name:<44} {ns:>10.0f} ns/feed")
    else:
        print(f"  {name:<44} {ns:>10.1f} ns/feed  ({ns * pieces / 1e6:.2f} ms per frame)")


def bench_framer(label: str, framer: Framer, frame: bytes, big: bytes) -> None:
    print(label)
    one = framer.encode(frame)
    pipelined = one * 16
    report("16 x 64-byte frames per chunk", bench_feed(framer.fresh(), [pipelined], 16), 1)
    report("1 x 64-byte frame per chunk", bench_feed(framer.fresh(), [one], 1), 1)
    # Reads rarely end on a frame boundary: 1000-byte reads cut frames in two.
    stream = one * 1000
    report(
        "64-byte frames in 1000-byte chunks",
        bench_feed(framer.fresh(), chunks(stream, 1000), 1000),
        1,
    )
    wire = framer.encode(big)
    for size in (1, 1024):
        pieces = chunks(wire, size)
        name = f"{len(wire) // 1024} KiB frame, {size}-byte chunks"
        report(name, bench_feed(framer.fresh(), pieces, 1), len(pieces))


def main() -> None:
    began = time.perf_counter()
    chunk = (LINE + b"\n") * 16
    print("floor")
    report("bytes.split, 16 x 64-byte lines", best_ns_per_call(lambda: chunk.split(b"\n"), 1), 1)
    # A 64 KiB line plus its delimiter must fit the default 64 KiB limit.
    big_line = b"y" * (BIG - 1)
    bench_framer("Lines(b'\\n')", Lines(), LINE, big_line)
    bench_framer("Lines(b'\\r\\n')", Lines(b"\r\n"), LINE[:-1], big_line[:-1])
    big = b"z" * (BIG - 4)
    bench_framer("LengthPrefixed('!I')", LengthPrefixed(), LINE[:-3], big)
    bench_framer("Netstrings()", Netstrings(), LINE[:-3], big[:-3])
    print(f"total {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
