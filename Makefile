# DayOne Chat. `make run` serves the whole system; `make test` runs the checks and the tests.
# With DATABASE_URL/REDIS_URL unset, both use an embedded PostgreSQL and Redis under ./var/.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT

.PHONY: run test stop lint format bench bench-quick clean-var

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo "DayOne Chat on http://127.0.0.1:$(PORT)  (console /console/, admin /admin/, API /api/docs/)"
	trap '$(BIN)/python -m dayone_chat.embedded stop' EXIT; \
	$(BIN)/honcho start --procfile Procfile --port $(PORT)

stop:
	$(BIN)/python -m dayone_chat.embedded stop

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: $(VENV)/.installed-dev
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)
