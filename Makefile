# Tally: the two commands a new machine needs are `make demo` and `make test`.
# Both install what they need (a Python venv with moto, cargo-lambda and SAM;
# npm packages for the ASL validator) and reuse caches outside the clone.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

export CARGO_TARGET_DIR ?= $(HOME)/.cache/tally/target
TALLY_VENV ?= $(HOME)/.cache/tally/venv
export TALLY_VENV
PY := $(TALLY_VENV)/bin/python
TALLY := $(CARGO_TARGET_DIR)/release/tally
DEMO_ACCOUNTS ?= 100000
DEMO_DATE ?= $(shell date -u -d yesterday +%Y-%m-%d)
DEMO_PROGRAM ?= DEMOCARD
DEMO_RECORDS ?= 50000
DEMO_RECON := .tally/demo-recon/$(DEMO_PROGRAM)-$(DEMO_DATE)

# The local stack's endpoint and throwaway credentials (moto accepts any).
# GATEWAY_PORT and the other ports can be moved, to run a second stack from
# another clone (each clone keeps its stack's state in its own .tally/).
GATEWAY_PORT ?= 4566
MOTO_PORT ?= 4575
FAULT_PROXY_PORT ?= 4576
LAMBDA_PORT ?= 9000
PORTS := --gateway-port $(GATEWAY_PORT) --moto-port $(MOTO_PORT) --fault-proxy-port $(FAULT_PROXY_PORT) \
         --lambda-port $(LAMBDA_PORT)
LOCAL_ENV := AWS_ENDPOINT_URL=http://127.0.0.1:$(GATEWAY_PORT) AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
             AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test

.PHONY: setup setup-stack build demo test test-unit test-static test-integration test-fuzz fuzz faults lint bench bench-kernel bench-ingest bench-local bench-recon up down clean-local ingest-static

# Headless Chromium renders the run report in the integration tests. Defined
# before the setup rule names it: make expands a rule's prerequisites when it
# reads the line, so a variable set further down is empty there (it was, and
# setup never installed Chromium).
CHROMIUM ?= /usr/bin/chromium
export TALLY_CHROMIUM := $(CHROMIUM)

# cargo-fuzz, built once into the cache beside the venv.
TOOLS := $(HOME)/.cache/tally/tools
CARGO_FUZZ := $(TOOLS)/bin/cargo-fuzz
export CARGO_FUZZ

## setup: every tool the tests use: Python venv (moto, cargo-lambda, SAM, pytest), npm packages,
## Debian's Chromium (run report test), cargo-fuzz; then checks each one answers (localstack/tools.py)
setup: $(TALLY_VENV)/.installed node_modules/.installed $(CHROMIUM) $(CARGO_FUZZ)
	$(PY) localstack/tools.py check

## setup-stack: only what the local stack and the demo need (the venv)
setup-stack: $(TALLY_VENV)/.installed

$(CHROMIUM):
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

