#!/usr/bin/env bash
# `make bench`: jobkey's exchange side by side with OpenBao on its own, in
# one run (benches/exchange.rs is the load generator; it says what each
# path does).
#
#   OpenBao (dev mode, in memory) on 127.0.0.1:8510: the KV v2 secret
#   secret/bench/app (a username, a password, a 2048-bit PEM key), JWT auth
#   trusting the dev issuer with the role `bench` (bench/vault/jwt-role.json:
#   the same bound claims as bench/policies/production.yaml), a static token
#   for the raw path, and jobkey's least-privilege policy
#   (examples/vault/jobkey-policy.hcl);
#   the GitHub-shaped dev issuer on :8512;
#   jobkey (release build) on :8513 with its audit log in .bench/, a
#   second one on :8514 with its log on /dev/shm, and a third on :8515 with
#   its log in .bench/nocache/ and the mask cache off (`[masks] cache_ttl =
#   "0s"`), so that the table also shows an exchange without that cache
#   (bench/jobkey-*.toml).
#
# Knobs (environment): JOBKEY_BENCH_SECONDS (8, per path and round),
# JOBKEY_BENCH_CONCURRENCY (16), JOBKEY_BENCH_ROUNDS (2), JOBKEY_BENCH_JOBS
# (1000 concurrent jobs; 0 skips that phase), JOBKEY_BENCH_SOAK (100000
# exchanges; 0 skips the soak), JOBKEY_BENCH_TOKENS (2000 minted tokens).
# JOBKEY_BENCH_PERF=1 also records a perf profile of jobkey (.bench/perf.data).
# JOBKEY_BENCH_BINARY runs another jobkey binary (say, a base commit's
# release build copied aside) against the same load generator, for A/B pairs.
# The result is printed and written to .bench/result.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="$ROOT/.bench"
SHM=/dev/shm/jobkey-bench
CARGO="${CARGO:-cargo}"
# OpenBao also listens on its port + 1 (its cluster port).
BAO_PORT=8510 ISSUER_PORT=8512 DISK_PORT=8513 SHM_PORT=8514 NOCACHE_PORT=8515 CALLGRIND_PORT=8516
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$SHM"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*" >&2; }
need_port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "port $1 is in use (another make bench still running?); stop it and run make bench again" >&2
        exit 1
    fi
}
wait_http() { # url, what, log
    for _ in $(seq 1 150); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$2 did not come up; see $3" >&2
    tail -n 20 "$3" >&2 || true
    exit 1
}
# Checked before anything starts (the count is the run's last step).
INSTR_N="${JOBKEY_BENCH_INSTRUCTIONS:-200}"
case "$INSTR_N" in
    '' | *[!0-9]*) echo "JOBKEY_BENCH_INSTRUCTIONS must be a number of exchanges (0 skips the count), not '$INSTR_N'" >&2; exit 1 ;;
esac
for p in $BAO_PORT $((BAO_PORT + 1)) $ISSUER_PORT $DISK_PORT $SHM_PORT $NOCACHE_PORT $CALLGRIND_PORT; do need_port_free "$p"; done
if [ -e "$SHM" ]; then
    echo "$SHM exists: another make bench is running, or one was killed (then remove it)" >&2
    exit 1
fi

say "Building release binaries (the load generator too)"
# One cargo invocation for both: the load generator links the library with
# the dev-dependencies' features, and two invocations would build every
# dependency twice (a separate `cargo bench` run is a second build).
LOADGEN="$("$CARGO" build --release --locked --bin jobkey --bench exchange --message-format=json-render-diagnostics \
    | jq -r 'select(.reason == "compiler-artifact" and .target.name == "exchange" and .executable != null) | .executable')"
[ -x "$LOADGEN" ] || { echo "the load generator was not built" >&2; exit 1; }
JOBKEY="${JOBKEY_BENCH_BINARY:-$ROOT/target/release/jobkey}"
BAO="$(scripts/ensure-openbao.sh)"
rm -rf "$STATE"
mkdir -p "$STATE" "$STATE/nocache" "$SHM"
# 1,000 client connections, as many to jobkey and from it to OpenBao.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

say "OpenBao (dev mode) on 127.0.0.1:$BAO_PORT"
ROOT_TOKEN="bench-root-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$BAO" server -dev -dev-root-token-id="$ROOT_TOKEN" -dev-listen-address="127.0.0.1:$BAO_PORT" >"$STATE/openbao.log" 2>&1 &
BAO_PID=$!
PIDS+=("$BAO_PID")
export BAO_ADDR="http://127.0.0.1:$BAO_PORT"
wait_http "$BAO_ADDR/v1/sys/health" "OpenBao" "$STATE/openbao.log"
bao() { BAO_TOKEN="$ROOT_TOKEN" VAULT_TOKEN="$ROOT_TOKEN" "$BAO" "$@"; }
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$STATE/app-key.pem" 2>/dev/null
bao kv put -mount=secret bench/app username=bench-deploy \
    password="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')" private_key=@"$STATE/app-key.pem" >/dev/null
