# The two commands of the quick start: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ./data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench venv clean screenshots

$(STAMP): pyproject.toml sdks/python/pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (set PY=python3.x)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' -e sdks/python
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/nudge demo --data-dir $(DATA) --if-empty
	$(BIN)/nudge serve --data-dir $(DATA) --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check nudge tests bench sdks/python

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# Screenshots of each main dashboard page on demo data -> docs/screenshots/*.png
screenshots: $(STAMP)
	$(BIN)/python -m bench.dashboard_pages --users 20000 --events 500000 --shots-only
	$(BIN)/python -m bench.dashboard_pages_analytics --users 20000 --events 500000
	$(BIN)/python -m bench.dashboard_pages_journeys --users 20000 --events 500000

clean:
	rm -rf $(VENV) .pytest_cache
