"""``python -m daemonkit``: the command line (see :mod:`daemonkit.cli`)."""

from daemonkit.cli import main_entry

main_entry()
