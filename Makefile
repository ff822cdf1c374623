# Shortcuts for contributors, as peft and diffusers keep them. .ci/run stays the source of truth for CI (it runs the
# same commands with its own fresh environment, and does not need make on a fresh machine).
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
