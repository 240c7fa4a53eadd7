# The two commands of the README. Both build the virtualenv on first use.
# `make install PYTHON=/usr/bin/python3.11 VENV=.venv-opt` builds one on another interpreter
# (bench/README.md, "The interpreter").
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start Farebox (embedded SQLite + in-process budgets, simulated upstream) and show it working.
demo: $(STAMP)
	$(VENV)/bin/farebox demo

## Run the whole test suite (Postgres and Redis tests skip when those are absent, unless CI=true).
test: $(STAMP)
	$(VENV)/bin/pytest

## The hot-path benchmark (bench/README.md) on an optimized CPython (PGO + LTO) like the
## production image's; Debian's python3.11 is built that way. BENCH_ARGS passes options on.
BENCH_PYTHON ?= /usr/bin/python3.11
bench:
	$(MAKE) install PYTHON=$(BENCH_PYTHON) VENV=.venv-opt
	.venv-opt/bin/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-opt var .pytest_cache .hypothesis
