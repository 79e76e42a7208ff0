"""mypyc against Cython on the same source: the compiled core's per-read CPU, in-process.

docs/design.md chose mypyc for the compiled core ("Why mypyc, not Cython").
This script measures the alternative instead of assuming it:

1. It copies the ``daemonkit`` package's ``.py`` files (no extension modules)
   into a temporary directory and compiles the modules of
   ``COMPILED_MODULES`` there with Cython 3, **from the same files,
   unchanged** (pure-Python mode: annotations are read as types, as
   ``annotation_typing=True``, the default, does). A module Cython refuses
   with its annotations is compiled again without them
   (``annotation_typing=False``); a module that still does not build stays
   interpreted. Each outcome, the build's wall time and the extensions' total
   size are printed: a module that does not build unchanged is a finding in
   itself (mypyc compiles them all).
2. It runs the same in-process benchmark in one child process per variant
   and round: ``pure`` (``DAEMONKIT_NO_EXTENSIONS=1``), ``mypyc`` (the core
   as installed: ``pip install -e .`` or ``setup.py build_ext --inplace``
   built it) and each Cython build (the copy first on ``PYTHONPATH``). Each
   child reports the file every compiled module was loaded from, and a
   variant that did not load what it claims is refused, not reported.

The benchmark is a real :class:`daemonkit.Daemon` subclass hosting
``Connection`` objects fed by calling ``conn.data_received(data)`` directly,
with a transport whose ``write`` only counts (no sockets: the figure is the
framework's CPU alone, as bench/micro.py's ``idle-timeout`` does it). The
workloads, all with the daemon's default settings (idle and frame timeouts
on):

* ``echo``: raw framing, ``on_read`` → ``conn.write(data)``, 1 KiB reads;
* ``lines``: ``framing = Lines``, ``on_read`` → ``conn.send(line)``, 16
  lines of 64 bytes per read;
* ``lines-batch``: the same reads, ``on_frames`` → ``conn.send_all(lines)``;
* ``resp``: ``framing = Resp``, 16 ``SET`` commands per read (the array
  form clients send), ``on_read`` → ``conn.send("OK")`` (``+OK``: the
  framer's encoder, no store: the store would be the same Python in every
  variant);
* ``ref-echo`` and ``ref-lines``: a bare ``asyncio.Protocol`` echoing, and
  splitting lines and writing them once per read, in Python (as
  bench/servers/raw_uvloop.py and raw_uvloop_lines_coalesced.py do), on the
  same transport. Not daemonkit: the same in every variant, a control of the
  machine's noise between the children.

Every batch checks what was written (bytes and one write per read), so a
variant that does not do the work cannot look fast. Times are CPU time
(``time.process_time``) with the cyclic garbage collector paused during a
batch; each round runs every variant once, in a rotated order, and every
ratio is taken between variants of the same round; the table gives medians
and min-max over rounds.

Needs Cython (``pip install -e '.[bench]'``); without it the script says so
and exits with status 2. The default run took 2 to 2.5 minutes on two
shared cores, 1.5 to 2 of them the builds (mypyc's is skipped when the
installed core is used: ``--mypyc installed``, or ``auto`` with a fresh
in-place build); ``--tuned`` adds a second Cython build and a variant.

Usage: python bench/compilers.py [--rounds N] [--scale X] [--tuned] [--mypyc installed|build]
       [--json] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.machinery
import importlib.util
import json
import os
import re
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from _common import cpu_seconds

HERE = Path(__file__).resolve()

#: What the bench extra pins: the Cython this comparison was written against.
CYTHON_HINT = "pip install -e '.[bench]'  (Cython 3.0)"

#: Cython's defaults for pure-Python mode, spelled out (annotation_typing is
#: the default; language_level 3 is what the source is).
DEFAULT_DIRECTIVES: Mapping[str, Any] = MappingProxyType(
    {"language_level": 3, "annotation_typing": True}
)
#: The cheap directives a user would try first: plain C functions instead of
#: cyfunction objects, and no index checks (the code indexes little).
TUNED_DIRECTIVES: Mapping[str, Any] = MappingProxyType(
    {**DEFAULT_DIRECTIVES, "binding": False, "boundscheck": False, "wraparound": False}
)

#: Exit status of a one-module build: Cython refused the source, or the C
#: compiler refused what Cython generated.
_CYTHON_FAILED = 3
_C_FAILED = 4

#: Connections each workload's reads go round-robin to.
CONNECTIONS = 16

ECHO_READ = b"x" * 1024
LINE = b"y" * 63 + b"\n"
LINES_READ = LINE * 16
SET_COMMAND = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000042\r\n$3\r\nxxx\r\n"
RESP_READ = SET_COMMAND * 16
RESP_REPLY = b"+OK\r\n"


# -- the build (parent side) ---------------------------------------------------


@dataclass
class ModuleBuild:
    """How one module of ``COMPILED_MODULES`` fared under Cython."""

    module: str
    #: "typed" (annotations used), "untyped" (compiled with
    #: annotation_typing=False after Cython refused the annotations), or
    #: "interpreted" (no build: the .py runs).
    outcome: str
    #: Why it is not "typed": the compiler's first error line.
    why: str = ""
    size: int = 0


@dataclass
class Build:
    """One Cython build of the compiled modules in a copy of the package."""

    name: str
    directives: dict[str, Any]
    root: Path
    seconds: float = 0.0
    modules: list[ModuleBuild] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Total bytes of the extension modules built."""
        return sum(m.size for m in self.modules)


