"""Echo daemon: every byte a client sends comes back.

Run it:   python -m daemonkit examples/echo_daemon.py
Try it:   printf 'hello\n' | nc -q1 127.0.0.1 7000
Stop it:  Ctrl-C (or SIGTERM): a graceful stop; press it twice to stop at once.
"""

from daemonkit import Daemon


class EchoDaemon(Daemon):
    listen = "tcp://127.0.0.1:7000"  # --listen on the command line overrides it

    def on_accept(self, conn):
        conn.log.info("connected")  # every line of conn.log starts with "#id peer"

    def on_read(self, conn, data):
        conn.write(data)  # raw framing: data is whatever bytes arrived

    def on_close(self, conn, reason):
        conn.log.info("closed (%s): %d bytes in, %d out", reason, conn.bytes_in, conn.bytes_out)
