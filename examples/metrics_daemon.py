"""Tally daemon: a line daemon with metrics of its own, on the daemon's registry.

Each line is a word; the reply is the word and how many times it has been
seen. The daemon counts words, replies and word lengths with
prometheus-client's own ``Counter``, ``Gauge`` and ``Histogram``, created on
``self.metrics_registry``: the registry of this daemon alone, which the
metrics endpoint serves beside daemonkit's figures and the process's.
Without ``--metrics`` the counters still count; nothing serves them.

Needs ``pip install 'daemonkit[metrics]'`` (prometheus-client).

Run it:   python -m daemonkit examples/metrics_daemon.py --metrics tcp://127.0.0.1:9100
Feed it:  printf 'apple\\npear\\napple\\n' | nc -q1 127.0.0.1 7000
Scrape:   curl -s http://127.0.0.1:9100/metrics | grep '^tally_'
"""

from prometheus_client import Counter, Gauge, Histogram

from daemonkit import Daemon, Lines

# Words tracked one by one; past this a new word is answered but not
# remembered, so a client sending random words cannot grow the table
# without bound (the same cap as examples/udp_stats.py's counters).
MAX_WORDS = 1000
# Longest word, in bytes: a word is short; a longer line is refused.
MAX_WORD = 128


class Tally(Daemon):
    listen = "tcp://127.0.0.1:7000"
    framing = Lines(max_length=MAX_WORD)

    def __init__(self, **settings):
        super().__init__(**settings)
        self.seen = {}
        registry = self.metrics_registry  # this daemon's own; made on first use
        self.words = Counter("tally_words", "Words received.", registry=registry)
        self.replies = Counter(
            "tally_replies", "Replies, by whether the word was new.", ["kind"], registry=registry
        )
        self.distinct = Gauge("tally_distinct_words", "Words remembered.", registry=registry)
        self.lengths = Histogram(
            "tally_word_length_bytes",
            "Length of the words received.",
            buckets=(1, 2, 4, 8, 16, 32, 64, MAX_WORD),
            registry=registry,
        )

    def on_read(self, conn, line):
        word = line.strip()
        self.words.inc()
        self.lengths.observe(len(word))
        count = self.seen.get(word, 0) + 1
        if count > 1 or len(self.seen) < MAX_WORDS:
            self.seen[word] = count
        self.replies.labels(kind="new" if count == 1 else "seen").inc()
        self.distinct.set(len(self.seen))
        conn.send(b"%s %d" % (word, count))
