"""A job queue that speaks the beanstalkd protocol, built on daemonkit.

Run it:   python -m daemonkit examples/jobqueue/server.py --listen tcp://127.0.0.1:11300

* ``protocol.py``: the sans-IO command framer (bytes in, parsed commands out);
* ``store.py``: tubes and jobs, their states and ordered sets (no I/O);
* ``wal.py``: the write-ahead log (``JOBQUEUE_WAL``);
* ``server.py``: :class:`JobQueue`, the daemon that answers.
"""
