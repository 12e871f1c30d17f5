# gradserve: `make run` serves, `make test` tests, `make bench` benchmarks.
# Each target creates .venv and installs the project into it when needed, so a
# fresh machine with only python3 and make gets there in one command.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test bench lint clean oracle

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The Python client (clients/python) is a distribution of its own; its tests talk to this server.
$(STAMP): pyproject.toml clients/python/pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]' -e ./clients/python
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gradserve serve --host $(HOST) --port $(PORT)

# The second pass runs the engine and frontends suites again with every tensor on
# tests/fake_cupy.py's device (``--device fake-cuda``): the GPU path, checked without a GPU.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)
	$(PY) -m pytest tests/engine tests/frontends --device fake-cuda -m "not host_only" -q $(PYTEST_ARGS)

bench: $(STAMP)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) -m bench $(BENCH)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The oracles (optional): PyTorch for differential tests and benchmarks, and cupy, which
# imports without a GPU, so that the fake cupy of the GPU-seam tests is held to its API.
oracle: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,oracle,gpu]'

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
