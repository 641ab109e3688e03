# shipyard: one-command platform, tests and tooling. `make up` and `make test` are all you need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Re-install only when the dependency declarations change (content hash, not mtime).
DEPS_HASH := $(shell cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.installed-$(DEPS_HASH)
OIDC_DIR := tests/oidc
OIDC_STAMP := $(OIDC_DIR)/node_modules/.shipyard-installed
PYTEST_TIMEOUT ?= 180
PYTEST_ARGS ?=
LINT_PATHS := $(wildcard shipyard gateway services tests tools bench)

.PHONY: help install install-browser install-kubectl up test test-fast lint proto bench clean FORCE

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: $(STAMP) sandbox $(if $(wildcard $(OIDC_DIR)/package.json),$(OIDC_STAMP)) ## venv, Python deps, bubblewrap, test OIDC provider deps

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q -c constraints.txt -e '.[dev,katib,serving-formats]'
	@# Katib's SDK with tune() and get_trial_metrics() (0.19) pins protobuf<5, which our pins
	@# exclude: it goes, without its dependencies, into a directory of its own that
	@# tests/automl/test_katib_tune.py puts first on a child process's PYTHONPATH.
	$(PIP) install -q --no-deps --upgrade --target $(VENV)/katib-sdk kubeflow-katib==0.19.0 kubeflow-training==1.9.0
	rm -f $(VENV)/.installed-*
	touch $@

# The local runtime sandboxes workloads with bubblewrap; install it when we can, warn if not.
.PHONY: sandbox
sandbox:
	@if ! command -v bwrap >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	     DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) \
	    || echo "warning: could not install bubblewrap; sandboxed workloads will not run" >&2; \
	  else \
	    echo "warning: bwrap not found; install bubblewrap for the local runtime" >&2; \
	  fi; \
	fi

$(OIDC_STAMP): $(OIDC_DIR)/package.json $(wildcard $(OIDC_DIR)/package-lock.json)
	if [ -f $(OIDC_DIR)/package-lock.json ]; then npm ci --prefix $(OIDC_DIR) --no-audit --no-fund; \
	else npm install --prefix $(OIDC_DIR) --no-audit --no-fund; fi
	touch $@

# The HTTP benchmarks measure with wrk (a C load generator); without it they fall back to a
# Python client that competes with the servers for the two cores, and say so. bench_serving.py
# measures the same hop through haproxy beside the gateway, as a reference.
.PHONY: loadgen
loadgen:
	@{ command -v wrk && command -v haproxy; } >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk haproxy; } || \
	  echo "warning: wrk or haproxy not installed; HTTP benchmarks use a Python client" \
	    "and print no native-proxy reference" >&2

# The browser tests drive Debian's chromium. A machine without apt gets a skip that says so;
# in CI (CI=true) a missing browser fails instead, since its tests would skip.
.PHONY: browser
browser:
	@$(MAKE) --no-print-directory install-browser || { \
	  if [ "$${CI:-}" = true ]; then echo "error: chromium could not be installed (CI=true)" >&2; exit 1; fi; \
	  echo "warning: chromium not installed; the browser tests will be skipped" >&2; }

install-browser: ## Debian chromium, for browser end-to-end tests
	@if command -v chromium >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "install chromium with your package manager" >&2; exit 1; fi

# The kubectl tests (tests/gateway/test_kubectl.py) run Debian's kubectl against the gateway;
# without it they fail and say so, so a failed install is only a warning outside CI.
.PHONY: kubectl
kubectl:
	@$(MAKE) --no-print-directory install-kubectl || { \
	  if [ "$${CI:-}" = true ]; then echo "error: kubectl could not be installed (CI=true)" >&2; exit 1; fi; \
	  echo "warning: kubectl not installed; the kubectl tests will fail" >&2; }

install-kubectl: ## Debian's kubectl, for the kubectl tests
	@if command -v kubectl >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl; \
	else echo "install kubectl with your package manager" >&2; exit 1; fi

up: install ## run the whole platform on this machine (Ctrl-C stops everything)
	$(VENV)/bin/shipyard up

# with-services.sh exports SHIPYARD_TEST_* from ensure-services.sh and stops any
# throwaway Postgres/NATS it had to start when pytest ends.
test: install browser kubectl ## run the test suite against real Postgres and NATS
	scripts/with-services.sh $(VENV)/bin/pytest -q --timeout=$(PYTEST_TIMEOUT) $(PYTEST_ARGS)

# The inner loop (under 3 minutes): the kernel (events, resources), the runtime seam, the chart,
# the KFP compiler and the restart policy; no platform started, no workloads run.
FAST_TESTS := tests/common/events tests/common/resources tests/common/test_placement.py \
  tests/common/test_runtime_seam.py tests/deploy tests/pipeline/test_kfp_ir.py tests/test_restarts.py
test-fast: install ## the fast lane of the tests, for the inner loop
	scripts/with-services.sh $(VENV)/bin/pytest -q --timeout=$(PYTEST_TIMEOUT) $(FAST_TESTS) $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(LINT_PATHS)

proto: install ## regenerate the Python code for proto/*.proto
	$(PY) tools/gen_proto.py

bench: install loadgen ## run every bench/bench_*.py in turn
	@shopt -s nullglob; files=(bench/bench_*.py); failed=(); \
	if [ $${#files[@]} = 0 ]; then echo "no benchmarks in bench/"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(PY) "$$f" || failed+=("$$f"); done; \
	if [ $${#failed[@]} -gt 0 ]; then echo "== missed a target or failed: $${failed[*]}"; exit 1; fi; \
	echo "== every benchmark met its target"

clean: ## remove state, caches and build output (keeps .venv)
	rm -rf .shipyard .pytest_cache .mypy_cache .ruff_cache build dist
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
