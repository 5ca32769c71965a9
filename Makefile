# moeflow — two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# uv ignores pip's config: hand it the local wheel folder pip is configured with (the CPU torch build lives there).
FIND_LINKS := $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^global.find-links='\(.*\)'/--find-links \1/p" | head -1)
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv demo test bench lock clean-state

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.8
	$(VENV)/bin/uv pip sync --python $(PY) $(FIND_LINKS) requirements.lock
	$(VENV)/bin/uv pip install --python $(PY) --no-deps -e .
	touch $@

lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 $(FIND_LINKS) -o requirements.lock

.dvc/config.local: | venv
	test -d .dvc || $(VENV)/bin/dvc init -q
	$(VENV)/bin/dvc config --local core.site_cache_dir $(CURDIR)/.dvc/site-cache
	$(VENV)/bin/dvc config --local core.analytics false

demo: venv .dvc/config.local
	$(VENV)/bin/dvc repro

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) bench/scrape.py