rm -f "$STATE/app-key.pem"
bao policy write bench-read bench/vault/bench-read.hcl >/dev/null
bao policy write jobkey examples/vault/jobkey-policy.hcl >/dev/null
RAW_TOKEN="$(bao token create -policy=bench-read -period=2h -field=token)"
JOBKEY_TOKEN="$(bao token create -policy=jobkey -no-default-policy -period=2h -field=token)"

say "The GitHub-shaped dev issuer on 127.0.0.1:$ISSUER_PORT"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$STATE/issuer-key.pem" 2>/dev/null
"$JOBKEY" dev-issuer --listen "127.0.0.1:$ISSUER_PORT" --key "$STATE/issuer-key.pem" --kid bench >"$STATE/issuer.log" 2>&1 &
PIDS+=($!)
ISSUER="http://127.0.0.1:$ISSUER_PORT"
wait_http "$ISSUER/.well-known/openid-configuration" "the dev issuer" "$STATE/issuer.log"

# The vault-action path: JWT auth trusting the same issuer, with a role
# binding the same claims as jobkey's policy.
bao auth enable jwt >/dev/null
bao write auth/jwt/config oidc_discovery_url="$ISSUER" bound_issuer="$ISSUER" >/dev/null
bao write auth/jwt/role/bench @bench/vault/jwt-role.json >/dev/null

say "jobkey (release) on :$DISK_PORT (audit log in .bench/), :$SHM_PORT (audit log in $SHM) and :$NOCACHE_PORT (audit log in .bench/nocache/, mask cache off)"
for c in disk shm nocache callgrind; do "$JOBKEY" check --config "bench/jobkey-$c.toml" >/dev/null; done
VAULT_TOKEN="$JOBKEY_TOKEN" "$JOBKEY" serve --config bench/jobkey-disk.toml >"$STATE/jobkey.log" 2>&1 &
DISK_PID=$!
PIDS+=("$DISK_PID")
VAULT_TOKEN="$JOBKEY_TOKEN" "$JOBKEY" serve --config bench/jobkey-shm.toml >"$STATE/jobkey-shm.log" 2>&1 &
SHM_PID=$!
PIDS+=("$SHM_PID")
VAULT_TOKEN="$JOBKEY_TOKEN" "$JOBKEY" serve --config bench/jobkey-nocache.toml >"$STATE/jobkey-nocache.log" 2>&1 &
NOCACHE_PID=$!
PIDS+=("$NOCACHE_PID")
wait_http "http://127.0.0.1:$DISK_PORT/readyz" "jobkey" "$STATE/jobkey.log"
wait_http "http://127.0.0.1:$SHM_PORT/readyz" "jobkey (shm)" "$STATE/jobkey-shm.log"
wait_http "http://127.0.0.1:$NOCACHE_PORT/readyz" "jobkey (mask cache off)" "$STATE/jobkey-nocache.log"

fs_of() { df --output=fstype,source "$1" | tail -n 1 | awk '{print $1 " (" $2 ")"}'; }
say "Load (progress on stderr; the result follows)"
JOBKEY_BENCH_BAO_ADDR="$BAO_ADDR" JOBKEY_BENCH_BAO_PID="$BAO_PID" JOBKEY_BENCH_RAW_TOKEN="$RAW_TOKEN" \
JOBKEY_BENCH_ISSUER="$ISSUER" \
JOBKEY_BENCH_DISK_URL="http://127.0.0.1:$DISK_PORT" JOBKEY_BENCH_DISK_PID="$DISK_PID" \
JOBKEY_BENCH_SHM_URL="http://127.0.0.1:$SHM_PORT" JOBKEY_BENCH_SHM_PID="$SHM_PID" \
JOBKEY_BENCH_NOCACHE_URL="http://127.0.0.1:$NOCACHE_PORT" JOBKEY_BENCH_NOCACHE_PID="$NOCACHE_PID" \
JOBKEY_BENCH_DISK_FS="$(fs_of "$STATE")" JOBKEY_BENCH_SHM_FS="$(fs_of "$SHM")" \
JOBKEY_BENCH_CLK_TCK="$(getconf CLK_TCK)" JOBKEY_BENCH_OUT="$STATE/result.md" \
JOBKEY_BENCH_VERSIONS="jobkey $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (modified)') release build; $("$BAO" version | head -n 1)" \
    "$LOADGEN" --bench &
