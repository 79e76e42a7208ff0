"""What every kind of endpoint is built on: handlers, endpoint hosts, groups.

:mod:`~daemonkit.framework.handler` (the callbacks), :mod:`~daemonkit.framework.hosts`
(an endpoint's host: binds it, makes its connections, routes their events to
the handler, and asks its owner — the daemon, seen through the narrow
:class:`~daemonkit.framework.hosts.EndpointOwner` interface — for admission
and books), :mod:`~daemonkit.framework.groups` (broadcast groups). Imports only
the core and below.
"""

__all__: list[str] = []