def _package_dir() -> Path:
    """The ``daemonkit`` package this interpreter imports (without importing it)."""
    spec = importlib.util.find_spec("daemonkit")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("daemonkit is not importable: run from a checkout with it installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _compiled_modules(package: Path) -> tuple[str, ...]:
    """``COMPILED_MODULES``, read as setup.py reads it (runpy: nothing is imported)."""
    switch = runpy.run_path(str(package / "core" / "compiled.py"), run_name="_switch")
    modules: tuple[str, ...] = switch["COMPILED_MODULES"]
    return modules


def _copy_sources(package: Path, dest: Path) -> None:
    """Copy the package's ``.py`` files (and nothing else) under ``dest/daemonkit``."""
    for source in package.rglob("*.py"):
        target = dest / "daemonkit" / source.relative_to(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _first_error(output: str) -> str:
    """The first line of compiler output that names the problem."""
    for line in output.splitlines():
        if ".py:" in line and not line.startswith("warning:"):
            return line.strip()
        if ": error:" in line:
            return line.strip()
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def _build_module(root: Path, module: str, directives: Mapping[str, Any]) -> ModuleBuild:
    """Compile one module in ``root``: with its annotations, then without, then give up."""
    attempts = [dict(directives)]
    if directives.get("annotation_typing", True):
        attempts.append({**directives, "annotation_typing": False})
    why = ""
    for attempt in attempts:
        proc = subprocess.run(
            [sys.executable, str(HERE), "--build-one", module, json.dumps(attempt)],
            cwd=root,
            env=_cython_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            so = _extension_of(root, module)
            if so is None:
                return ModuleBuild(module, "interpreted", "build produced no extension")
            outcome = "typed" if attempt.get("annotation_typing", True) else "untyped"
            return ModuleBuild(module, outcome, why, so.stat().st_size)
        error = _first_error(proc.stderr + proc.stdout)
        if proc.returncode == _CYTHON_FAILED and not why:
            why = f"Cython: {error}"
            continue  # retry without the annotations
        stage = "C compiler" if proc.returncode == _C_FAILED else "Cython"
        return ModuleBuild(
            module, "interpreted", f"{why}; {stage}: {error}" if why else f"{stage}: {error}"
        )
    return ModuleBuild(module, "interpreted", why)


def _extension_of(root: Path, module: str) -> Path | None:
    """The extension module file built for ``module`` under ``root``, if any."""
    stem = root / module.replace(".", "/")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = stem.with_name(stem.name + suffix)
        if path.is_file():
            return path
    return None


def _cython_env() -> dict[str, str]:
    """The environment of a build child: this one, where Cython is importable."""
    env = dict(os.environ)
    env.pop("DAEMONKIT_NO_EXTENSIONS", None)
    return env


def build(name: str, directives: Mapping[str, Any], package: Path, modules: Sequence[str]) -> Build:
    """Copy the package's sources and compile ``modules`` there, two at a time."""
    root = Path(tempfile.mkdtemp(prefix=f"daemonkit-{name}-"))
    _copy_sources(package, root)
    result = Build(name, dict(directives), root)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        result.modules = list(pool.map(lambda m: _build_module(root, m, directives), modules))
    # A module that builds may still fail at import (Cython checks an
    # annotated argument's type where Python does not): build it again
    # without its annotations, or leave it interpreted, until all import.
    while (failure := _import_failure(root, modules)) is not None:
        module, error = failure
        index = [m.module for m in result.modules].index(module)
        old = result.modules[index]
        if old.outcome == "interpreted":
            raise SystemExit(f"{module} does not import even as Python: {error}")
        if old.outcome == "typed":
            untyped = {**directives, "annotation_typing": False}
            new = _build_module(root, module, untyped)
            new.why = f"imports fail typed: {error}" + (f"; {new.why}" if new.why else "")
        else:
            so = _extension_of(root, module)
            if so is not None:
                so.unlink()
            new = ModuleBuild(module, "interpreted", f"{old.why}; import fails: {error}")
        result.modules[index] = new
    result.seconds = time.perf_counter() - t0
    return result


#: What setup.py needs beside the package to build it (it reads setup.cfg,
#: which names PYPI.md and LICENSE).
_PROJECT_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "PYPI.md", "LICENSE")


def build_mypyc(package: Path, modules: Sequence[str]) -> Build:
    """Copy the project and build its compiled core as ``make`` does (setup.py, in place)."""
    root = Path(tempfile.mkdtemp(prefix="daemonkit-mypyc-"))
    _copy_sources(package, root)
    for name in _PROJECT_FILES:
        if (package.parent / name).is_file():
            shutil.copy2(package.parent / name, root / name)
    if not (root / "setup.py").is_file():
        raise SystemExit(f"no setup.py next to {package}: use --mypyc installed")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=root,
        env=_cython_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the mypyc build failed:\n{proc.stderr[-3000:]}")
    result = Build("mypyc", {"opt_level": "3"}, root, seconds)
    for module in modules:
        so = _extension_of(root, module)
        if so is None:
            raise SystemExit(f"the mypyc build made no extension for {module}:\n{proc.stderr}")
        result.modules.append(ModuleBuild(module, "typed", size=so.stat().st_size))
    for runtime in (root / "daemonkit" / "core").glob("_native__mypyc*"):
        result.modules.append(
            ModuleBuild("daemonkit.core._native__mypyc", "typed", size=runtime.stat().st_size)
        )
    return result


def _import_failure(root: Path, modules: Sequence[str]) -> tuple[str, str] | None:
    """Import every module of the copy in a child; the first that fails, and why."""
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    env = _cython_env()
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", code, *modules],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 0:
        return None
    # Cython names a module's top level "init <module>" in a traceback.
    found = re.findall(r"in init (daemonkit[\w.]*)", proc.stderr)
    error = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
    if not found or found[-1] not in modules:
        raise SystemExit(f"the Cython build in {root} does not import:\n{proc.stderr}")
    return found[-1], error


def _build_one(module: str, directives_json: str) -> int:
    """Child: cythonize and compile one module in place in the current directory."""
    directives = json.loads(directives_json)
    cythonize = importlib.import_module("Cython.Build").cythonize
    compile_error = importlib.import_module("Cython.Compiler.Errors").CompileError
    setuptools = importlib.import_module("setuptools")
    path = module.replace(".", "/") + ".py"
    try:
        extensions = cythonize(
            [path], compiler_directives=directives, quiet=True, force=True, language_level=3
        )
    except compile_error as exc:
        print(f"{exc}", file=sys.stderr)
        return _CYTHON_FAILED
    temp = "build/" + module
    try:
        setuptools.setup(
            name="daemonkit-cython-bench",
            ext_modules=extensions,
            script_args=["-q", "build_ext", "--inplace", "--build-temp", temp],
        )
    except SystemExit as exc:  # distutils reports a failed compiler run this way
        print(f"{exc}", file=sys.stderr)
        return _C_FAILED
    return 0


# -- the benchmark (child side) ------------------------------------------------


def _feed(receivers: list[Callable[[bytes], None]], data: bytes, reads: int) -> float:
    """Deliver ``reads`` reads of ``data`` round-robin; the CPU seconds it took."""
    full, rest = divmod(reads, len(receivers))

    def run() -> None:
        for _ in range(full):
            for receive in receivers:
                receive(data)
        for receive in receivers[:rest]:
            receive(data)

    return cpu_seconds(run)


@dataclass
class Workload:
    """One workload: what a read carries, how many frames, what must come back."""

    name: str
    data: bytes
    frames: int
    reply: int  # bytes written back per read
    #: Reads per timed batch at --scale 1: about 0.1-0.2 s of CPU on the pure core.
    reads: int


WORKLOADS = (
    Workload("echo", ECHO_READ, 1, len(ECHO_READ), 200_000),
    Workload("lines", LINES_READ, 16, len(LINES_READ), 16_000),
    Workload("lines-batch", LINES_READ, 16, len(LINES_READ), 40_000),
    Workload("resp", RESP_READ, 16, 16 * len(RESP_REPLY), 2_000),
    Workload("ref-echo", ECHO_READ, 1, len(ECHO_READ), 500_000),
    Workload("ref-lines", LINES_READ, 16, len(LINES_READ), 80_000),
)


def _daemon_classes() -> dict[str, type[Any]]:
    """The daemons of the workloads: written as a daemonkit user writes them."""
    from daemonkit import Daemon
    from daemonkit.framing import Lines, Resp

    class Echo(Daemon):
        listen = "tcp://127.0.0.1:0"

        def on_read(self, conn: Any, data: bytes) -> None:
            conn.write(data)

    class LineEcho(Daemon):
        listen = "tcp://127.0.0.1:0"
        framing = Lines

        def on_read(self, conn: Any, line: bytes) -> None:
            conn.send(line)

    class BatchLineEcho(Daemon):
        listen = "tcp://127.0.0.1:0"
        framing = Lines

        def on_frames(self, conn: Any, lines: list[bytes]) -> None:
            conn.send_all(lines)

    class RespOK(Daemon):
        listen = "tcp://127.0.0.1:0"
        framing = Resp

        def on_read(self, conn: Any, command: list[bytes]) -> None:
            conn.send("OK")

    return {"echo": Echo, "lines": LineEcho, "lines-batch": BatchLineEcho, "resp": RespOK}


def _counting_transport() -> type[Any]:
    """daemonkit.testing's MemoryTransport, with a ``write`` that only counts."""
    from daemonkit.testing import MemoryTransport

    class CountingTransport(MemoryTransport):
        """Counts writes and bytes; keeps nothing."""

        writes = 0
        written = 0

        def write(self, data: bytes | bytearray | memoryview) -> None:
            self.writes += 1
            self.written += len(data)

    return CountingTransport


def _reference_protocols() -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """The bare Protocols of bench/run.py's references: raw echo, and line echo split in Python.

    Imported from bench/servers (put last on ``sys.path``, so that it can never
    shadow the daemonkit build under test), so the reference is the very code
    the end-to-end benchmarks run.
    """
    servers = str(HERE.parent / "servers")
    if servers not in sys.path:
        sys.path.append(servers)
    from raw_uvloop import Echo
    from raw_uvloop_lines_coalesced import CoalescedLineEcho

    return Echo, CoalescedLineEcho


def _run_workload(work: Workload, reads: int) -> float:
    """One warmed-up, checked batch of ``work``: CPU nanoseconds per read."""
    transport_class = _counting_transport()
    if work.name.startswith("ref-"):
        echo, lines = _reference_protocols()
        protocol = echo if work.name == "ref-echo" else lines
        transports = []
        receivers = []
        for _ in range(CONNECTIONS):
            proto = protocol()
            transport = transport_class(proto)
            proto.connection_made(transport)
            transports.append(transport)
            receivers.append(proto.data_received)
        return _timed(work, reads, receivers, transports)

    from daemonkit.core.reactor import Reactor

    daemon = _daemon_classes()[work.name](max_connections=CONNECTIONS + 1)
    backend = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    reactor = Reactor(backend)
    try:
        daemon.start(reactor, install_signals=False, bind=False)
        transports = []
        receivers = []
        for _ in range(CONNECTIONS):
            conn = daemon._new_connection()
            transport = transport_class(conn)
            conn.connection_made(transport)
            transports.append(transport)
            receivers.append(conn.data_received)
        return _timed(work, reads, receivers, transports)
    finally:
        daemon.release_after_run()
        reactor.close()


def _timed(work: Workload, reads: int, receivers: list[Any], transports: list[Any]) -> float:
    """Warm up, time one batch, and check that every read was answered in one write."""
    _feed(receivers, work.data, max(reads // 10, CONNECTIONS))
    before = sum(t.writes for t in transports), sum(t.written for t in transports)
    spent = _feed(receivers, work.data, reads)
    writes = sum(t.writes for t in transports) - before[0]
    written = sum(t.written for t in transports) - before[1]
    if writes != reads or written != reads * work.reply:
        raise RuntimeError(
            f"{work.name}: {reads} reads gave {writes} writes of {written} bytes, "
            f"expected {reads} writes of {reads * work.reply}"
        )
    return spent / reads * 1e9


def _loaded_from(modules: Sequence[str]) -> dict[str, str]:
    """Import each of ``modules``; the file each one was loaded from."""
    files = {}
    for name in modules:
        module = importlib.import_module(name)
        files[name] = str(getattr(module, "__file__", "") or "")
    return files


def _child(variant: str, modules_json: str, scale: float, order: int) -> int:
    """Child: report what loaded, run every workload once, print one JSON line."""
    import daemonkit.core.compiled as compiled

    modules = json.loads(modules_json)
    files = _loaded_from(modules)
    works = list(WORKLOADS[order % len(WORKLOADS) :] + WORKLOADS[: order % len(WORKLOADS)])
    results = {w.name: _run_workload(w, max(int(w.reads * scale), CONNECTIONS)) for w in works}
    record = {
        "variant": variant,
        "core": compiled.core(),
        "mypyc_runtime": "daemonkit.core._native__mypyc" in sys.modules,
        "files": files,
        "ns_per_read": results,
    }
    print(json.dumps(record), flush=True)
    return 0


# -- the parent: variants, rounds, checks, table -------------------------------


@dataclass
class Variant:
    """A way to run the core: its name, its environment, and what it must load."""

    name: str
    env: dict[str, str]
    #: Where each compiled module must come from: "py" or "ext", and the
    #: directory it must be under (None: anywhere).
    expect: dict[str, tuple[str, Path | None]]
    mypyc: bool = False


def _check(variant: Variant, record: dict[str, Any]) -> None:
    """Refuse a child that did not load what ``variant`` claims."""
    ext = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for module, (kind, under) in variant.expect.items():
        path = record["files"].get(module, "")
        is_ext = path.endswith(ext)
        if is_ext != (kind == "ext") or (under is not None and not path.startswith(str(under))):
            raise SystemExit(
                f"{variant.name}: {module} was loaded from {path or '?'}, "
                f"expected a {'compiled extension' if kind == 'ext' else '.py file'}"
                + (f" under {under}" if under is not None else "")
            )
    if record["mypyc_runtime"] != variant.mypyc:
        raise SystemExit(f"{variant.name}: mypyc's runtime loaded: {record['mypyc_runtime']}")


def _run_child(
    variant: Variant, modules: Sequence[str], scale: float, order: int
) -> dict[str, Any]:
    command = [sys.executable, str(HERE), "--child", variant.name, json.dumps(list(modules))]
    command += ["--scale", str(scale), "--order", str(order)]
    proc = subprocess.run(
        command,
        env=variant.env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{variant.name}: child failed:\n{proc.stderr}")
    record: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    _check(variant, record)
    return record


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DAEMONKIT_NO_EXTENSIONS", None)
    return env


def _variants(
    package: Path, modules: Sequence[str], builds: list[Build], installed_mypyc: bool
) -> list[Variant]:
    """pure, mypyc (installed, or built in a copy), and one per Cython build."""
    variants = [
        Variant(
            "pure",
            {**_base_env(), "DAEMONKIT_NO_EXTENSIONS": "1"},
            {m: ("py", package) for m in modules},
        )
    ]
    if installed_mypyc:
        variants.append(
            Variant("mypyc", _base_env(), {m: ("ext", package) for m in modules}, mypyc=True)
        )
    for b in builds:
        env = _base_env()
        env["PYTHONPATH"] = os.pathsep.join(
            [str(b.root), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        )
        expect: dict[str, tuple[str, Path | None]] = {
            m.module: ("py" if m.outcome == "interpreted" else "ext", b.root / "daemonkit")
            for m in b.modules
            if m.module in modules
        }
        variants.append(Variant(b.name, env, expect, mypyc=b.name == "mypyc"))
    return variants


def _stale_modules(package: Path, modules: Sequence[str]) -> list[str]:
    """Compiled modules whose .py is newer than their extension (a stale build)."""
    stale = []
    for m in modules:
        so = _extension_of(package.parent, m)
        source = package.parent / (m.replace(".", "/") + ".py")
        if so is not None and source.stat().st_mtime > so.stat().st_mtime:
            stale.append(m)
    return stale


def _median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _summarise(records: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Per workload and variant: ns/read and ns/frame (median, min, max) and ratios."""
    by_round: dict[int, dict[str, dict[str, float]]] = {}
    for rec in records:
        by_round.setdefault(rec["round"], {})[rec["variant"]] = rec["ns_per_read"]
    summary: dict[str, Any] = {}
    for work in WORKLOADS:
        rows = {}
        for name in names:
            per_read = [r[name][work.name] for r in by_round.values() if name in r]
            to_pure = [
                r[name][work.name] / r["pure"][work.name]
                for r in by_round.values()
                if name in r and "pure" in r
            ]
            to_mypyc = [
                r[name][work.name] / r["mypyc"][work.name]
                for r in by_round.values()
                if name in r and "mypyc" in r
            ]
            med, lo, hi = _median_range(per_read)
            rows[name] = {
                "ns_per_read": [med, lo, hi],
                "ns_per_frame": [med / work.frames, lo / work.frames, hi / work.frames],
                "to_pure": list(_median_range(to_pure)) if to_pure else None,
                "to_mypyc": list(_median_range(to_mypyc)) if to_mypyc else None,
            }
        summary[work.name] = rows
    return summary


def _ratio(values: list[float] | None) -> str:
    """A ratio as ``median (min-max)``, or a dash."""
    if not values:
        return "-"
    med, lo, hi = values
    return f"{med:.2f} ({lo:.2f}-{hi:.2f})"


def _table(summary: dict[str, Any], names: list[str]) -> str:
    lines = [
        "| workload | variant | ns/read | ns/frame median (min-max) | x pure | x mypyc |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for work in WORKLOADS:
        for name in names:
            row = summary[work.name][name]
            med, lo, hi = row["ns_per_frame"]
            lines.append(
                f"| {work.name} | {name} | {row['ns_per_read'][0]:,.0f} "
                f"| {med:,.0f} ({lo:,.0f}-{hi:,.0f}) "
                f"| {_ratio(row['to_pure'])} | {_ratio(row['to_mypyc'])} |"
            )
    return "\n".join(lines)


def _build_report(
    builds: list[Build], package: Path, modules: Sequence[str], installed: bool
) -> str:
    lines = []
    if installed:
        files = [_extension_of(package.parent, m) for m in modules]
        files += list(package.glob("core/_native__mypyc*"))
        size = sum(p.stat().st_size for p in files if p is not None)
        lines.append(f"mypyc: installed next to the sources, {size / 1e6:.2f} MB of extensions")
    for b in builds:
        if b.name == "mypyc":
            lines.append(
                f"mypyc: built in {b.seconds:.0f} s (setup.py build_ext --inplace), "
                f"{b.size / 1e6:.2f} MB; all {len(modules)} modules compiled"
            )
            continue
        typed = sum(m.outcome == "typed" for m in b.modules)
        lines.append(
            f"{b.name}: built in {b.seconds:.0f} s (2 modules at a time), {b.size / 1e6:.2f} MB; "
            f"{typed} of {len(b.modules)} modules compiled with their annotations; "
            f"directives {json.dumps(b.directives)}"
        )
        for m in b.modules:
            if m.outcome != "typed":
                lines.append(f"  {m.module}: {m.outcome}: {m.why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every batch's reads (default 1: 0.1-0.2 s per batch on the pure core)",
    )
    parser.add_argument(
        "--tuned",
        action="store_true",
        help="also build with binding=False, boundscheck=False, wraparound=False",
    )
    parser.add_argument(
        "--mypyc",
        choices=("auto", "installed", "build"),
        default="auto",
        help="the mypyc core: the one built next to the sources, or a fresh build of "
        "a copy (auto: the installed one when it is complete and not older than its sources)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the Cython copies")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--order", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--build-one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build_one:
        return _build_one(*args.build_one)
    if args.child:
        return _child(args.child[0], args.child[1], args.scale, args.order)
    if args.rounds < 1 or not args.scale > 0:
        parser.error("--rounds must be >= 1 and --scale > 0")
    try:
        cython = importlib.import_module("Cython")
    except ImportError:
        print(f"Cython is not installed; {CYTHON_HINT}", file=sys.stderr)
        return 2

    package = _package_dir()
    modules = _compiled_modules(package)
    complete = all(_extension_of(package.parent, m) is not None for m in modules)
    stale = _stale_modules(package, modules)
    installed = args.mypyc == "installed" or (args.mypyc == "auto" and complete and not stale)
    if installed and not complete:
        print(f"no mypyc-compiled core next to {package}; try --mypyc build", file=sys.stderr)
        return 2
    if installed and stale:
        print(f"warning: the mypyc build is older than {', '.join(stale)}", file=sys.stderr)
    configs = [("cython", DEFAULT_DIRECTIVES)]
    if args.tuned:
        configs.append(("cython-tuned", TUNED_DIRECTIVES))
    builds: list[Build] = []
    try:
        if not installed:
            print("building mypyc (setup.py build_ext --inplace in a copy)...", file=sys.stderr)
            builds.append(build_mypyc(package, modules))
        for name, directives in configs:
            print(f"building {name} (Cython {cython.__version__})...", file=sys.stderr)
            builds.append(build(name, directives, package, modules))
        variants = _variants(package, modules, builds, installed)
        names = [v.name for v in variants]
        records = []
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for variant in order:
                record = _run_child(variant, modules, args.scale, r)
                record["round"] = r
                records.append(record)
        summary = _summarise(records, names)
        first = {rec["variant"]: rec for rec in records}
        if args.json:
            print(
                json.dumps(
                    {
                        "python": sys.version.split()[0],
                        "cython": cython.__version__,
                        "rounds": args.rounds,
                        "scale": args.scale,
                        "reads": {w.name: w.reads for w in WORKLOADS},
                        "loaded": {n: first[n]["files"] for n in names},
                        "builds": [
                            {
                                "name": b.name,
                                "directives": b.directives,
                                "seconds": b.seconds,
                                "bytes": b.size,
                                "modules": [m.__dict__ for m in b.modules],
                            }
                            for b in builds
                        ],
                        "summary": summary,
                    },
                    indent=1,
                )
            )
            return 0
        print(f"Python {sys.version.split()[0]}, Cython {cython.__version__}, {args.rounds} rounds")
        for name in names:
            where = sorted({str(Path(f).parent.parent) for f in first[name]["files"].values()})
            print(f"{name}: core() = {first[name]['core']}; compiled modules loaded from {where}")
        print(_build_report(builds, package, modules, installed))
        print()
        print(_table(summary, names))
    finally:
        if not args.keep:
            for b in builds:
                shutil.rmtree(b.root, ignore_errors=True)
        else:
            for b in builds:
                print(f"kept {b.name} in {b.root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
