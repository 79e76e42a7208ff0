"""Live progress: plain lines at the right cadence, a rich table on terminals, and the choice."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from daemonkit.bots.progress import PlainProgress, Progress, RichProgress, choose_progress
from daemonkit.bots.stats import Sample

SAMPLE = Sample(
    t=4.0, active=1000, requests=12345, errors=0, rps=12345.0,
    p50=0.00021, p90=0.0008, p99=0.0013, max=0.004,
)  # fmt: skip
IDLE = Sample(t=1.0, active=0, requests=0, errors=3, rps=0.0, p50=0, p90=0, p99=0, max=0)


def feed(progress: Progress, times: list[float], sample: Sample = SAMPLE, **kw: object) -> None:
    args: dict[str, object] = {
        "duration": 30.0,
        "connected": 1000,
        "target_bots": 1000,
        "errors_total": 0,
        "cpu": 0.45,
    }
    args.update(kw)
    for t in times:
        progress.update(sample, elapsed=t, **args)  # type: ignore[arg-type]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- plain --------------------------------------------------------------------------


def test_plain_line_has_the_numbers() -> None:
    out = io.StringIO()
    feed(PlainProgress(out), [1.0, 2.0, 3.0, 4.0])
    assert out.getvalue().splitlines()[-1] == (
        "[  4.0s/30s] bots 1000/1000  req/s 12,345  p50 210us  p99 1.30ms  errors 0  cpu 45%"
    )


@pytest.mark.parametrize(
    ("every", "times", "printed_at"),
    [
        (2.0, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], ["2.0", "4.0", "6.0", "8.0", "10.0"]),
        (1.0, [1, 2, 3], ["1.0", "2.0", "3.0"]),
        (5.0, [1, 2, 3, 4], []),
        (2.0, [0.999, 1.998, 2.997, 3.996], ["2.0", "4.0"]),  # ticks a hair early still count
        (2.0, [1, 7, 8, 9], ["7.0", "8.0"]),  # after a stall: one line, then back on the grid
    ],
)
def test_plain_cadence(every: float, times: list[float], printed_at: list[str]) -> None:
    out = io.StringIO()
    feed(PlainProgress(out, every=every), [float(t) for t in times])
    lines = out.getvalue().splitlines()
    assert [line[1:].split("s/")[0].strip() for line in lines] == printed_at


def test_plain_without_data_duration_or_cpu() -> None:
    out = io.StringIO()
    progress = PlainProgress(out, every=1.0)
    feed(progress, [3.0], IDLE, duration=0.0, connected=0, errors_total=1234, cpu=None)
    progress.log("warning: bots process CPU near one core")
    progress.close()
    assert out.getvalue().splitlines() == [
        "[  3.0s] bots 0/1000  req/s 0.0  p50 -  p99 -  errors 1,234",
        "warning: bots process CPU near one core",
    ]


def test_plain_rejects_a_silly_interval() -> None:
    with pytest.raises(ValueError, match="every must be positive"):
        PlainProgress(io.StringIO(), every=0)


def test_quiet_progress_does_nothing() -> None:
    progress = Progress()
    feed(progress, [1.0, 2.0])
    progress.log("x")
    progress.close()


# -- rich ---------------------------------------------------------------------------


def test_rich_renders_the_numbers() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    progress = RichProgress(console)
    progress.close()  # closing before any update is harmless
    assert out.getvalue() == ""
    feed(progress, [4.0], errors_total=7)
    progress.log("slow [bold]bots[/bold]")
    progress.close()
    text = out.getvalue()
    assert "\x1b[" in text  # a terminal: escape sequences
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    for expected in ("4.0s/30s", "1,000/1,000", "12,345", "210us", "800us", "1.30ms", "4.00ms"):
        assert expected in plain
    assert re.search(r"1\.30ms\s+4\.00ms\s+7\s+45%", plain), plain
    assert "slow [bold]bots[/bold]" in plain  # printed literally, not as markup


# -- the choice ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tty", "no_color", "color", "kind"),
    [
        (True, None, "auto", RichProgress),
        (True, "1", "auto", PlainProgress),
        (True, "", "auto", RichProgress),  # an empty NO_COLOR does not count
        (False, None, "auto", PlainProgress),
        (False, None, "always", RichProgress),
        (True, "1", "always", RichProgress),
        (True, None, "never", PlainProgress),
    ],
)
def test_choose_progress(
    monkeypatch: pytest.MonkeyPatch, tty: bool, no_color: str | None, color: str, kind: type
) -> None:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    stream = Tty() if tty else io.StringIO()
    progress = choose_progress(stream, color)
    assert type(progress) is kind
    if isinstance(progress, RichProgress):
        # rich is told what was decided, whatever it would have guessed.
        assert progress.console.is_terminal
        assert not progress.console.no_color
        assert progress.console.file is stream
    if isinstance(progress, PlainProgress):
        assert progress.stream is stream


def test_choose_quiet_and_bad_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert type(choose_progress(Tty(), quiet=True)) is Progress
    with pytest.raises(ValueError, match="unknown color option"):
        choose_progress(Tty(), "sometimes")
    with pytest.raises(ValueError, match="unknown color option"):
        choose_progress(Tty(), "sometimes", quiet=True)
