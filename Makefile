# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   - create .venv if missing, install, run the main job
#   make test   - create .venv if missing, install test extras and the embedded-target toolchains ([targets]),
#                 run the whole suite (notebooks, the browser test, the target tests and the docs build too)
#   make docs   - build the documentation site into site/ (mkdocs build --strict: a broken reference fails)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TARGETS_STAMP := $(VENV)/.installed-targets
EXTRAS := notebook,test,ray,mlflow,dashboard,docs

.PHONY: install demo test test-fast lab dashboard docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

# The embedded-target toolchains (LiteRT, TFLite Micro, Vela, hls4ml): make test installs them,
# make demo does not need them.
$(TARGETS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS),targets]"
	touch $(TARGETS_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/workbench demo $(if $(OUT),--out $(OUT),) $(if $(OVERWRITE),--overwrite,)

test: $(TARGETS_STAMP)
	WORKBENCH_SMALL=1 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=30 tests --nbval-lax notebooks

test-fast: $(TARGETS_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests -m "not slow"

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

# Serve the sensitivity dashboard and trade-off explorer with Voila, locked (scripts/serve_dashboard.py):
# open the URL it prints, http://127.0.0.1:$(PORT)/?token=... (a fresh token per start), or set
# WORKBENCH_DASHBOARD_PASSWORD to log in with a password instead; loopback Host names only.
PORT ?= 8866
dashboard: $(STAMP)
	$(BIN)/python scripts/serve_dashboard.py --port=$(PORT)

# The documentation site (mkdocs.yml, docs/): guides, architecture, the API reference from the docstrings
# and the tutorials as committed (never executed here). Open site/index.html.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

clean:
	rm -rf runs site .pytest_cache
