"""UDP stats daemon: counts datagrams, statsd style, and reports them over HTTP.

Each datagram carries one or more lines ``name:value|c`` (a statsd counter:
add the whole number ``value`` to the counter ``name``). Every datagram is
counted, with its bytes and its sender, even if no line in it makes sense;
lines that do not parse are counted as ``invalid``.

Run it:   python -m daemonkit examples/udp_stats.py
Feed it:  printf 'hits:1|c\\nerrors:2|c' | nc -u -w0 127.0.0.1 8125
Read it:  curl -s http://127.0.0.1:8126/
Move it:  --listen udp=udp://0.0.0.0:8125 --listen http=http://127.0.0.1:9000
"""

import json
import re

from daemonkit import Daemon, Endpoint

# statsd's advice for a LAN: 1432 bytes fit a 1500-byte Ethernet frame after
# the IP and UDP headers; longer datagrams are dropped (endpoint.oversize).
MAX_DATAGRAM = 1432
# Hostile or buggy senders must not grow the tables without bound: names and
# senders past these caps are not tracked one by one.
MAX_COUNTERS = 1000
MAX_SENDERS = 1000
NAME = re.compile(rb"[A-Za-z0-9_.\-]{1,128}")


def parse(data):
    """The ``(name, value)`` counters of one datagram, and how many lines were invalid."""
    counters, invalid = [], 0
    for line in data.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        name, _, rest = line.partition(b":")
        value, _, kind = rest.partition(b"|")
        if kind != b"c" or NAME.fullmatch(name) is None:
            invalid += 1
            continue
        try:
            counters.append((name.decode(), int(value)))
        except ValueError:
            invalid += 1
    return counters, invalid


class UdpStats(Daemon):
    listen = [
        Endpoint("udp://127.0.0.1:8125", max_datagram=MAX_DATAGRAM),  # name: "udp"
        "http://127.0.0.1:8126",  # name: "http"
    ]

    def on_start(self):
        self.datagrams = 0
        self.bytes = 0
        self.invalid = 0
        self.senders = {}  # "host:port" -> datagrams
        self.counters = {}  # name -> total

    def on_datagram(self, endpoint, data, addr):
        self.datagrams += 1
        self.bytes += len(data)
        sender = f"{addr[0]}:{addr[1]}"
        if sender in self.senders or len(self.senders) < MAX_SENDERS:
            self.senders[sender] = self.senders.get(sender, 0) + 1
        else:
            self.senders["other"] = self.senders.get("other", 0) + 1
        counters, invalid = parse(data)
        self.invalid += invalid
        for name, value in counters:
            if name in self.counters or len(self.counters) < MAX_COUNTERS:
                self.counters[name] = self.counters.get(name, 0) + value
            else:
                self.invalid += 1

    def on_request(self, conn, request):
        if request.method not in ("GET", "HEAD"):
            conn.respond(405, {"allow": "GET, HEAD"}, "use GET\n")
        elif request.path != "/":
            conn.respond(404, {"content-type": "text/plain"}, "not found; try /\n")
        else:
            report = {
                "datagrams": self.datagrams,
                "bytes": self.bytes,
                "invalid": self.invalid,
                "senders": self.senders,
                "counters": self.counters,
            }
            conn.respond(200, {"content-type": "application/json"}, json.dumps(report) + "\n")
