# The README's commands. Each target installs what it needs first (ci/setup.sh is idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
MODEL_DIR ?= models/all-MiniLM-L6-v2

.PHONY: setup run stack test lint bench bench-quick bench-batching loadtest

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

## bench: the full sweep (A FastAPI, B plain KServe, snapserve direct and via the stack, the limit)
bench: setup
	$(PY) -m loadtest.bench

bench-quick: setup
	$(PY) -m loadtest.bench --quick

bench-batching: setup
	$(PY) -m loadtest.bench --compare-batching

## loadtest: locust against URL (default the local transformer) with the SLO gate and reports in out/
URL ?= http://127.0.0.1:8080
loadtest: setup
	mkdir -p out && .venv/bin/locust --config loadtest/locust/locust.conf --headless -H $(URL) -u 16 -t 1m \
	  --html out/locust.html --csv out/locust --csv-full-history --slo-p99-ms 500 --slo-max-failure-ratio 0.001
	$(PY) -m loadtest.locust.report out/locust_stats_history.csv --out out/locust.png
