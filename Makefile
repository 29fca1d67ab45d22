# Two commands matter: `make demo` and `make test`. Both create .venv when needed
# and are safe to repeat.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed-test
SOURCES := pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd ext/*.pxi)

.PHONY: demo test test-twin test-slow fuzz soak lint bench bench-peers install clean deb

APT_LINE := apt-get install python3-venv python3-dev gcc

# $(call make-venv,DIR): a whole venv or none at all. A half-made one (Debian without
# python3-venv leaves DIR/bin/python behind) would fool every later make run.
define make-venv
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make: Schwebe needs Python 3.11 or newer; '$(PYTHON) -V' says: $$($(PYTHON) -V 2>&1)" >&2; \
	  exit 1; }
	@$(PYTHON) -m venv $(1) || { rm -rf $(1); \
	  echo "make: '$(PYTHON) -m venv $(1)' failed (removed the half-made $(1))." >&2; \
	  echo "make: on Debian, as root or with sudo:  $(APT_LINE)" >&2; \
	  exit 1; }
endef

# The compiled frame parser needs Python.h and a C compiler; without them the install
# still works on the pure-Python twin (a supported path), but say so instead of
# letting pip -q hide it.
CHECK_BUILD_TOOLS := import os, shlex, shutil, sysconfig; \
  h = os.path.join(sysconfig.get_config_var("INCLUDEPY") or "", "Python.h"); \
  cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"); \
  cc = (shlex.split(cc) or ["cc"])[0]; \
  missing = ([] if os.path.exists(h) else [f"the Python headers ({h})"]) \
          + ([] if shutil.which(cc) else [f"a C compiler ({cc})"]); \
  missing and print("make: warning: missing " + " and ".join(missing) \
          + ": the pure-Python twin will serve (slower frame parsing). For the compiled" \
          + " parser, on Debian:  $(APT_LINE)")

$(PY):
	$(call make-venv,$(VENV))
	@$(PIP) install -q --upgrade pip setuptools wheel || { rm -rf $(VENV); \
	  echo "make: could not install pip/setuptools/wheel into $(VENV) (removed it)." >&2; \
	  exit 1; }

# setuptools warns on every editable install of a flat layout ("be careful with folders named
# like your package"): true and useless here, so the build backend's warnings are silenced.
QUIET_PIP := PYTHONWARNINGS=ignore $(PIP) install -q

# The demo needs the runtime dependencies only; the tests add their toolchain (Playwright,
# mypy, ruff, ...) on top.
RUNTIME_STAMP := $(VENV)/.installed

$(RUNTIME_STAMP): $(PY) $(SOURCES)
	@$(PY) -c '$(CHECK_BUILD_TOOLS)' >&2
	$(QUIET_PIP) -e .
	@touch $@

$(STAMP): $(RUNTIME_STAMP)
	$(QUIET_PIP) -e '.[test]'
	@touch $@

install: $(STAMP)

# make demo PORT=8090 when 8080 is taken.
PORT ?= 8080
demo: $(RUNTIME_STAMP)
	@$(VENV)/bin/schwebe demo --port $(PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway drivers tests
	$(VENV)/bin/mypy

# The whole default suite on the compiled extension, then lint.
test: $(STAMP)
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory lint

# The same suite on the pure-Python twin.
# The same suite on the pure-Python parser, less the modules that parse no frame of their own
# (the page in a browser, logins, the fleet tools, pushed configs, self-update): they ran just before.
TWIN_SKIP := $(addprefix --ignore=tests/,test_status_page.py test_web_login.py test_web_live.py \
	test_fleet_cli.py test_fleet_mqtt.py test_fleet_repo.py test_remote_config.py test_deb.py \
	test_update.py test_update_daemon.py)
test-twin: $(STAMP)
	SCHWEBE_NO_EXTENSIONS=1 $(PY) -m pytest -q $(TWIN_SKIP)

# Long load, soak and crash-loop runs.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(SLOW_ARGS)

# 5 000 frames/s with every forwarder on, RSS sampled: CI runs 60 s, this 10 minutes
SOAK_SECONDS ?= 600
soak: $(STAMP)
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -q -s -m slow tests/test_soak.py

# The fuzzing campaign, longer than CI's 8 s per target: make fuzz FUZZ_SECONDS=600
FUZZ_SECONDS ?= 120
fuzz: $(STAMP)
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -q -s -m slow tests/test_fuzz.py

# Public peers run in their own environment, never in the project's.
PEER := .venv-peer
$(PEER)/bin/python:
	$(call make-venv,$(PEER))
	@$(PEER)/bin/python -m pip install -q liblora || { rm -rf $(PEER); exit 1; }

bench: $(STAMP) $(PEER)/bin/python
	$(PY) tests/bench/bench_frames.py --peer-python $(PEER)/bin/python
	@for b in tests/bench/bench_*.py; do case $$b in */bench_frames.py|*/bench_peers.py) continue;; esac; \
	  echo "== $$b"; $(PY) $$b || exit 1; done

# The Debian package for this machine's architecture, in dist/ (README "Deploy").
# deploy/check-arm64.sh builds and tests the arm64 one under qemu-user-static.
deb:
	deploy/build-deb.sh $(DEB_FLAGS)

# The peers side by side (tests/bench/bench_peers.py), each in its own environment:
# ThingsBoard IoT Gateway from PyPI (+ matplotlib for the plot) in .venv-tb, Node-RED from
# npm under .bench-peers/, run by Debian's nodejs (apt-get install nodejs npm). Not in CI.
TB := .venv-tb
TB_EXT = $(TB)/lib/python$$($(TB)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')/site-packages/thingsboard_gateway/extensions/socket
NODE_RED := .bench-peers/node-red/node_modules/node-red/red.js

$(TB)/.installed: tests/bench/peers/tb/gwmp_uplink_converter.py
	@test -x $(TB)/bin/python || { $(PYTHON) -m venv $(TB) || { rm -rf $(TB); exit 1; }; }
	$(TB)/bin/python -m pip install -q --disable-pip-version-check 'thingsboard-gateway==3.8.5' matplotlib \
	  || { echo "make: could not install thingsboard-gateway into $(TB)" >&2; exit 1; }
	cp tests/bench/peers/tb/gwmp_uplink_converter.py $(TB_EXT)/
	@touch $@

$(NODE_RED):
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "make: bench-peers needs Node.js and npm; on Debian: apt-get install nodejs npm" >&2; exit 1; }
	mkdir -p .bench-peers/node-red
	cd .bench-peers/node-red && npm install --no-audit --no-fund --omit=dev --silent 'node-red@4'

bench-peers: $(STAMP) $(TB)/.installed $(NODE_RED)
	$(PY) tests/bench/bench_peers.py --tb-python $(TB)/bin/python --node-red $(NODE_RED)

clean:
	rm -rf build *.egg-info gateway/*.so gateway/_*_c.c ext/*.c
