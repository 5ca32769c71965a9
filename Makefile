# moeflow — two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# uv ignores pip's config: hand it the local wheel folder pip is configured with (the CPU torch build lives there).
# --compile-bytecode: imports stay fast where PYTHONDONTWRITEBYTECODE is set (it halves a no-op dvc repro).
FIND_LINKS := $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^global.find-links='\(.*\)'/--find-links \1/p" | head -1)
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv demo test bench bench-scale bench-review-scale lock serve web web-deps web-build

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.8
	$(VENV)/bin/uv pip sync --python $(PY) --compile-bytecode $(FIND_LINKS) requirements.lock
	$(VENV)/bin/uv pip install --python $(PY) --no-deps -e .
	touch $@

lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 $(FIND_LINKS) -o requirements.lock

# This checkout's DVC settings. cache.type (hardlink,symlink: one copy of every tracked byte) is in the committed
# .dvc/config, so every clone links, `git clone && dvc pull` included (docs/pipeline.md, 'The cache').
.dvc/config.local: | venv
	test -d .dvc || $(VENV)/bin/dvc init -q
	$(VENV)/bin/dvc config --local core.site_cache_dir $(CURDIR)/.dvc/site-cache
	$(VENV)/bin/dvc config --local core.analytics false

# The whole DAG (dvc.yaml): fetch -> scrape -> detect -> review -> tag -> release -> train -> render -> export.
demo: venv .dvc/config.local
	$(VENV)/bin/dvc repro
	$(PY) -m tasks.review edit
	$(PY) -m tasks.tools.card

# Two workers, each running whole test modules (a module's fixtures are built once): 14 min on 2 cores, not 28.
# TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test: venv web-deps
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: venv web-deps
	for b in scrape detect tag train web dvc_noop pipeline; do $(PY) bench/$$b.py || exit 1; done
	$(PY) bench/pipeline.py --noop

# How every stage's cost grows with N (bench/scale.py; docs/scale.md). Long: 1k,4k takes ~40 min on
# 2 cores; `make bench-scale SIZES=1k,4k,16k,64k` is the large run (hours, an idle machine, ~120 GB free disk;
# ~60 GB with SCALE_ARGS=--no-transfer: the bench skips what the free disk cannot hold, and says so).
# SCALE_ARGS="--folder-import reference --stages scrape,detect": the folder import that makes no copy.
SIZES ?= 1k,4k
bench-scale: venv
	$(PY) bench/scale.py --sizes $(SIZES) $(SCALE_ARGS)

# The review queue at F kept faces: the stage's peak memory and the sheet in headless Chromium (~15 min at 64k).
FACES ?= 4k,16k,64k
bench-review-scale: venv web-deps
	$(PY) bench/review_scale.py --faces $(FACES)

# The browser generator: npm packages from the lock, Debian's chromium for the tests.
web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error

web-deps: web/node_modules/.package-lock.json
	bash scripts/install_browser.sh

web-build: web/node_modules/.package-lock.json
	cd web && node build.mjs

web: venv web-build
	$(PY) -m tasks.tools.webserve --root web/dist --port $(or $(PORT),8000)

# A local Prefect server + UI on 127.0.0.1:4200, the deployments of prefect.yaml, a process worker.
serve: venv .dvc/config.local
	bash scripts/serve.sh
