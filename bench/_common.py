"""Process plumbing shared by the side-by-side benchmarks in bench/.

What it gives a benchmark script: the C load generator (and the C echo server
that calibrates it), built on demand into bench/.build/; servers started as
child processes, pinned to a core, probed for readiness, measured for CPU time
through /proc and stopped with SIGTERM (then SIGKILL); one load-generator run
returning its JSON record; per-core busy and steal shares from /proc/stat; and
small statistics helpers.

Rules it keeps: every wait has a deadline (readiness, load run, stop); a server
that fails is reported with the tail of its stderr instead of stopping the
whole run; nothing here prints, the caller decides what the user sees.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BUILD_DIR = BENCH_DIR / ".build"
RESULTS_DIR = BENCH_DIR / "results"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror")

#: Seconds a server gets to accept its first connection (the CLI imports the
#: package and the target file, so give it more than a bare script needs).
READY_TIMEOUT = 15.0
#: Seconds between SIGTERM and SIGKILL when stopping a server.
STOP_TIMEOUT = 5.0
#: Extra seconds a load run may take past warm-up + duration (connects, exit).
LOADGEN_SLACK = 20.0
#: Bytes of a failed server's stderr to show.
STDERR_TAIL = 2000
#: Environment variables that would slow a server down and skew a comparison.
SLOW_ENV = ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "PYTHONMALLOC")

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A benchmark step failed; the message says which and why."""


def cpu_seconds(fn: Callable[[], object]) -> float:
    """CPU seconds of this process that ``fn()`` takes, the cyclic GC paused (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()
        fn()
        return time.process_time() - t0
    finally:
        gc.enable()


def python_executable() -> str:
    """Return the project's virtualenv interpreter if there is one, else this one."""
    venv = REPO_DIR / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def child_env() -> dict[str, str]:
    """Return this environment minus the variables that slow a server down."""
    env = dict(os.environ)
    for name in SLOW_ENV:
        env.pop(name, None)
    return env


def build_c(name: str, libs: Sequence[str] = ()) -> Path:
    """Compile bench/NAME.c into bench/.build/NAME if it is missing or older than its source.

    ``libs`` are linker flags (e.g. ``-luv``). Returns the binary's path.
    Raises BenchError with the compiler's output if the build fails.
    """
    src, binary = BENCH_DIR / f"{name}.c", BUILD_DIR / name
    if binary.exists() and binary.stat().st_mtime >= src.stat().st_mtime:
        return binary
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    cmd = ["gcc", *CFLAGS, "-o", str(binary), str(src), *libs]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"cannot build {name} ({' '.join(cmd)}): {exc}") from exc
    if proc.returncode != 0:
        raise BenchError(f"building {name} failed:\n{proc.stderr.strip()}")
    return binary


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs the servers and the load generator run on."""

    server: frozenset[int] | None
    loadgen: frozenset[int] | None
    note: str


def plan_cpus() -> CpuPlan:
    """Put servers on the first available core and the load generator on the second.

    With a single core nothing is pinned and the note says so: the figures then
    include the load generator competing with the server.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return CpuPlan(None, None, f"only one core available ({cpus}): nothing pinned")
    return CpuPlan(
        frozenset({cpus[0]}),
        frozenset({cpus[1]}),
        f"server on core {cpus[0]}, load generator on core {cpus[1]}",
    )


def pin(pid: int, cpus: frozenset[int] | None) -> None:
    """Restrict process ``pid`` (0: this one) to ``cpus``; do nothing for None."""
    if cpus is not None:
        os.sched_setaffinity(pid, cpus)


def process_cpu_times(pid: int) -> tuple[float, float]:
    """Return (user, system) CPU seconds of process ``pid`` (all its threads).

    Reads /proc/PID/stat, whose resolution is one clock tick (usually 10 ms).
    Raises OSError if the process is gone.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces; count fields after its ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return utime / _CLK_TCK, stime / _CLK_TCK


def process_cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of process ``pid`` (see process_cpu_times)."""
    user, system = process_cpu_times(pid)
    return user + system


def runq_wait_seconds(pid: int) -> float:
    """Return the seconds process ``pid``'s main thread was runnable but not running.

    Reads /proc/PID/schedstat (nanoseconds). Time the hypervisor stole is not in
    it; see core_times(). Returns 0.0 where the kernel lacks schedstat.
    """
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except FileNotFoundError:
        if os.path.exists(f"/proc/{pid}"):
            return 0.0
        raise


@dataclass(frozen=True)
class CoreTimes:
    """Clock ticks one CPU spent busy (user, system, irq, softirq), stolen, and in all."""

    busy: int
    steal: int
    total: int


def core_times() -> dict[int, CoreTimes]:
    """Return each CPU's cumulative CoreTimes from /proc/stat.

    Busy time includes softirq, where the kernel does much of loopback TCP's
    work, and any other process on that core; steal is time the hypervisor
    gave the virtual CPU to someone else.
    """
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *rest = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            # user nice system idle iowait irq softirq steal guest guest_nice
            v = [int(x) for x in rest[:8]] + [0] * (8 - len(rest[:8]))
            user, nice, system, idle, iowait, irq, softirq, steal = v
            busy = user + nice + system + irq + softirq
            times[int(name[3:])] = CoreTimes(busy, steal, busy + idle + iowait + steal)
    return times


