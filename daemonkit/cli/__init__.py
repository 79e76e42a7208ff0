"""The command line: ``python -m daemonkit`` (run), ``bots`` and ``ctl``.

The top layer: it loads a user's daemon or bot file (:mod:`~daemonkit.cli.loader`),
turns words into settings (:mod:`~daemonkit.cli.argtypes`), reads them from a
config file and the environment (:mod:`~daemonkit.cli.config`) and hands the daemon
to the operations layer's runner. :mod:`~daemonkit.cli.run` is the ``run``
command and the dispatcher; :mod:`~daemonkit.cli.bots` and :mod:`~daemonkit.cli.ctl`
are the other two subcommands. Every entry point is a testable ``main(argv)``.
"""

from __future__ import annotations

from daemonkit.cli.run import (
    EXIT_ADDRESS_IN_USE,
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_LOAD,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_RECYCLE,
    EXIT_RUNNING,
    EXIT_START,
    EXIT_USAGE,
    build_parser,
    main,
    main_entry,
    top_help,
)

__all__ = [
    "EXIT_ADDRESS_IN_USE",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_LOAD",
    "EXIT_OK",
    "EXIT_PERMISSION",
    "EXIT_RECYCLE",
    "EXIT_RUNNING",
    "EXIT_START",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "main_entry",
    "top_help",
]
