"""Run ``python -m daemonkit ARGS...`` in this process, after saying which core it loaded.

bench/run.py starts every daemonkit server through this file instead of
``python -m daemonkit`` so that the report can show the core each server
actually ran (issue 17: a compiled core, or the pure-Python modules when
``DAEMONKIT_NO_EXTENSIONS=1`` is in the environment): when
``BENCH_CORE_FILE`` is set, ``daemonkit.CORE`` ("compiled" or "pure"; "pure"
for a daemonkit without that attribute) is written to it, then the command
line runs exactly as ``-m`` runs it (``runpy``), with the working directory
first on ``sys.path`` as ``-m`` puts it.

Run: ``python bench/servers/_dk_run.py TARGET --listen tcp://127.0.0.1:PORT ...``.
"""

from __future__ import annotations

import os
import runpy
import sys


def main() -> None:
    sys.path[0] = os.getcwd()  # what `python -m` puts first, instead of this folder
    import daemonkit

    path = os.environ.get("BENCH_CORE_FILE")
    if path:
        with open(path, "w") as f:
            f.write(str(getattr(daemonkit, "CORE", "pure")) + "\n")
    sys.argv = ["daemonkit", *sys.argv[1:]]
    runpy.run_module("daemonkit", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