def core_shares(
    before: dict[int, CoreTimes], after: dict[int, CoreTimes], cpus: frozenset[int] | None
) -> tuple[float, float] | None:
    """Return (busy, steal) shares of ``cpus`` between two core_times() readings."""
    if not cpus:
        return None
    busy = sum(after[c].busy - before[c].busy for c in cpus)
    steal = sum(after[c].steal - before[c].steal for c in cpus)
    total = sum(after[c].total - before[c].total for c in cpus)
    return (busy / total, steal / total) if total > 0 else None


@dataclass
class Server:
    """One echo server run as a child process for the length of a workload.

    Call start(), then wait_ready(); measure with cpu_seconds(); always stop().
    """

    name: str
    argv: list[str]
    cpus: frozenset[int] | None = None
    env: dict[str, str] | None = None  # added to child_env()
    core: str | None = None  # the daemonkit core it reported ("compiled", "pure"), if any
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    _stderr: Any = field(default=None, repr=False)

    def start(self, port: int) -> None:
        """Start the process; its stderr goes to a temporary file for error reports."""
        self.port = port
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO_DIR,
            env=child_env() | (self.env or {}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,  # its own process group: signals reach its children too
        )
        # The child is still starting its interpreter: any thread it creates later
        # inherits this mask.
        try:
            pin(self.proc.pid, self.cpus)
        except OSError:
            pass  # it already exited; wait_ready() reports why

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once the port accepts a connection.

        Raises BenchError with the stderr tail if the process exits first or the
        port is not accepting after ``timeout`` seconds.
        """
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise BenchError(
                    f"exited with status {code} before accepting:\n{self.stderr_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise BenchError(
                    f"port {self.port} not accepting after {timeout:.0f} s:\n{self.stderr_tail()}"
                )
            time.sleep(0.05)

    def alive(self) -> bool:
        """Return True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """Return the server's CPU seconds so far (raises OSError if it is gone)."""
        assert self.proc is not None, "start() first"
        return process_cpu_seconds(self.proc.pid)

    def cpu_times(self) -> tuple[float, float]:
        """Return the server's (user, system) CPU seconds so far (OSError if it is gone)."""
        assert self.proc is not None, "start() first"
        return process_cpu_times(self.proc.pid)

    def runq_wait_seconds(self) -> float:
        """Return the seconds the server was runnable but not running, so far."""
        assert self.proc is not None, "start() first"
        return runq_wait_seconds(self.proc.pid)

    def stderr_tail(self, limit: int = STDERR_TAIL) -> str:
        """Return the last ``limit`` bytes of the server's stderr, decoded."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - limit))
        text: str = self._stderr.read().decode(errors="replace").strip()
        return text or "(no stderr output)"

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the server's process group (it and any children)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; idempotent.

        SIGKILL goes to the whole process group, so nothing the server started
        outlives it.
        """
        if self.proc is not None and self.proc.poll() is None:
            self.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def stop_all(servers: Sequence[Server], timeout: float = STOP_TIMEOUT) -> None:
    """Stop every server: SIGTERM to all at once, SIGKILL to those alive ``timeout`` s later."""
    for server in servers:
        if server.alive():
            server.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for server in servers:
        if server.proc is not None:
            try:
                server.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        server.stop()  # SIGKILLs what is still running, closes the stderr file


def run_loadgen(
    binary: Path,
    *,
    port: int,
    connections: int,
    size: int,
    pipeline: int,
    duration: float,
    warmup: float,
    cpus: frozenset[int] | None,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Run one closed-loop load against 127.0.0.1:``port``; return its JSON record.

    Raises BenchError if the generator fails (connect refused, bad output) or
    overruns warm-up + duration by more than LOADGEN_SLACK seconds.
    """
    args = [
        "--host=127.0.0.1",
        f"--port={port}",
        f"--connections={connections}",
        f"--size={size}",
        f"--pipeline={pipeline}",
        f"--duration={duration}",
        f"--warmup={warmup}",
        *extra,
    ]
    return run_loadgen_args(binary, args, timeout=warmup + duration + LOADGEN_SLACK, cpus=cpus)


def run_loadgen_args(
    binary: Path, args: Sequence[str], *, timeout: float, cpus: frozenset[int] | None
) -> dict[str, Any]:
    """Run the load generator with ``args``; return the JSON record of its last line.

    Raises BenchError if it exits non-zero, prints no JSON, or runs longer than
    ``timeout`` seconds (then it is killed).
    """
    proc = subprocess.Popen(
        [str(binary), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        pin(proc.pid, cpus)
    except OSError:
        pass  # it already exited; its status says why
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError(f"load generator overran {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise BenchError(f"load generator exited {proc.returncode}: {err.strip()}")
    try:
        record: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise BenchError(f"load generator printed no JSON: {out!r} {err!r}") from exc
    if err.strip():
        record["stderr"] = err.strip()
    return record


def rss_kib(pid: int) -> int:
    """Return the resident set size of process ``pid`` in KiB (VmRSS; raises OSError if gone)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise OSError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    """Return how many file descriptors process ``pid`` has open (raises OSError if gone)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Return (median, min, max) of a non-empty sequence."""
    return statistics.median(values), min(values), max(values)
