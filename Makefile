# The README's commands. Every target builds its own virtualenv from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORE   := $(VENV)/.core
# The compiled core's sources (daemonkit/core/compiled.py lists the modules).
CORE_SOURCES := setup.py daemonkit/core/compiled.py daemonkit/core/connection.py \
	daemonkit/protocols/http/connection.py \
	$(wildcard daemonkit/framing/*.py)
# The core, framing and protocol tests, run a second time on the pure-Python core.
PURE_TESTS := tests/framing tests/http tests/websocket tests/test_daemon.py \
	tests/test_deadlines.py tests/test_reactor.py tests/test_log.py tests/test_udp.py \
	tests/test_tls.py tests/test_stop_backlog.py tests/test_exports.py \
	tests/test_compiled.py tests/examples/test_jobqueue.py

.PHONY: demo test lint typecheck unit docs bench bench-quick bench-timers bench-bots bench-http-ws bench-http-ws-quick bench-jobqueue bench-jobqueue-quick bench-broker bench-broker-quick clean

$(STAMP): setup.cfg pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,docs]'
	touch $(STAMP) $(CORE)

# pip install -e compiled the core (where a C compiler exists); a change to one
# of its sources compiles it again in place, so no test runs a stale extension.
$(CORE): $(STAMP) $(CORE_SOURCES)
	$(BIN)/python setup.py -q build_ext --inplace > $(VENV)/core-build.log 2>&1 \
		|| (cat $(VENV)/core-build.log; false)
	touch $(CORE)

## make demo: start the echo daemon, talk to it, stop it with SIGTERM.
demo: $(STAMP)
	$(BIN)/python examples/demo.py

## make test: lint, type-check, the whole suite on every backend, and the docs build.
test: lint typecheck unit docs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check daemonkit tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

# PYTHONASYNCIODEBUG=1: asyncio's debug checks run under the whole suite.
# -n 2: two pytest-xdist workers, one per core of the 2-core CI machine, not
# -n auto: the suite is checked to pass with two, and a worker per core of a
# bigger machine would only add clients and daemons competing for the same
# cores. --dist loadfile: one worker runs all of a module, so a module-scoped
# server (redis-server, beanstalkd) starts once and the modules that build
# into the tree (test_packaging, test_bench_jobqueue) never build twice at
# once. (--dist loadgroup would not do: with pytest 9.2 it ignores xdist_group
# marks, pytest-xdist issue 1386.) --no-loadscope-reorder: the modules go out
# in collection order, where tests/conftest.py puts the slowest first (xdist
# would send the modules with the fewest tests last, and they are the slowest).
# PYTEST_WORKERS=0 runs it in one process.
# build-pyuv: the pyuv backend (patched sdist, cached wheel) so the suite runs on it.
# The second run: PURE_TESTS on the pure-Python core (DAEMONKIT_NO_EXTENSIONS=1),
# on uvloop and the stdlib loop (the pyuv backend runs the same core code).
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder
unit: $(STAMP) $(CORE)
	sh scripts/ensure-test-tools
	sh scripts/build-pyuv $(BIN)/python
	PYTHONASYNCIODEBUG=1 $(PYTEST)
	DAEMONKIT_NO_EXTENSIONS=1 DAEMONKIT_TEST_BACKENDS=uvloop,asyncio PYTHONASYNCIODEBUG=1 \
		$(PYTEST) $(PURE_TESTS)

# On the pure-Python core: mypyc keeps no docstrings, and autodoc reads them.
docs: $(STAMP)
	DAEMONKIT_NO_EXTENSIONS=1 $(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html

## make bench: every workload side by side with the peers (about 30 min); renders docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python bench/run.py

## make bench-quick: the same, lightly (about 2 min); the test suite runs it once.
bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

bench-timers: $(STAMP)
	$(BIN)/python bench/timers.py

bench-bots: $(STAMP)
	$(BIN)/python bench/bots.py

## make bench-http-ws: HTTP hello (wrk) and WebSocket echo against uvicorn, aiohttp, websockets (about 4 min).
bench-http-ws: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/http_ws.py

bench-http-ws-quick: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/http_ws.py --quick

## make bench-jobqueue: examples/jobqueue against beanstalkd (installed like the test tools; about 2 min).
bench-jobqueue: $(STAMP)
	sh scripts/ensure-test-tools
	$(BIN)/python bench/jobqueue.py

bench-jobqueue-quick: $(STAMP)
	sh scripts/ensure-test-tools
	$(BIN)/python bench/jobqueue.py --quick

## make bench-broker: fan-out across 2 instances through Redis, daemonkit against Socket.IO (about 1 min).
bench-broker: $(STAMP)
	sh scripts/ensure-test-tools
	$(BIN)/python bench/broker_fanout.py

bench-broker-quick: $(STAMP)
	sh scripts/ensure-test-tools
	$(BIN)/python bench/broker_fanout.py --quick

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .mypy_cache .ruff_cache .hypothesis
