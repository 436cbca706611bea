#!/usr/bin/env bash
# Fuzzes jobkey's untrusted-input front ends (`make fuzz`): builds the
# targets in fuzz/ with nightly and cargo-fuzz, then runs each one for a
# bounded time from the committed seed corpus. Exits non-zero when a target
# crashed (a panic, a failed property, a timeout or an out-of-memory), and
# prints the reproducer's path and the command that replays it.
#
# cargo-fuzz is installed from crates.io into .cache/cargo-fuzz on first use
# and reused after; the build is cached in fuzz/target. Both are git-ignored.
#
# Settings (environment):
#   FUZZ_SECONDS    seconds per target (default 60)
#   FUZZ_TARGETS    targets to run, space-separated (default: all of them)
#   FUZZ_SANITIZER  cargo-fuzz's --sanitizer (default none: jobkey forbids
#                   unsafe code, and the targets check properties; use
#                   "address" to also check the dependencies' unsafe code)
#   FUZZ_TOOLCHAIN  the nightly toolchain (default nightly)
#
# `scripts/fuzz.sh --lint` instead checks what `make lint` cannot see:
# rustfmt and clippy (-D warnings) on the fuzz targets, and clippy on the
# library built with `--cfg fuzzing` (so on src/fuzz_api.rs), in
# fuzz/target/lint.
#
# Each target runs as one libFuzzer process (no -jobs), so it uses one core.
# New inputs go to fuzz/target/corpus/<target>; the committed seeds in
# fuzz/corpus/<target> are only read. Logs: fuzz/target/logs/<target>.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ "${1:-}" == "--lint" ]]; then
    (cd fuzz && cargo fmt -- --check)
    RUSTFLAGS="--cfg fuzzing" cargo clippy --locked --lib --target-dir fuzz/target/lint -- -D warnings
    (cd fuzz && RUSTFLAGS="--cfg fuzzing" cargo clippy --bins -- -D warnings)
    exit 0
fi
if [[ $# -gt 0 ]]; then
    echo "fuzz.sh: unknown argument '$1' (the only one is --lint)" >&2
    exit 2
fi

SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
SANITIZER="${FUZZ_SANITIZER:-none}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
ALL_TARGETS="token policy config mask github_env"
TARGETS="${FUZZ_TARGETS:-$ALL_TARGETS}"

if ! [[ "$SECONDS_PER_TARGET" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz.sh: FUZZ_SECONDS must be a positive number of seconds, not '$SECONDS_PER_TARGET'" >&2
    exit 2
fi
for target in $TARGETS; do
    if [[ " $ALL_TARGETS " != *" $target "* ]]; then
        echo "fuzz.sh: unknown target '$target' (targets: $ALL_TARGETS)" >&2
        exit 2
    fi
done
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: the $TOOLCHAIN toolchain is missing; install it with: rustup toolchain install $TOOLCHAIN" >&2
    exit 2
fi

CARGO_FUZZ_ROOT="$ROOT/.cache/cargo-fuzz"
if [[ ! -x "$CARGO_FUZZ_ROOT/bin/cargo-fuzz" ]]; then
    echo "fuzz.sh: installing cargo-fuzz into .cache/cargo-fuzz (once)" >&2
    cargo install --root "$CARGO_FUZZ_ROOT" cargo-fuzz --locked
fi
export PATH="$CARGO_FUZZ_ROOT/bin:$PATH"

# Longest input per target: above the token size cap (16 KiB) for tokens, so
# the cap itself is exercised.
max_len() {
    case "$1" in
        token) echo 20000 ;;
        *) echo 16384 ;;
    esac
}

LOGS="$ROOT/fuzz/target/logs"
mkdir -p "$LOGS"

echo "fuzz.sh: building the targets ($TOOLCHAIN, sanitizer $SANITIZER; the first build takes minutes)" >&2
if ! cargo "+$TOOLCHAIN" fuzz build --sanitizer "$SANITIZER" >"$LOGS/build.log" 2>&1; then
    tail -n 40 "$LOGS/build.log" >&2
    echo "fuzz.sh: the build failed (fuzz/target/logs/build.log)" >&2
    exit 2
fi

failed=()
for target in $TARGETS; do
    work="$ROOT/fuzz/target/corpus/$target"
    seeds="$ROOT/fuzz/corpus/$target"
    log="$LOGS/$target.log"
    mkdir -p "$work"
    echo "fuzz.sh: $target for ${SECONDS_PER_TARGET}s" >&2
    set +e
    cargo "+$TOOLCHAIN" fuzz run --sanitizer "$SANITIZER" "$target" "$work" "$seeds" -- \
        -max_total_time="$SECONDS_PER_TARGET" \
        -max_len="$(max_len "$target")" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1 || true)"
    cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n 1 || true)"
    echo "$target: ${runs:-?} runs, ${cov:-no coverage line}, exit $status"
    if [[ $status -ne 0 ]]; then
        failed+=("$target")
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1 || true)"
        grep -E 'panicked at|SUMMARY|ERROR: libFuzzer' "$log" | head -n 5 >&2 || true
        if [[ -n "$artifact" ]]; then
            echo "$target: CRASH; reproducer: $artifact" >&2
            echo "$target: replay: cargo +$TOOLCHAIN fuzz run --sanitizer $SANITIZER $target $artifact" >&2
        else
            echo "$target: failed without a reproducer; see $log" >&2
        fi
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: crashed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: no crash"
