# Transaction enrichment: set-up, run, test, benchmark, browse.
# Works on a fresh machine with only Python 3.11 and pip, and without USER set.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATABASE ?= database.db
PORT ?= 8001
ROWS ?= 1000000

PUSHGATEWAY := /usr/bin/prometheus-pushgateway
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run test test-deps bench browse clean pg pg-stop

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,cluster]"
	$(PY) -m compileall -q enrich flows algorithm.py  # each task is a new process: no recompiling (editable install)
	touch $(STAMP)

run: $(STAMP)
	$(PY) algorithm.py run --database $(DATABASE)

# A real Prometheus Pushgateway for the metrics integration test, and promtool for the alerting
# rules tests (Debian packages prometheus-pushgateway and prometheus), each installed when absent.
test-deps:
	@test -x $(PUSHGATEWAY) || command -v prometheus-pushgateway >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus-pushgateway; }
# PostgreSQL's server binaries (initdb, pg_ctl, postgres) for the throwaway test server (Debian package).
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql; }
# promtool, to check and unit-test the alerting rules (Debian's prometheus package).
	@command -v promtool >/dev/null || test -x /usr/bin/promtool || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

test: $(STAMP) test-deps
	$(PY) -m mypy
	$(PY) -m pytest -n 2 --dist loadfile

# A throwaway PostgreSQL on 127.0.0.1 for a person (data in .pg/, fsync off): prints its URL.
pg: $(STAMP) test-deps
	$(PY) -m tests.support.postgres start --dir .pg

# Stop it and delete its data.
pg-stop:
	$(PY) -m tests.support.postgres stop --dir .pg

# The benchmark harness: a generated ROWS-row file through the whole flow (fresh, re-run), alternating
# with the bare Metaflow graph and the plain script, reported as ratios (BENCH_ARGS: --repeat N, --markdown).
bench: $(STAMP)
	$(PY) -m enrich bench --rows $(ROWS) $(BENCH_ARGS)

# Browse DATABASE with datasette on PORT: views, facets, canned monitoring queries, full-text search.
browse: $(STAMP)
	$(PY) -m enrich browse --database $(DATABASE) --port $(PORT)

clean:
	rm -rf .metaflow .pytest_cache .hypothesis
