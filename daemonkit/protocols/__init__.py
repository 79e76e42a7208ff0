"""Endpoint kinds beyond plain streams: HTTP/1.1, WebSocket, UDP.

Each extends or replaces the framework's :class:`~daemonkit.framework.hosts.StreamHost`.
Users import them through the faces :mod:`daemonkit.http` and
:mod:`daemonkit.websocket` (and ``daemonkit.UdpHost``).
"""

__all__: list[str] = []
