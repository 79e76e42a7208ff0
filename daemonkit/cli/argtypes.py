"""Argument types shared by the command lines (``run``, ``bots``, ``ctl``).

Each turns one command-line word into a value or raises
``argparse.ArgumentTypeError`` with a message that says what to write
instead, so every subcommand reports bad numbers the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from daemonkit import CORE, __version__
from daemonkit.core.durations import check_duration, parse_duration
from daemonkit.errors import ConfigError

__all__ = ["VERSION_LINE", "duration", "seconds", "whole_number"]

#: What ``--version`` prints: the version and which core runs, e.g.
#: ``daemonkit 0.1.0 (compiled core)`` (see :mod:`daemonkit.core.compiled`).
VERSION_LINE = f"daemonkit {__version__} ({CORE} core)"


def whole_number(minimum: int = 1) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    parse.__name__ = "whole number"  # what argparse names in its errors
    return parse


def duration(name: str, *, positive: bool = False) -> Callable[[str], float]:
    """An argparse type: seconds for ``name``: ``30``, ``30s``, ``500ms``, ``2m`` or ``1h``.

    The words are read by :func:`daemonkit.core.durations.parse_duration`,
    the one duration syntax of every command line; the number goes through
    :func:`daemonkit.core.durations.check_duration`, so ``inf``, ``nan``,
    ``1e308`` and negative numbers are refused here, with the setting's name,
    as they are in a class attribute or on the control socket. ``positive``
    refuses 0 as well.
    """

    def parse(text: str) -> float:
        try:
            return check_duration(name, parse_duration(text), positive=positive)
        except ConfigError as exc:  # a ValueError: argparse would drop its message
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "seconds"  # what argparse names in its errors
    return parse


def seconds(text: str) -> float:
    """An argparse type: seconds >= 0 (``30``, ``30s``, ``500ms``, ``2m``, ``1h``).

    Prefer :func:`duration`, whose errors name the setting.
    """
    return _any_duration(text)


_any_duration = duration("the duration")