$(TALLY_VENV)/.installed: localstack/requirements.txt
	python3 -m venv $(TALLY_VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r localstack/requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## build: release binaries of the Lambdas, the container's task and the CLI
FUNCTIONS := cob-coordinator cob-partition cob-aggregate cob-deadline run-sweeper \
             recon-trigger recon-inspect recon-ingest recon-settle recon-match recon-rollup
# Named by --bin, not -p: the lambda host runs `cargo run --bin NAME` from the
# workspace root, which resolves features over every member; a -p build
# resolves them over the named packages only, so the host would rebuild each
# function on its first invoke (about a minute each).
BINS := $(addprefix --bin ,$(FUNCTIONS) recon-ingest-task tally)

build:
	cargo build --release $(BINS)

up: setup-stack build
	$(PY) localstack/tally_local.py up --no-reload $(PORTS)

down:
	$(PY) localstack/tally_local.py down $(PORTS) || true

## demo: local stack, a generated book of DEMO_ACCOUNTS, the COB through the real state machine
demo: setup-stack build
	$(PY) localstack/tally_local.py up --no-reload $(PORTS)
	$(LOCAL_ENV) $(TALLY) accounts generate --count $(DEMO_ACCOUNTS) --date $(DEMO_DATE) --out .tally/demo-book.jsonl
	$(LOCAL_ENV) $(TALLY) accounts import .tally/demo-book.jsonl
	$(LOCAL_ENV) $(TALLY) cob run --date $(DEMO_DATE) --wait
	@$(LOCAL_ENV) $(TALLY) ledger export --date $(DEMO_DATE) > .tally/demo-ledger.jsonl
	@echo "ledger for $(DEMO_DATE): $$(wc -l < .tally/demo-ledger.jsonl) postings in .tally/demo-ledger.jsonl; first lines:"
	@head -3 .tally/demo-ledger.jsonl
	@echo "reconciliation: $(DEMO_RECORDS) settlement records with injected breaks for $(DEMO_PROGRAM) $(DEMO_DATE)"
	$(LOCAL_ENV) $(TALLY) recon generate --program $(DEMO_PROGRAM) --date $(DEMO_DATE) --records $(DEMO_RECORDS) \
	  --out-dir .tally/demo-recon
	$(LOCAL_ENV) $(TALLY) recon internal $(DEMO_RECON).csv --program $(DEMO_PROGRAM) --date $(DEMO_DATE)
	$(LOCAL_ENV) $(TALLY) recon submit $(DEMO_RECON).dat --program $(DEMO_PROGRAM) --date $(DEMO_DATE)
	$(LOCAL_ENV) $(TALLY) recon report --program $(DEMO_PROGRAM) --date $(DEMO_DATE) --wait --summary \
	  --out $(DEMO_RECON)-report.json
	@$(PY) -c 'import json, sys; got, want = (json.load(open(p)) for p in sys.argv[1:]); \
	  sys.exit(0 if got == want else "the report differs from the breaks the generator injected")' \
	  $(DEMO_RECON)-report.json $(DEMO_RECON)-expected.json
	@echo "the report ($(DEMO_RECON)-report.json) equals the breaks the generator injected ($(DEMO_RECON)-expected.json)"
	@echo "the local stack is still up: 'make down' stops it (with the same port variables)"

## test: everything — format, lint, unit, static (ASL, SAM, schemas, IAM, security), a fuzz smoke run, integration on the local stack
test: setup lint test-unit test-static test-fuzz test-integration
	@echo "all test suites passed"

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test-unit:
	cargo test --workspace

test-static: setup
	$(PY) -m pytest tests/static -q

FUZZ_SECONDS ?= 300

$(CARGO_FUZZ):
	CARGO_TARGET_DIR=$(TOOLS)/build cargo install cargo-fuzz --locked --version 0.13.2 --root $(TOOLS)

## fuzz: each parser (settlement, internal, accounts) for FUZZ_SECONDS, seeded from tests/corpus
fuzz: $(CARGO_FUZZ)
	fuzz/run.sh $(FUZZ_SECONDS)

## test-fuzz: the smoke run of the test command, 15 s a target
test-fuzz: $(CARGO_FUZZ)
	fuzz/run.sh 15

# The integration tests share one local stack with the fault switch enabled;
# the stack runs the debug build the unit tests already made.
# Every AWS call passes the test-only fault proxy (tests/fault-proxy), idle
# until a test sets a fault plan on it.
test-integration: setup
	cargo build $(BINS) --bin fault-proxy
	$(PY) localstack/tally_local.py up --no-reload --debug-build --fault-proxy $(PORTS) \
	  --parameter-overrides FaultInjection=enabled ReconWaitPollSeconds=2
	trap '$(PY) localstack/tally_local.py down $(PORTS)' EXIT; \
	  $(LOCAL_ENV) TALLY_FAULT_PROXY=127.0.0.1:$(FAULT_PROXY_PORT) TALLY_LAMBDA_HOST=127.0.0.1:$(LAMBDA_PORT) \
	  cargo test -p tally-integration-tests --test iam --test limits --test cob --test runs --test recon --test faults -- --ignored --test-threads=1

## faults: the fault suite at full scale (COB both paths, recon both branches; clean, 10 %, 30 %, worker killed), as a table
faults: setup
	cargo build $(BINS) --bin fault-proxy
	$(PY) localstack/tally_local.py up --no-reload --debug-build --fault-proxy $(PORTS) \
	  --parameter-overrides FaultInjection=enabled ReconWaitPollSeconds=2
	trap '$(PY) localstack/tally_local.py down $(PORTS)' EXIT; \
	  $(LOCAL_ENV) TALLY_FAULT_PROXY=127.0.0.1:$(FAULT_PROXY_PORT) TALLY_LAMBDA_HOST=127.0.0.1:$(LAMBDA_PORT) \
	  TALLY_RUN_WAIT_SECS=1800 cargo run -p tally-integration-tests --bin faults

## ingest-static: the container's binary without Docker: the Dockerfile's build step for x86_64 musl (static)
ingest-static:
	rustup target add x86_64-unknown-linux-musl
	command -v musl-gcc >/dev/null || $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q musl-tools
	CARGO_TARGET_DIR=$(HOME)/.cache/tally/musl-target CARGO_PROFILE_RELEASE_STRIP=symbols \
	  cargo build --release --locked -p recon-ingest --bin recon-ingest-task --target x86_64-unknown-linux-musl
	file $(HOME)/.cache/tally/musl-target/x86_64-unknown-linux-musl/release/recon-ingest-task

## bench: the kernel on one core (criterion) and the local end-to-end figures
bench: bench-kernel bench-ingest bench-local

bench-kernel:
	cargo bench -p tally-domain --bench accrual_kernel
	cargo bench -p tally-domain --bench settlement_parse

## bench-ingest: peak memory of a reconciliation ingest at 100 MB and 1 GB (files generated while read)
bench-ingest:
	cargo run --release -p recon-ingest --bin bench-ingest -- 100 1000

## bench-local: the load of issue 5 on a fresh local stack: a COB of BENCH_ACCOUNTS, then (on a second fresh
## stack, so the emulator holds one load at a time) a reconciliation of BENCH_RECORDS. It stops any stack of this clone.
BENCH_ACCOUNTS ?= 1000000
BENCH_RECORDS ?= 1000000
# The emulator writes about 30 times slower than DynamoDB, so the bench cuts the
# book finer than the default 10 partitions: 90 partitions of ~11,000 accounts
# each stay well inside a partition's 900 s timeout at the local rate.
BENCH_PARTITIONS ?= 90
bench-local: setup-stack build
	$(PY) localstack/tally_local.py down $(PORTS)
	$(PY) localstack/tally_local.py up --no-reload $(PORTS) --parameter-overrides CobPartitionCount=$(BENCH_PARTITIONS)
	trap '$(PY) localstack/tally_local.py down $(PORTS)' EXIT; \
	  $(LOCAL_ENV) BENCH_ACCOUNTS=$(BENCH_ACCOUNTS) TALLY_RUN_WAIT_SECS=14400 \
	  cargo run --release -p tally-integration-tests --bin bench-cob
	$(MAKE) bench-recon

## bench-recon: a reconciliation of BENCH_RECORDS end to end on a fresh local stack, and its ratio to the raw write rate
bench-recon: setup-stack build
	$(PY) localstack/tally_local.py down $(PORTS)
	$(PY) localstack/tally_local.py up --no-reload $(PORTS)
	trap '$(PY) localstack/tally_local.py down $(PORTS)' EXIT; \
	  $(LOCAL_ENV) BENCH_RECORDS=$(BENCH_RECORDS) cargo run --release -p tally-integration-tests --bin bench-recon
