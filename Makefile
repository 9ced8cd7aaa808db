# Polku: `make run` serves the demo, `make test` runs every test. See README.md.
#
# Needs only Python 3.11 (python3) and make. `make test` also installs PostgreSQL and
# Chromium with apt-get when they are missing and it runs as root (see scripts/).
# `make run PORT=8001` serves on another port; `make test PYTEST_ARGS="-x -k plan"`.

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
HOST        := 127.0.0.1
PORT        := 8000
PYTEST_ARGS ?=
LOCALE_DIR  := web/locale

# Stamps: reinstall only when pyproject.toml changes (or the venv is new).
INSTALLED      := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test

.DEFAULT_GOAL := help
.PHONY: help run test bench catalogues install install-test ensure-services clean distclean

help:
	@echo "make run        set up, load demo data if the store is empty, serve on http://$(HOST):$(PORT)"
	@echo "make test       set up (incl. PostgreSQL and Chromium when missing), run pytest; PYTEST_ARGS='-k x' passes options"
	@echo "make bench      run the benchmarks (benchmarks/run_all.py)"
	@echo "make clean      remove caches, compiled catalogues and test/benchmark artefacts (keeps .venv and data/)"
	@echo "make distclean  clean, and remove .venv too"

# --- the virtual environment ------------------------------------------------------------
# Debian's python3 has no ensurepip without the python3-venv package: install it when we
# are root and apt-get exists, otherwise say what is missing.
$(BIN)/python:
	@if ! $(PYTHON) -m venv $(VENV); then \
	    rm -rf $(VENV); \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "make: '$(PYTHON) -m venv' failed; installing python3-venv with apt-get"; \
	        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv \
	            && $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }; \
	    else \
	        echo "make: '$(PYTHON) -m venv' failed. On Debian install python3-venv (apt-get install python3-venv), or set PYTHON=/path/to/python3.11." >&2; \
	        exit 1; \
	    fi; \
	fi

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(INSTALLED_TEST): $(INSTALLED)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

install: $(INSTALLED)
install-test: $(INSTALLED_TEST)

# --- gettext catalogues (only when there are .po files) ---------------------------------
catalogues: $(INSTALLED)
	@if [ -d $(LOCALE_DIR) ] && find $(LOCALE_DIR) -name '*.po' | grep -q .; then \
	    $(BIN)/pybabel compile -d $(LOCALE_DIR); \
	else \
	    echo "make: no .po files under $(LOCALE_DIR); nothing to compile"; \
	fi

# --- targets ----------------------------------------------------------------------------
run: $(INSTALLED) catalogues
	$(BIN)/polku demo --if-empty
	$(BIN)/polku serve --host $(HOST) --port $(PORT)

ensure-services: $(INSTALLED_TEST)
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-debian-tool.sh chromium /usr/bin/chromium chromium fonts-dejavu-core
	bash scripts/ensure-debian-tool.sh nginx /usr/sbin/nginx nginx

test: $(INSTALLED_TEST) catalogues ensure-services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(INSTALLED) catalogues
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf .pytest_cache .hypothesis test-artifacts benchmarks/results build *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	find $(LOCALE_DIR) -name '*.mo' -delete 2>/dev/null || true

distclean: clean
	rm -rf $(VENV)
