"""HTTP hello: the smallest HTTP endpoint, plus a health check through a Router.

Run it:   python -m daemonkit examples/http_hello.py
Try it:   curl -i http://127.0.0.1:8080/          (Hello, world!)
          curl -i http://127.0.0.1:8080/health    (a JSON body)
          curl -i http://127.0.0.1:8080/nowhere   (404 from the router)
Stop it:  Ctrl-C (or SIGTERM): a graceful stop; press it twice to stop at once.
"""

from daemonkit import Daemon
from daemonkit.http import Response, Router


class HelloDaemon(Daemon):
    listen = "http://127.0.0.1:8080"  # --listen on the command line overrides it

    # Routes declared in the class body are methods: read through self, the
    # router calls them with self first.
    router = Router()

    @router.get("/health")
    def health(self, conn, request):
        # A handler may return a Response instead of calling conn.respond().
        return Response.json({"status": "ok", "connections": len(self.connections)})

    def on_request(self, conn, request):
        # Called once per request; keep-alive, pipelining and HEAD are done for you.
        if request.path != "/":
            return self.router(conn, request)  # /health, else 404 or 405
        conn.respond(200, {"content-type": "text/plain; charset=utf-8"}, "Hello, world!\n")
        return None
