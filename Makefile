# The two commands of README.md.
PY ?= python3

.PHONY: install test test-unit demo

install:
	bash deploy/local/install.sh

# Installs, then runs every test (unit + integration against a real local broker and Redis).
test: install
	$(PY) -m pytest -q -p no:cacheprovider

# Installs, starts a local broker + Redis, trains a small model, streams frames through a worker,
# prints verdicts, writes heatmap overlays to demo-output/, and stops everything it started.
demo: install
	$(PY) -m inspector.demo $(if $(DATA),--data $(DATA))

test-unit:
	$(PY) -m pytest -q -p no:cacheprovider tests/unit
