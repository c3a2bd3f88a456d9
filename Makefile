# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= data

# The catalog tests run a second time on PostgreSQL when one answers at $(PG_URL).
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres

.PHONY: setup demo test test-pg lint bench clean

setup: $(STAMP)

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar on -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/voiceloop demo --data-dir $(DATA) --fresh

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-pg

# Same catalog tests, PostgreSQL backend. Skipped (with a message) when no server answers,
# unless REQUIRE_PG=1 (CI), where a missing server is an error.
test-pg: $(STAMP)
	@if $(BIN)/python -c "import psycopg, sys; psycopg.connect('$(PG_URL)'.replace('+psycopg', ''), connect_timeout=3).close()" 2>/dev/null; then \
		VOICELOOP_TEST_CATALOG_URL=$(PG_URL) $(BIN)/python -m pytest -m catalog -q; \
	elif [ "$(REQUIRE_PG)" = "1" ]; then echo "PostgreSQL not reachable at $(PG_URL)"; exit 1; \
	else echo "SKIPPED catalog tests on PostgreSQL: no server at $(PG_URL) (set PG_URL=... to point at one)"; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/accuracy.py
	$(BIN)/python bench/speed.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
