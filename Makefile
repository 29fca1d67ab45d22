# Two commands matter: `make demo` and `make test`. Both create .venv when needed
# and are safe to repeat.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed-test
SOURCES := pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd)

.PHONY: demo test test-twin test-slow lint bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(STAMP): $(PY) $(SOURCES)
	$(PIP) install -q -e '.[test]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/schwebe demo

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway drivers tests
	$(VENV)/bin/mypy

# The whole default suite on the compiled extension, then lint.
test: $(STAMP)
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory lint

# The same suite on the pure-Python twin.
test-twin: $(STAMP)
	SCHWEBE_NO_EXTENSIONS=1 $(PY) -m pytest -q

# Long load, soak and crash-loop runs.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# Public peers run in their own environment, never in the project's.
PEER := .venv-peer
$(PEER)/bin/python:
	$(PYTHON) -m venv $(PEER)
	$(PEER)/bin/python -m pip install -q liblora

bench: $(STAMP) $(PEER)/bin/python
	$(PY) tests/bench/bench_frames.py --peer-python $(PEER)/bin/python
	@for b in tests/bench/bench_*.py; do [ $$b = tests/bench/bench_frames.py ] && continue; \
	  echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build *.egg-info gateway/*.so gateway/_*_c.c ext/*.c
