# The two commands of README.md. Everything Python lives in the project's virtual environment
# (.venv, made by deploy/local/install.sh with the first Python >= 3.11 on PATH).
VENV ?= .venv
PY := $(VENV)/bin/python
# the venv's console scripts (inspector, trainer) first for every recipe and what it starts
export PATH := $(abspath $(VENV))/bin:$(PATH)
export VENV

.PHONY: install test test-unit demo

install:
	bash deploy/local/install.sh

# Installs, then runs every test (unit + integration against a real local broker and Redis).
test: install
	$(PY) -m pytest -q -p no:cacheprovider

# Installs, starts a local broker + Redis, trains a small model, streams frames through a worker,
# prints verdicts, writes heatmap overlays to demo-output/, and stops everything it started.
demo: install
	$(PY) -m devtools demo $(if $(DATA),--data $(DATA))
	@echo "The project's Python environment is $(VENV): activate it with  . $(VENV)/bin/activate  (then inspector, trainer and the bench/ scripts run as in README.md)."

test-unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit
