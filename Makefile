# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   - create .venv if missing, install, run the main job
#   make test   - create .venv if missing, install test extras and the embedded-target toolchains ([targets]),
#                 run the whole suite (notebooks, the browser test and the target tests too)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TARGETS_STAMP := $(VENV)/.installed-targets
EXTRAS := notebook,test,ray,mlflow,dashboard

.PHONY: install demo test test-fast lab dashboard clean

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

clean:
	rm -rf runs .pytest_cache
