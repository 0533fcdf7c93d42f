# RunnerHost developer entry points. Every target bootstraps .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-runtime
# The bench's peer (LangGraph's in-memory server) lives in a virtualenv of its own: its pins clash with Ray Serve's.
PEER_VENV  := .venv-langgraph
PEER_STAMP := $(PEER_VENV)/.installed

.PHONY: run test bench peer-venv install clean

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

## make test: the whole suite (needs Postgres at 127.0.0.1:5432, see README; tests/bench runs the peer)
test: $(STAMP) $(PEER_STAMP)
	$(PY) -m pytest -q --durations=20 $(PYTEST_ARGS)

## make bench: the performance harness (~25–30 min); writes bench/results.json, bench/results.png and
## the README's Performance block. `$(PY) -m bench --quick` is a smoke run.
bench: $(STAMP) $(PEER_STAMP)
	$(PY) -m bench

## make peer-venv: LangGraph's in-memory Agent Server for the bench (the `bench` extra's langgraph-cli[inmem])
peer-venv: $(PEER_STAMP)

$(PEER_STAMP): pyproject.toml | $(PY)
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet "$$($(PY) -c "import tomllib; print(next(r for r in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench'] if r.startswith('langgraph')))")"
	touch $(PEER_STAMP)

clean:
	rm -rf $(VENV) $(PEER_VENV) .runnerhost .pytest_cache
