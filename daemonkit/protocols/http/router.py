"""Router: method + path -> handler, and nothing more. This is not a web framework.

::

    router = Router()

    @router.get("/health")
    def health(conn, request):
        return Response.text("ok\\n")

    @router.post("/items/{name}")
    def put_item(conn, request, name):
        conn.respond(201, body=request.body)

    class Api(Handler):
        on_request = router.dispatch

Paths are exact (``request.path``, percent-decoded, without the query) or
have whole-segment parameters ``{name}``, passed to the handler as keyword
arguments (strings, never empty). Exact paths win over parameter paths;
among these, the first one declared wins. A path with no route gets ``404``,
a route without the method ``405`` with an ``Allow`` field. ``HEAD`` is
served by the ``GET`` handler unless it has its own (the connection drops
the body).

Two ways to use one, the second for routes declared in a class body,
whose handlers are methods::

    on_request = router.dispatch      # handlers: fn(conn, request, **params)

    class Api(Handler):
        router = Router()

        @router.get("/count")
        def count(self, conn, request):
            ...

        on_request = router           # handlers: method(self, conn, request, **params)

A Router is a descriptor: read through an instance (``api.on_request``) it
is bound to that instance, like a method, and calls its handlers with the
instance first. ``router.dispatch`` is a plain bound method and never does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from daemonkit.framing.http import HttpRequest
from daemonkit.protocols.http.response import Response

if TYPE_CHECKING:
    from daemonkit.protocols.http.connection import HttpConnection

__all__ = ["BoundRouter", "Router"]

F = TypeVar("F", bound=Callable[..., Any])

_UNBOUND: Any = object()
_NOT_FOUND = Response.text("404 Not Found\n", 404)


def _token(method: str) -> str:
    """Return *method* upper-cased; ValueError unless it is an HTTP token."""
    if not isinstance(method, str) or not method.isascii() or not method.isalpha():
        raise ValueError(f"method must be a word such as 'GET', not {method!r}")
    return method.upper()


class _Pattern:
    """A path with ``{name}`` segments, and its handlers by method."""

    __slots__ = ("methods", "names", "segments")

    def __init__(self, path: str) -> None:
        segments: list[str | None] = []
        names: list[str] = []
        for part in path.split("/"):
            if part.startswith("{") and part.endswith("}"):
                name = part[1:-1]
                if not name.isidentifier() or name in names:
                    raise ValueError(f"bad parameter {part!r} in route path {path!r}")
                segments.append(None)
                names.append(name)
            elif "{" in part or "}" in part:
                raise ValueError(f"a parameter takes a whole segment: {part!r} in {path!r}")
            else:
                segments.append(part)
        self.segments = tuple(segments)
        self.names = tuple(names)
        self.methods: dict[str, Callable[..., Any]] = {}

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """The parameters if *parts* (a path split on ``/``) matches, else None."""
        if len(parts) != len(self.segments):
            return None
        values = []
        for part, segment in zip(parts, self.segments, strict=True):
            if segment is None:
                if not part:
                    return None
                values.append(part)
            elif part != segment:
                return None
        return dict(zip(self.names, values, strict=True))


class Router:
    """A table of routes, method + path -> handler; see the module documentation.

    Declare routes with :meth:`route` (or :meth:`get`, :meth:`post`,
    :meth:`put`, :meth:`delete`, :meth:`patch`), answer with
    :meth:`dispatch`. A handler answers as ``on_request`` does: with
    ``conn.respond()``, by returning a :class:`~daemonkit.http.Response`, or
    later.
    """

    __slots__ = ("_exact", "_patterns")

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Callable[..., Any]]] = {}
        self._patterns: dict[str, _Pattern] = {}

    def route(self, method: str, path: str) -> Callable[[F], F]:
        """Decorator: the function handles *method* requests to *path*; returned unchanged.

        Raises :class:`ValueError` for a path that does not start with
        ``/``, a bad ``{parameter}``, or a method and path already routed.
        """
        method = _token(method)
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"a route path starts with '/': {path!r}")
        if "{" in path or "}" in path:
            pattern = self._patterns.get(path)
            if pattern is None:
                pattern = self._patterns[path] = _Pattern(path)
            methods = pattern.methods
        else:
            methods = self._exact.setdefault(path, {})
        if method in methods:
            raise ValueError(f"{method} {path} is routed twice")

        def register(fn: F) -> F:
            methods[method] = fn
            return fn

        return register

    def get(self, path: str) -> Callable[[F], F]:
        """Decorator: the function handles ``GET`` (and ``HEAD``) requests to *path*."""
        return self.route("GET", path)

    def post(self, path: str) -> Callable[[F], F]:
        """Decorator: the function handles ``POST`` requests to *path*."""
        return self.route("POST", path)

    def put(self, path: str) -> Callable[[F], F]:
        """Decorator: the function handles ``PUT`` requests to *path*."""
        return self.route("PUT", path)

    def delete(self, path: str) -> Callable[[F], F]:
        """Decorator: the function handles ``DELETE`` requests to *path*."""
        return self.route("DELETE", path)

    def patch(self, path: str) -> Callable[[F], F]:
        """Decorator: the function handles ``PATCH`` requests to *path*."""
        return self.route("PATCH", path)

    @property
    def routes(self) -> list[tuple[str, str]]:
        """Every ``(method, path)`` routed, in the order they were declared by path."""
        tables = [*self._exact.items(), *((p, t.methods) for p, t in self._patterns.items())]
        return [(method, path) for path, methods in tables for method in methods]

    def dispatch(self, conn: HttpConnection, request: HttpRequest) -> object:
        """Call the handler of *request*'s method and path and return what it returns.

        Handlers are called as ``fn(conn, request, **params)``. Without a
        route the answer is a ``404`` or ``405`` :class:`Response`.
        """
        return self._call(_UNBOUND, conn, request)

    __call__ = dispatch

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Router: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> BoundRouter: ...
    def __get__(self, instance: object, owner: type | None = None) -> Router | BoundRouter:
        """Read through an instance: a :class:`BoundRouter` calling methods of it."""
        if instance is None:
            return self
        return BoundRouter(self, instance)

    def _call(self, owner: Any, conn: HttpConnection, request: HttpRequest) -> object:
        path = request.path
        params: dict[str, str] | None = None
        methods = self._exact.get(path)
        if methods is None:
            parts = path.split("/")
            for pattern in self._patterns.values():
                params = pattern.match(parts)
                if params is not None:
                    methods = pattern.methods
                    break
            else:
                return _NOT_FOUND
        method = request.method
        fn = methods.get(method)
        if fn is None:
            fn = methods.get("GET") if method == "HEAD" else None
            if fn is None:
                allowed = set(methods)
                if "GET" in allowed:
                    allowed.add("HEAD")
                return Response.text(
                    "405 Method Not Allowed\n", 405, [("allow", ", ".join(sorted(allowed)))]
                )
        if owner is _UNBOUND:
            return fn(conn, request, **params) if params else fn(conn, request)
        return fn(owner, conn, request, **params) if params else fn(owner, conn, request)

    def __repr__(self) -> str:
        return f"<Router {len(self.routes)} routes>"


class BoundRouter:
    """A :class:`Router` read through an instance: handlers are called as its methods.

    ``bound(conn, request)`` (or ``bound.dispatch(conn, request)``) calls
    ``fn(instance, conn, request, **params)``. Made by ``Router.__get__``.
    """

    __slots__ = ("_instance", "_router")

    def __init__(self, router: Router, instance: object) -> None:
        self._router = router
        self._instance = instance

    def dispatch(self, conn: HttpConnection, request: HttpRequest) -> object:
        """Like :meth:`Router.dispatch`, with the instance as the handlers' first argument."""
        return self._router._call(self._instance, conn, request)

    __call__ = dispatch

    def __repr__(self) -> str:
        return f"<BoundRouter of {self._instance!r}>"
