"""Argument types shared by the command lines (``run``, ``bots``, ``ctl``).

Each turns one command-line word into a value or raises
``argparse.ArgumentTypeError`` with a message that says what to write
instead, so every subcommand reports bad numbers the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["seconds", "whole_number"]


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


def seconds(text: str) -> float:
    """An argparse type: seconds >= 0, optionally ending in ``s`` (``30`` or ``30s``)."""
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value
