# Two commands for a new user: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0

.PHONY: venv demo test test-fast bench lint format corpora clean

venv: $(STAMP)

# torch first: a plain `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/audiovae demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/audiovae bench all --out bench-results

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests recipes

format: $(STAMP)
	$(VENV)/bin/ruff format src tests recipes

corpora: $(STAMP)
	$(VENV)/bin/audiovae data build speech16k
	$(VENV)/bin/audiovae data build music24k

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
