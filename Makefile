# cropq — every task a developer or CI needs. `make run` serves, `make test` is exactly what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lock docs run test lint format typecheck unit bench bench-batch bench-listing bench-engine bench-render bench-memory bench-hostile bench-chaos bench-soak bench-durability quality face-scale all clean

# One lock per role, compiled from pyproject.toml by `make lock` (universal: every platform's wheels, with
# hashes). The images install the api and worker locks; `make install` (and so CI) the dev lock.
# The uv release the dev lock pins bootstraps the venv, then installs exactly the lock.
UV_VERSION = $(shell sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements/dev.txt)
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
	--quiet --custom-compile-command "make lock"

$(STAMP): requirements/dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes requirements/dev.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## Re-resolve the locks from pyproject.toml (newest releases that fit); commit requirements/*.txt.
lock: install
	$(UV_COMPILE) --extra api --extra otel -o requirements/api.txt
	$(UV_COMPILE) --extra worker --extra otel -o requirements/worker.txt
	$(UV_COMPILE) --extra dev -o requirements/dev.txt

## The README's configuration table and .env.example, generated from the settings (a test compares).
docs: install
	$(BIN)/python -m cropq_cli.config_docs README.md .env.example

## Run the service: API + workers + embedded Valkey and SeaweedFS (Ctrl-C stops).
run: install
	$(BIN)/cropq up

## The whole suite: lint, architecture contracts, types, unit/property/API/integration tests.
test: install lint typecheck
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy api worker cropq_cli

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

unit: install
	$(BIN)/python -m pytest -m "not integration"

bench: install
	$(BIN)/python bench/stack_bench.py

bench-batch: install
	$(BIN)/python bench/batch_bench.py

bench-engine: install
	$(BIN)/python bench/engine_bench.py

## Job listing at 10^6 records: first, deep and filtered pages (a throwaway Valkey).
bench-listing: install
	$(BIN)/python bench/listing_bench.py

## Rendered crops: cost per output against Pillow's and libvips' own crop + resize + encode (12 and 24 MP).
bench-render: install
	$(BIN)/python bench/render_bench.py

bench-memory: install
	$(BIN)/python bench/memory_bench.py

## Hostile images (generated corpus) against the decode sandbox: code, time, child peak RSS per image.
bench-hostile: install
	$(BIN)/python bench/hostile_bench.py

## Chaos: jobs before and during worker-child SIGKILLs, a Valkey restart, a storage outage and a failing
## callback receiver: lost, failed, duplicated results and callbacks, recovery times (exit 1 on a loss).
bench-chaos: install
	$(BIN)/python bench/chaos.py

## Soak: 10,000 jobs at 80 % of the measured capacity: latency, throughput, worker RSS, Redis memory and
## backlog per 1,000 jobs, plotted to docs/soak.png.
bench-soak: install
	$(BIN)/python bench/soak.py

## What a durable 202 costs under each accept_durability mode and appendfsync policy.
bench-durability: install
	$(BIN)/python bench/durability_bench.py

## Crop quality on an eval folder: make quality EVAL_DIR=/path/to/eval
quality: install
	$(BIN)/python bench/quality.py --eval-dir $(EVAL_DIR)

## Face detector recall by face size in pixels: make face-scale EVAL_DIR=/path/to/eval
face-scale: install
	$(BIN)/python bench/face_scale.py --eval-dir $(EVAL_DIR)

all: test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .cropq
