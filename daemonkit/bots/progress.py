"""Progress: what a bots run shows while it runs.

The runner calls :meth:`Progress.update` once per :class:`Sample` (once a
second), :meth:`Progress.log` for a warning, and :meth:`Progress.close` at
the end, before the summary is printed. :func:`choose_progress` picks the
display:

* ``PlainProgress`` writes one line every ``every`` seconds of run time,
  fit for CI logs and pipes;
* ``RichProgress`` keeps a small live table on a terminal (rich, from the
  ``daemonkit[bots]`` extra, is imported only when one is made, so
  importing this module stays cheap and works without it);
* the base :class:`Progress` shows nothing (``--quiet``).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, ClassVar, TextIO

from daemonkit.bots.report import format_seconds
from daemonkit.bots.stats import Sample
from daemonkit.core.log import use_color

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

__all__ = ["NO_RICH_NOTE", "Progress", "choose_progress"]

#: Written once by :func:`choose_progress` when the live table is wanted but
#: rich, which draws it, is not installed (it is optional: about 13 MB with
#: Pygments and markdown-it-py, for a table a daemon never draws).
NO_RICH_NOTE = (
    "the live table needs rich, which is not installed: pip install 'daemonkit[bots]'"
    " (showing plain progress lines)"
)


class Progress:
    """The progress interface; this base class displays nothing (``--quiet``).

    ``displays`` says whether what :meth:`log` is given reaches the user
    (so the summary need not say it again).
    """

    displays: ClassVar[bool] = False

    def update(
        self,
        sample: Sample,
        *,
        elapsed: float,
        duration: float,
        connected: int,
        target_bots: int,
        errors_total: int,
        cpu: float | None,
    ) -> None:
        """Show the second that just ended.

        ``elapsed`` and ``duration`` are run time in seconds (a ``duration``
        that is 0 or infinite means "until stopped"), ``connected`` and
        ``target_bots`` the bots connected and wanted, ``errors_total`` the
        errors so far, ``cpu`` the bots process's CPU use (1.0 = one core)
        or None when unknown.
        """

    def log(self, message: str) -> None:
        """Show a warning raised during the run."""

    def close(self) -> None:
        """Stop displaying; the summary follows."""


def _clock(elapsed: float, duration: float) -> str:
    if duration > 0 and math.isfinite(duration):
        return f"{elapsed:5.1f}s/{duration:g}s"
    return f"{elapsed:5.1f}s"


def _rate(rate: float) -> str:
    return f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"


def _latency(sample: Sample, seconds: float) -> str:
    return format_seconds(seconds) if sample.requests else "-"


class PlainProgress(Progress):
    """One line per ``every`` seconds of run time, e.g.

    ``[  4.0s/30s] bots 1000/1000  req/s 12,345  p50 210us  p99 1.30ms  errors 0  cpu 45%``

    The figures are those of the latest one-second sample; ``errors`` is the
    run's total so far.
    """

    displays: ClassVar[bool] = True

    def __init__(self, stream: TextIO, every: float = 2.0) -> None:
        if not every > 0:
            raise ValueError(f"every must be positive, not {every!r}")
        self.stream = stream
        self.every = every
        self._next = every

    def update(
        self,
        sample: Sample,
        *,
        elapsed: float,
        duration: float,
        connected: int,
        target_bots: int,
        errors_total: int,
        cpu: float | None,
    ) -> None:
        """Write a line if ``every`` seconds of run time have passed since the last."""
        # Ticks arrive about once a second and may land a hair early.
        if elapsed + 0.05 * self.every < self._next:
            return
        while self._next <= elapsed + 0.05 * self.every:
            self._next += self.every
        parts = [
            f"[{_clock(elapsed, duration)}] bots {connected}/{target_bots}",
            f"req/s {_rate(sample.rps)}",
            f"p50 {_latency(sample, sample.p50)}",
            f"p99 {_latency(sample, sample.p99)}",
            f"errors {errors_total:,}",
        ]
        if cpu is not None:
            parts.append(f"cpu {cpu:.0%}")
        self.stream.write("  ".join(parts) + "\n")
        self.stream.flush()

    def log(self, message: str) -> None:
        """Write the message on a line of its own."""
        self.stream.write(message + "\n")
        self.stream.flush()


class RichProgress(Progress):
    """A live table on a terminal, redrawn on each :meth:`update` (``rich.live.Live``).

    ``console`` is the ``rich.console.Console`` to draw on; it decides
    colour and terminal handling (see :func:`choose_progress`).
    """

    displays: ClassVar[bool] = True

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None

    def update(
        self,
        sample: Sample,
        *,
        elapsed: float,
        duration: float,
        connected: int,
        target_bots: int,
        errors_total: int,
        cpu: float | None,
    ) -> None:
        """Redraw the table with this second's figures."""
        from rich.live import Live
        from rich.table import Table

        table = Table(box=None, padding=(0, 2), show_edge=False)
        heads = ["time", "bots", "req/s", "p50", "p90", "p99", "max", "errors", "cpu"]
        for head in heads:
            table.add_column(head, justify="left" if head == "time" else "right")
        table.add_row(
            _clock(elapsed, duration),
            f"{connected:,}/{target_bots:,}",
            _rate(sample.rps),
            *(_latency(sample, v) for v in (sample.p50, sample.p90, sample.p99, sample.max)),
            f"[red]{errors_total:,}[/]" if errors_total else "0",
            "-" if cpu is None else f"{cpu:.0%}",
        )
        if self._live is None:
            self._live = Live(
                table,
                console=self.console,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        self._live.update(table, refresh=True)

    def log(self, message: str) -> None:
        """Print the message above the live table (no markup is interpreted)."""
        from rich.text import Text

        self.console.print(Text(message, style="yellow"))

    def close(self) -> None:
        """Leave the last table on screen and stop redrawing."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def choose_progress(stream: TextIO, color: str = "auto", quiet: bool = False) -> Progress:
    """The progress display for ``stream``.

    Nothing when ``quiet``; otherwise :class:`RichProgress` when
    :func:`daemonkit.core.log.use_color` says yes (``color="always"``, or
    ``"auto"`` on a TTY with ``NO_COLOR`` unset) and :class:`PlainProgress`
    when it says no. The rich console is forced to a terminal with colour,
    so rich does not decide again. rich comes with the ``bots`` extra: when
    the table is wanted and rich is not installed, the display is
    :class:`PlainProgress`, after one line (:data:`NO_RICH_NOTE`) saying
    what to install. Raises :class:`~daemonkit.errors.ConfigError` for an
    unknown ``color``.
    """
    rich = use_color(color, stream, os.environ)  # validates ``color`` even when quiet
    if quiet:
        return Progress()
    if not rich:
        return PlainProgress(stream)
    try:
        from rich.console import Console
    except ImportError:
        stream.write(NO_RICH_NOTE + "\n")
        return PlainProgress(stream)
    return RichProgress(Console(file=stream, force_terminal=True, no_color=False))