LOAD_PID=$!
# JOBKEY_BENCH_PERF=1: a CPU profile of the disk-logged jobkey over the
# whole run (perf record, call graphs from DWARF), then its top symbols.
if [ "${JOBKEY_BENCH_PERF:-0}" = 1 ]; then
    command -v perf >/dev/null || { echo "JOBKEY_BENCH_PERF=1 needs perf (Debian: linux-perf)" >&2; exit 1; }
    perf record -F 999 --call-graph dwarf,32768 -p "$DISK_PID" -o "$STATE/perf.data" >"$STATE/perf.log" 2>&1 &
    PERF_PID=$!
fi
wait "$LOAD_PID"
if [ -n "${PERF_PID:-}" ]; then
    kill -INT "$PERF_PID" && wait "$PERF_PID" || true
    say "Profile of jobkey (audit on disk): .bench/perf.data; top symbols, self time"
    perf report -i "$STATE/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -n 30 | sed -E 's/ +- +- *$//; s/ +$//' | tee "$STATE/perf-top.txt"
fi

# JOBKEY_BENCH_INSTRUCTIONS (default 200; 0 skips): jobkey's instructions
# per exchange, counted by callgrind. CPU time moves by up to 2x with what
# else the VM runs; an instruction count does not (the same binary and
# inputs give the same count within a fraction of a percent), so it is what
# shows a code change's effect on a noisy machine, A/B with
# JOBKEY_BENCH_BINARY. It counts user space only: syscalls, the kernel's
# network and fsync work and context switches are not in it. Two runs of a
# fourth jobkey under callgrind, one client, one token: W warm-up exchanges,
# then W + N; the difference over N leaves start-up, the first JWKS fetch,
# the first Vault connection and the first mask computation out.
if [ "$INSTR_N" -gt 0 ]; then
    VALGRIND="$(scripts/ensure-deb.sh valgrind valgrind)"
    say "Instructions per exchange: jobkey under callgrind on :$CALLGRIND_PORT, $INSTR_N exchanges one by one (about a minute)"
    INSTR_TOKEN="$(curl -fsS -X POST "$ISSUER/mint" -H 'content-type: application/json' \
        -d '{"shape": "github", "audience": "jobkey"}' | jq -r .token)"
    WARM=10
    instructions_after() { # exchanges -> the Ir total of a jobkey that served them
        local n="$1" dir="$STATE/callgrind"
        rm -rf "$dir"
        mkdir -p "$dir"
        VAULT_TOKEN="$JOBKEY_TOKEN" "$VALGRIND" --tool=callgrind --callgrind-out-file="$STATE/callgrind.out.$n" \
            "$JOBKEY" serve --config bench/jobkey-callgrind.toml >"$STATE/jobkey-callgrind-$n.log" 2>&1 &
        local pid=$! ok=""
        # This runs in a command substitution, without the script's EXIT
        # trap: a failure stops its jobkey itself.
        fail() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; echo "$1; see $STATE/jobkey-callgrind-$n.log" >&2; exit 1; }
        for _ in $(seq 1 600); do
            curl -fsS -o /dev/null "http://127.0.0.1:$CALLGRIND_PORT/readyz" 2>/dev/null && { ok=1; break; }
            sleep 0.1
        done
        [ -n "$ok" ] || fail "jobkey under callgrind did not come up"
        for _ in $(seq 1 "$n"); do
            curl -fsS -o /dev/null -X POST "http://127.0.0.1:$CALLGRIND_PORT/v1/exchange" \
                -H "authorization: Bearer $INSTR_TOKEN" -H 'content-type: application/json' \
                -d '{"environment": "production", "credentials": ["app"]}' \
                || fail "an exchange under callgrind failed"
        done
        kill -TERM "$pid"
        wait "$pid" || true
        awk '/^summary:/ {print $2}' "$STATE/callgrind.out.$n"
    }
    BASE_IR="$(instructions_after "$WARM")"
    MORE_IR="$(instructions_after $((WARM + INSTR_N)))"
    [ -n "$BASE_IR" ] && [ -n "$MORE_IR" ] || { echo "callgrind wrote no summary; see $STATE/callgrind.out.*" >&2; exit 1; }
    line="- (info) jobkey instructions per exchange (callgrind, user space only, 1 client, $INSTR_N exchanges after $WARM): $(( (MORE_IR - BASE_IR) / INSTR_N ))"
    printf '%s\n' "$line" | tee -a "$STATE/result.md"
fi
echo "(also in .bench/result.md)" >&2
