# Two commands do all set-up from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install demo test reproduce benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m bnas_pyro.app.demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2

reproduce: $(STAMP)
	$(PY) -m pytest -q -m slow

benchmark: $(STAMP)
	$(PY) benchmarks/step_overhead.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/search_time.py
	$(PY) benchmarks/hypergrad_cost.py

clean:
	rm -rf $(VENV) build *.egg-info
