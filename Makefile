# Jigsaw: the only entry point. Every target creates .venv/ and installs what it
# needs when missing, so `make demo` and `make test` work on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_SRC := proto/jigsaw/v1/jigsaw.proto

CONSOLE_FRONTEND := server/console/frontend

.PHONY: console-assets setup demo demo-console test test-fast check lint typecheck imports format proto proto-check bench bench-quality bench-speed bench-attack splink-venv clean

setup: $(STAMP)

# The compiled kernel (linkage/_kernel/) hashes with OpenSSL's libcrypto: Debian's libssl-dev
# for its headers, installed here. Where the extension cannot be built, the install goes on
# and linkage runs the same functions in numpy (the last line says which is in use).
$(STAMP): pyproject.toml setup.py $(wildcard linkage/_kernel/*.c linkage/_kernel/*.h)
	test -f /usr/include/openssl/sha.h || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "from linkage import kernel; print('linkage kernel:', kernel.IMPLEMENTATION, kernel.FALLBACK_REASON or '')"
	touch $(STAMP)

# The staff console's front end (govuk-frontend, and axe-core for its accessibility test)
# from npm, and Debian's Chromium for its browser tests: installed here, never at run time.
console-assets: $(CONSOLE_FRONTEND)/node_modules/.installed
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

$(CONSOLE_FRONTEND)/node_modules/.installed: $(CONSOLE_FRONTEND)/package.json $(CONSOLE_FRONTEND)/package-lock.json
	npm ci --prefix $(CONSOLE_FRONTEND) --no-audit --no-fund
	touch $@

demo: $(STAMP) console-assets
	$(VENV)/bin/jigsaw demo

# the demo, then the staff console (and the federation behind it) kept running until Ctrl-C
demo-console: $(STAMP) console-assets
	$(VENV)/bin/jigsaw demo --serve

# pytest-xdist, one worker per core (pyproject's addopts: -n auto --dist loadscope, which
# keeps a module, and so its module-scoped servers, on one worker). pytest exits 5 when it
# collects no test, which fails the target.
PYTEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -n $(PYTEST_WORKERS)

test: $(STAMP) console-assets check
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow and not e2e and not browser and not bench"

check: lint typecheck imports proto-check

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy linkage server client benchmarks tests

# the layers and "no import cycles" contracts in pyproject.toml ([tool.importlinter])
imports: $(STAMP)
	$(VENV)/bin/lint-imports

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO_SRC)

proto-check: $(STAMP)
	$(PY) -m client.protocheck

bench: bench-quality bench-speed

bench-quality: $(STAMP)
	$(VENV)/bin/jigsaw bench quality --json --report benchmarks/RESULTS.md

# Splink's own environment for the quality benchmark's plaintext ceiling (pins in
# benchmarks/splink-requirements.txt); `jigsaw bench quality` also creates it on first use.
splink-venv: $(STAMP)
	$(PY) -c "from benchmarks.splink_peer import ensure_venv; ensure_venv(print)"

bench-speed: $(STAMP)
	$(VENV)/bin/jigsaw bench speed --json --report benchmarks/RESULTS.md

bench-attack: $(STAMP)
	$(VENV)/bin/jigsaw bench attack --json --report benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) build *.egg-info linkage/*.so $(CONSOLE_FRONTEND)/node_modules
