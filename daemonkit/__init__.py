"""daemonkit: long-lived network daemons in the libevent style.

One process, one event loop, callbacks on readiness::

    from daemonkit import Daemon

    class Echo(Daemon):
        listen = "tcp://127.0.0.1:7000"

        def on_read(self, conn, data):
            conn.write(data)

Run it with ``python -m daemonkit echo.py``.
"""

from __future__ import annotations

__version__ = "0.1.0"

# First import of all (it sorts first, and must): importing it honours
# DAEMONKIT_NO_EXTENSIONS before any compiled module is loaded.
from daemonkit.core.compiled import core as _core
from daemonkit.core.connection import CloseReason, Connection
from daemonkit.core.endpoints import Address, Endpoint, parse_endpoint
from daemonkit.core.reactor import READ, TIMEOUT, WRITE, Reactor
from daemonkit.core.timers import FakeClock, Timer
from daemonkit.daemon import ConnectionSet, Daemon, StartError
from daemonkit.errors import (
    ConfigError,
    DaemonkitError,
    EndpointError,
    FrameTooLarge,
    FramingError,
    LoadError,
    ProtocolError,
)
from daemonkit.framework.groups import Group
from daemonkit.framework.handler import Handler
from daemonkit.framework.offload import OffloadFull, OffloadTimeout
from daemonkit.framing import Framer, LengthPrefixed, Lines, Netstrings, Raw
from daemonkit.protocols.udp import UdpHost

#: Which core is running: ``"compiled"`` (mypyc) or ``"pure"`` (see
#: :mod:`daemonkit.core.compiled`).
CORE = _core()

__all__ = [
    "CORE",
    "READ",
    "TIMEOUT",
    "WRITE",
    "Address",
    "CloseReason",
    "ConfigError",
    "Connection",
    "ConnectionSet",
    "Daemon",
    "DaemonkitError",
    "Endpoint",
    "EndpointError",
    "FakeClock",
    "FrameTooLarge",
    "Framer",
    "FramingError",
    "Group",
    "Handler",
    "LengthPrefixed",
    "Lines",
    "LoadError",
    "Netstrings",
    "OffloadFull",
    "OffloadTimeout",
    "ProtocolError",
    "Raw",
    "Reactor",
    "StartError",
    "Timer",
    "UdpHost",
    "__version__",
    "parse_endpoint",
]
