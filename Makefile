# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   - create .venv if missing, install, run the main job
#   make test   - create .venv if missing, install test extras, run the whole suite (notebooks and the browser test too)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lab dashboard clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[notebook,test,ray,mlflow,dashboard]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/workbench demo $(if $(OUT),--out $(OUT),) $(if $(OVERWRITE),--overwrite,)

test: $(STAMP)
	WORKBENCH_SMALL=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests --nbval-lax notebooks

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests -m "not slow"

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

# Serve the sensitivity dashboard and trade-off explorer with Voila: http://127.0.0.1:$(PORT)/
PORT ?= 8866
dashboard: $(STAMP)
	$(BIN)/voila dashboards/compression_dashboard.ipynb --port=$(PORT) --no-browser --Voila.ip=127.0.0.1

clean:
	rm -rf runs .pytest_cache
