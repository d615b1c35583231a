# The README's commands. Each target installs what it needs first (ci/setup.sh is idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
MODEL_DIR ?= models/all-MiniLM-L6-v2

.PHONY: setup run stack test lint bench

setup:
	bash ci/setup.sh

## run: predictor + transformer on loopback with the default model; prints a working curl line
run:
	MODEL_DIR=$(MODEL_DIR) bash ci/run-local.sh

## test: every test (unit, integration, chart, images, stack, load); non-zero on any failure
test:
	bash ci/test.sh

## stack: nginx -> 2 transformers -> nginx -> 2 predictors + Prometheus on loopback; Ctrl-C stops it
stack: setup
	$(PY) -m loadtest.stack --model_dir $(MODEL_DIR)

lint: setup
	bash ci/lint.sh

bench: setup
	$(PY) -m loadtest.bench
