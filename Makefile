# Two commands set up a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The C hot path (src/nodelocaldns/native/): optional for a bare `pip install`, required here.
NATIVE_DIR := src/nodelocaldns/native
NATIVE_SRC := $(wildcard $(NATIVE_DIR)/*.c $(NATIVE_DIR)/*.h) setup.py
NATIVE_STAMP := $(VENV)/.native
# Where the extension must exist (make native/install/test/bench, the image's wheel) a failed build is an
# error (NODELOCALDNS_NATIVE_REQUIRED=1); the venv itself (make run) installs without a compiler.
FUZZ_SECONDS ?= 60
FUZZ_BIN := build/fuzz/fuzz_answer
FUZZ_NX_BIN := build/fuzz/fuzz_nx
STRESS_BIN := build/fuzz/stress_index
STRESS_NX_BIN := build/fuzz/stress_nx
STRESS_NX_ASAN_BIN := build/fuzz/stress_nx_asan
NATIVE_CORE := $(addprefix $(NATIVE_DIR)/,siphash.c index.c answer.c lb.c stale.c nx.c)
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=gnu11 -D_GNU_SOURCE

.PHONY: install native run test test-deps image-deps fuzz-deps lint typecheck unit fuzz bench image clean

# Debian's own python3 needs python3-venv for `-m venv`; other Pythons (pyenv, a container's) ship it.
$(STAMP): pyproject.toml setup.py
	@$(PY) -c 'import ensurepip' 2>/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; } || \
	  { echo "error: $(PY) cannot create a venv; run as root: apt-get install -y python3-venv" >&2; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=68' wheel
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

# Rebuild the extension in place when a C file changes (pip's editable install built it once).
$(NATIVE_STAMP): $(STAMP) $(NATIVE_SRC)
	NODELOCALDNS_NATIVE_REQUIRED=1 $(BIN)/python setup.py -q build_ext --inplace
	touch $(NATIVE_STAMP)

native: $(NATIVE_STAMP)

install: $(STAMP) $(NATIVE_STAMP)

# `make run` serves on a machine without a C compiler too: the pure-Python path, with one warning.
run: $(STAMP)
	$(BIN)/nodelocaldns serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench setup.py fuzz
	$(BIN)/ruff format --check src tests bench setup.py fuzz

typecheck: $(STAMP)
	$(BIN)/mypy

# The real DNS servers, clients and netfilter tools the tests drive (scripts/test-packages.txt).
test-deps:
	@./scripts/ensure-packages scripts/test-packages.txt

image-deps:
	@./scripts/ensure-packages scripts/image-packages.txt

# The serve tests that run a second time on the pure-Python path (~90 s): the fallback stays tested.
PY_PATH_TESTS := tests/metrics/test_metrics.py tests/plugins/cache/test_serve_cache.py \
  tests/server/test_serve_tcp.py tests/server/test_serve_oversized.py tests/server/test_serve_native.py

# Two passes (tests/conftest.py, tests/parallel-safe.txt): the listed files on TEST_WORKERS pytest-xdist
# workers, then, alone, every test that measures time or rates, floods, or holds something machine-wide.
TEST_WORKERS ?= 3
XDIST := -n $(TEST_WORKERS) --dist loadfile

# pytest caches its assertion-rewritten test modules as .pyc; without that each pass and each worker
# rewrites all of tests/ again (~15 s of CPU apiece) when the environment sets PYTHONDONTWRITEBYTECODE.
unit: export PYTHONDONTWRITEBYTECODE :=
unit: test-deps $(STAMP) $(NATIVE_STAMP)
	$(BIN)/pytest -q --durations=25 $(XDIST) -m "not serial"
	$(BIN)/pytest -q --durations=25 -m serial
	NODELOCALDNS_NATIVE=0 $(BIN)/pytest -q $(XDIST) -m "not serial" $(PY_PATH_TESTS)
	NODELOCALDNS_NATIVE=0 $(BIN)/pytest -q -m serial $(PY_PATH_TESTS)

test: test-deps lint typecheck unit

# libFuzzer + ASan + UBSan over the packet-to-reply function and the index (fuzz/).
fuzz-deps:
	@./scripts/ensure-packages scripts/fuzz-packages.txt

$(FUZZ_BIN): fuzz/fuzz_answer.c $(NATIVE_SRC)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -I$(NATIVE_DIR) -o $@ fuzz/fuzz_answer.c $(NATIVE_DIR)/siphash.c \
	  $(NATIVE_DIR)/index.c $(NATIVE_DIR)/answer.c $(NATIVE_DIR)/lb.c $(NATIVE_DIR)/stale.c -lpthread -lm

$(FUZZ_NX_BIN): fuzz/fuzz_nx.c $(NATIVE_SRC)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -I$(NATIVE_DIR) -o $@ fuzz/fuzz_nx.c $(NATIVE_DIR)/nx.c

$(STRESS_BIN): fuzz/stress_index.c $(NATIVE_SRC)
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=thread -std=gnu11 -D_GNU_SOURCE -I$(NATIVE_DIR) -o $@ fuzz/stress_index.c \
	  $(NATIVE_DIR)/siphash.c $(NATIVE_DIR)/index.c $(NATIVE_DIR)/answer.c $(NATIVE_DIR)/lb.c $(NATIVE_DIR)/stale.c -lpthread -lm

$(STRESS_NX_BIN): fuzz/stress_nx.c $(NATIVE_SRC)
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=thread -std=gnu11 -D_GNU_SOURCE -I$(NATIVE_DIR) -o $@ fuzz/stress_nx.c \
	  $(NATIVE_CORE) $(NATIVE_DIR)/udp.c $(NATIVE_DIR)/exchange.c -lpthread -lm

# The same run under ASan + LeakSanitizer: workers stopped with queries in flight and results undrained.
$(STRESS_NX_ASAN_BIN): fuzz/stress_nx.c $(NATIVE_SRC)
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -std=gnu11 -D_GNU_SOURCE \
	  -I$(NATIVE_DIR) -o $@ fuzz/stress_nx.c $(NATIVE_CORE) $(NATIVE_DIR)/udp.c $(NATIVE_DIR)/exchange.c -lpthread -lm

# New inputs go to build/fuzz/corpus{,-nx}; fuzz/corpus/{answer,nx} are the small seed sets kept in git.
# Then ThreadSanitizer checks the index's locking with readers and a writer racing (3 s), and NX's
# workers exchanging with upstreams on 127.0.0.1 while the forward table is swapped (3 s).
fuzz: fuzz-deps $(FUZZ_BIN) $(FUZZ_NX_BIN) $(STRESS_BIN) $(STRESS_NX_BIN) $(STRESS_NX_ASAN_BIN)
	@mkdir -p build/fuzz/corpus build/fuzz/corpus-nx
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	  -artifact_prefix=build/fuzz/ \
	  build/fuzz/corpus fuzz/corpus/answer
	$(FUZZ_NX_BIN) -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	  -artifact_prefix=build/fuzz/nx- \
	  build/fuzz/corpus-nx fuzz/corpus/nx
	$(STRESS_BIN) 3
	$(STRESS_NX_BIN) 3
	$(STRESS_NX_ASAN_BIN) 2

bench: $(STAMP) $(NATIVE_STAMP)
	$(BIN)/python -m bench.run

# OCI archive of a Debian rootfs with the agent (build/nodelocaldns-image.oci.tar); needs root and mmdebstrap.
image: image-deps $(STAMP)
	PYTHON=$(BIN)/python ./image/build.sh

clean:
	rm -rf $(VENV) build bench/build dist src/*.egg-info src/nodelocaldns/*.so .mypy_cache .pytest_cache .ruff_cache
