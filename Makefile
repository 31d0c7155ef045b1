# The two commands a user needs: `make bench` runs the default experiment,
# `make test` runs the test suite. Both bring up the Docker engine and the base
# image first when they are missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
IMAGE ?= python:3.11-slim
ITERATIONS ?= 10

.PHONY: bench test engine image benchmark lint clean

$(BIN)/coldstart: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

engine:
	scripts/ensure-engine

image: engine $(BIN)/coldstart
	scripts/ensure-debootstrap $(IMAGE)
	$(BIN)/coldstart image --image $(IMAGE)

bench: image
	$(BIN)/coldstart run --baseline stripe==15.3.0 --candidate stripe==15.3.1 \
		--iterations $(ITERATIONS) --image $(IMAGE)

test: image
	$(BIN)/pytest -ra

benchmark: image
	$(BIN)/python -m benchmarks

lint: $(BIN)/coldstart
	$(BIN)/ruff format --check harness tests benchmarks
	$(BIN)/ruff check harness tests benchmarks
	$(BIN)/mypy

clean:
	$(BIN)/coldstart clean --images || true
	rm -rf $(VENV)
