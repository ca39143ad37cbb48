# The two commands a new user needs: `make run` and `make test`. Everything they need, they install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := redis-server postgresql coturn chromium

.PHONY: install run test test-fast lint system-deps proto bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/pulsebeam serve --data-dir .pulsebeam --turn-allow-loopback

# Debian packages the tests start for real: Redis, PostgreSQL, coturn (reference TURN client and
# server), Chromium. Skipped when they are all present already.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: install system-deps
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

proto: install
	$(BIN)/python -m grpc_tools.protoc -Isrc/pulsebeam/proto --python_out=src/pulsebeam/proto \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	  --mypy_out=src/pulsebeam/proto src/pulsebeam/proto/pulsebeam/v1/signaling.proto

bench: install
	$(BIN)/python bench/tokens.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
