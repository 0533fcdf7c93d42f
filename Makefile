# RunnerHost developer entry points. Every target bootstraps .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-runtime

.PHONY: run test bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# `make run` needs only the runtime dependencies (faster on a fresh machine).
$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $(RUN_STAMP)

install: $(STAMP)

## make run: local Ray + the Serve app on the embedded SQLite store (./.runnerhost/)
run: $(RUN_STAMP)
	$(VENV)/bin/runnerhost serve

## make test: the whole suite (needs Postgres at 127.0.0.1:5432, see README)
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

## make bench: the performance harness; writes bench/results.json and bench/results.png
bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .runnerhost .pytest_cache
