# The two commands of the README. Both build the virtualenv on first use.
# `make install PYTHON=/usr/bin/python3.11 VENV=.venv-opt` builds one on another interpreter
# (bench/README.md, "The interpreter").
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

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

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
