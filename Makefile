# Shortcuts for contributors, as peft and diffusers keep them. .ci/run is the source of truth for CI and calls
# `make quality` and `make test` with its own fresh environment (PYTHON / RUFF / MYPY).
PYTHON ?= .venv/bin/python
RUFF ?= .venv/bin/ruff
MYPY ?= .venv/bin/mypy

.PHONY: quality style test test-fast

# lint, format check and types: what CI runs before the tests
quality:
	$(RUFF) check src tests scripts
	$(RUFF) format --check src tests scripts
	$(MYPY)

# rewrite the code into the project's style
style:
	$(RUFF) check --fix src tests scripts
	$(RUFF) format src tests scripts

# the README's test command: the whole suite
test:
	$(PYTHON) -m pytest -q

# the inner loop: no subprocess, DDP, browser or end-to-end tests (under a minute on 2 cores)
test-fast:
	$(PYTHON) -m pytest -q -m "not slow"
