# The workspace's commands. Every target sets up first (idempotent, seconds when nothing changed).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast lint format lock bench clean

setup:
	@bash scripts/setup.sh

## make demo: the whole loop on the embedded sim robot (DEMO_ARGS="--size full" for the paper-size run).
demo: setup
	@MUJOCO_GL=$${MUJOCO_GL:-osmesa} $(VENV)/bin/world4rl demo $(DEMO_ARGS)

## make test: set up, lint, then the whole test suite (slow end-to-end cases included).
test: setup lint
	@bash scripts/run_tests.sh

## make test-fast: the suite without the slow end-to-end cases.
test-fast: setup
	@bash scripts/run_tests.sh -m "not slow"

lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/hadolint docker/*.Dockerfile

format: setup
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

## make lock: re-pin requirements.lock after an edit to requirements.in.
lock: setup
	@$(PY) scripts/lock.py

## make bench: every benchmark under bench/ (never part of make test); results in bench/results/.
bench: setup
	@MUJOCO_GL=$${MUJOCO_GL:-osmesa} $(PY) bench/run_all.py

clean:
	rm -rf build install log
