# `make demo` and `make test` set everything up on first use (a venv in .venv), then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.growlm-installed
DEMO_OUT ?= runs/demo

.PHONY: setup demo test lint types unit clean

$(STAMP): pyproject.toml scripts/setup_env.sh
	PY=$(PY) bash scripts/setup_env.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/growlm demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check growlm tests $(wildcard bench)
	$(BIN)/ruff format --check growlm tests $(wildcard bench)

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -p no:cacheprovider

test: lint types unit

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
