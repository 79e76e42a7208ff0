"""Bots: simulated users that load a daemon, and the numbers they bring back.

Write a bot like a daemon::

    from daemonkit import Lines
    from daemonkit.bots import Bot

    class EchoBot(Bot):
        framing = Lines()

        def on_tick(self):
            self.request(b"hello", name="echo")

and run a thousand of them from the shell::

    python -m daemonkit bots echo_bot.py --target tcp://127.0.0.1:7000 \\
        --bots 1000 --spawn-rate 200 --duration 30s --html report.html

or from Python with :class:`BotRunner`. See :mod:`daemonkit.bots.bot` for the
three ways to drive a bot, and :mod:`daemonkit.bots.runner` for the run.
"""

from __future__ import annotations

from daemonkit.bots.bot import Bot, RequestFailed, between
from daemonkit.bots.histogram import Histogram
from daemonkit.bots.http import HttpBot
from daemonkit.bots.result import RunResult, ServerMemory
from daemonkit.bots.runner import BotRunner
from daemonkit.bots.search import SearchResult, search_max_rate
from daemonkit.bots.stats import Sample, Stats
from daemonkit.bots.thresholds import Threshold, check_thresholds, parse_threshold
from daemonkit.bots.websocket import WebSocketBot

__all__ = [
    "Bot",
    "BotRunner",
    "Histogram",
    "HttpBot",
    "RequestFailed",
    "RunResult",
    "Sample",
    "SearchResult",
    "ServerMemory",
    "Stats",
    "Threshold",
    "WebSocketBot",
    "between",
    "check_thresholds",
    "parse_threshold",
    "search_max_rate",
]
