"""Timer daemon: timers are events like any other.

Shows a periodic tick, a one-shot timer, a timer cancelled before it fires,
and a stats line every few seconds. Clients get a line for every tick.

Run it:   python -m daemonkit examples/timer_daemon.py --log-level debug
"""

from daemonkit import Daemon, Lines


class TimerDaemon(Daemon):
    listen = "tcp://127.0.0.1:7001"
    framing = Lines  # each frame is one line, without its "\n"
    tick_interval = 1.0
    stats_interval = 5.0

    def on_start(self):
        self.ticks = 0
        self.every(self.tick_interval, self.tick)  # drift-free: start + k * interval
        self.after(0.5, self.log.info, "one-shot timer fired")
        doomed = self.after(3.0, self.log.error, "this never prints")
        doomed.cancel()  # cancelled timers never fire
        self.every(self.stats_interval, self.report)

    def tick(self):
        self.ticks += 1
        self.log.debug("tick %d", self.ticks)
        self.broadcast(b"tick %d\n" % self.ticks)  # to every connected client

    def report(self):
        self.log.info("stats: %d ticks, %d clients", self.ticks, len(self.connections))

    def on_read(self, conn, line):
        if line == b"ticks":
            conn.send(b"%d" % self.ticks)  # send() encodes the frame: appends "\n"
        else:
            conn.send(b"unknown command: " + line)
