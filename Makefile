# The two commands of README.md.
PY ?= python3

.PHONY: install test test-unit demo

install:
	bash deploy/local/install.sh

# Installs, then runs every test (unit + integration against a real local broker and Redis).
test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-unit:
	$(PY) -m pytest -q -p no:cacheprovider tests/unit
