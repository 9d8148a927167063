# Two commands set up a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-deps image-deps lint typecheck unit bench image clean

# Debian's own python3 needs python3-venv for `-m venv`; other Pythons (pyenv, a container's) ship it.
$(STAMP): pyproject.toml
	@$(PY) -c 'import ensurepip' 2>/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; } || \
	  { echo "error: $(PY) cannot create a venv; run as root: apt-get install -y python3-venv" >&2; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/nodelocaldns serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The real DNS servers, clients and netfilter tools the tests drive (scripts/test-packages.txt).
test-deps:
	@./scripts/ensure-packages scripts/test-packages.txt

image-deps:
	@./scripts/ensure-packages scripts/image-packages.txt

unit: $(STAMP) test-deps
	$(BIN)/pytest -q

test: test-deps lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m bench.run

# OCI archive of a Debian rootfs with the agent (build/nodelocaldns-image.oci.tar); needs root and mmdebstrap.
image: $(STAMP) image-deps
	PYTHON=$(BIN)/python ./image/build.sh

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
