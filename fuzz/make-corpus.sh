#!/usr/bin/env bash
# Writes the seed corpus in fuzz/corpus/<target>/ from real inputs: the
# shipped policies and the policy blocks of the README, examples/jobkey.toml
# and variants of it, tokens minted by the dev issuer with the test keys,
# PEM and kubeconfig values, and $GITHUB_ENV contents as steps write them.
#
# Run it again (from anywhere) after changing what the seeds depend on: the
# test keys, `fuzz_api::TOKEN_NOW` or the issuers of `fuzz_api`. It needs
# a built `jobkey` binary (target/debug/jobkey; `cargo build`), curl and
# python3. The seeds are small and committed; the fuzzer's own finds go to
# fuzz/target/corpus/ and are not.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
C="$ROOT/fuzz/corpus"
JOBKEY="${JOBKEY_BIN:-$ROOT/target/debug/jobkey}"
NOW=1767225600 # fuzz_api::TOKEN_NOW, 2026-01-01T00:00:00Z

rm -rf "$C"
mkdir -p "$C"/{token,policy,config,mask,github_env}

# --- token -----------------------------------------------------------------
# Mode byte `t` (even): the token as is. `s` (odd): HEADER NUL PAYLOAD,
# signed by the harness's ES256 key.
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
start_issuer() { # key kid port
    "$JOBKEY" dev-issuer --listen "127.0.0.1:$3" --key "tests/fixtures/keys/$1.pem" --kid "$2" \
        >/dev/null 2>&1 &
    pids+=("$!")
}
PORT_A=$((20000 + RANDOM % 20000))
PORT_B=$((PORT_A + 1))
start_issuer issuer-a k1 "$PORT_A"
start_issuer issuer-b k2 "$PORT_B"
for port in "$PORT_A" "$PORT_B"; do
    for _ in $(seq 50); do
        curl -fs "http://127.0.0.1:$port/.well-known/jwks" >/dev/null && break
        sleep 0.1
    done
done

mint() { # port shape claims-json
    curl -fs -X POST "http://127.0.0.1:$1/mint" -H 'content-type: application/json' \
        -d "{\"shape\": \"$2\", \"audience\": \"jobkey\", \"claims\": $3}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"], end="")'
}
GH='"iss": "https://token.actions.githubusercontent.com"'
GL='"iss": "https://gitlab.com"'
at() { # iat exp -> claims fragment
    echo "\"iat\": $1, \"nbf\": $1, \"exp\": $2"
}
raw() { # name token
    if [[ -z "$2" ]]; then
        echo "make-corpus.sh: no token for $1" >&2
        exit 1
    fi
    { printf 't'; printf '%s' "$2"; } >"$C/token/$1"
}
raw github-ok "$(mint "$PORT_A" github "{$GH, $(at $((NOW - 5)) $((NOW + 295)))}")"
raw github-expired "$(mint "$PORT_A" github "{$GH, $(at $((NOW - 900)) $((NOW - 600)))}")"
raw github-future "$(mint "$PORT_A" github "{$GH, $(at $((NOW + 300)) $((NOW + 600)))}")"
raw github-long-lived "$(mint "$PORT_A" github "{$GH, $(at $((NOW - 5)) $((NOW + 3600)))}")"
raw github-wrong-aud "$(mint "$PORT_A" github "{$GH, \"aud\": [\"sts.amazonaws.com\", 1], $(at $((NOW - 5)) $((NOW + 295)))}")"
raw github-float-times "$(mint "$PORT_A" github "{$GH, \"iat\": $((NOW - 5)).75, \"exp\": $((NOW + 200)).5, \"nbf\": null}")"
raw github-no-exp "$(mint "$PORT_A" github "{$GH, \"exp\": null, \"iat\": $NOW}")"
raw github-unknown-kid "$(mint "$PORT_B" github "{$GH, $(at $((NOW - 5)) $((NOW + 295)))}")"
raw gitlab-ok "$(mint "$PORT_B" gitlab "{$GL, $(at $((NOW - 5)) $((NOW + 3595)))}")"
raw gitlab-sub-number "$(mint "$PORT_B" gitlab "{$GL, \"sub\": 42, $(at $((NOW - 5)) $((NOW + 3595)))}")"
raw unknown-issuer "$(mint "$PORT_A" github "{\"iss\": \"https://token.actions.githubusercontent.com.evil.example\", $(at $((NOW - 5)) $((NOW + 295)))}")"
GOOD="$(cut -c2- "$C/token/github-ok")"
PAYLOAD="$(echo "$GOOD" | cut -d. -f2)"
SIG="$(echo "$GOOD" | cut -d. -f3)"
b64url() { python3 -c 'import base64, sys; print(base64.urlsafe_b64encode(sys.argv[1].encode()).decode().rstrip("="), end="")' "$1"; }
hdr() { b64url "$1"; }
raw alg-none "$(hdr '{"alg":"none","kid":"k1"}').$PAYLOAD."
raw alg-hs256 "$(hdr '{"alg":"HS256","kid":"k1"}').$PAYLOAD.$SIG"
raw jku "$(hdr '{"alg":"RS256","kid":"k1","jku":"https://evil.example/jwks"}').$PAYLOAD.$SIG"
raw crit "$(hdr '{"alg":"RS256","kid":"k1","crit":["b64"],"b64":false}').$PAYLOAD.$SIG"
raw kid-number "$(hdr '{"alg":"RS256","kid":1}').$PAYLOAD.$SIG"
raw alg-ps256 "$(hdr '{"alg":"PS256","kid":"k1"}').$PAYLOAD.$SIG"
raw two-parts "$(hdr '{"alg":"RS256","kid":"k1"}').$PAYLOAD"
raw four-parts "$GOOD.$SIG"
raw padded "$(hdr '{"alg":"RS256","kid":"k1"}')==.$PAYLOAD.$SIG"

signed() { # name header payload
    { printf 's%s\0%s' "$2" "$3"; } >"$C/token/$1"
}
GLP="$(mint "$PORT_B" gitlab "{$GL, $(at $((NOW - 5)) $((NOW + 3595)))}" | cut -d. -f2 |
    python3 -c 'import base64, sys; s = sys.stdin.read().strip(); print(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)).decode(), end="")')"
BK="{\"iss\":\"https://agent.buildkite.com\",\"aud\":\"jobkey\",\"sub\":\"organization:acme:pipeline:api:ref:refs/heads/main:commit:abc:step:deploy\",\"organization_slug\":\"acme\",\"pipeline_slug\":\"api\",\"build_number\":1234,\"iat\":$NOW,\"nbf\":$NOW,\"exp\":$((NOW + 300))}"
signed es256-gitlab-ok '{"alg":"ES256","kid":"e1","typ":"JWT"}' "$GLP"
signed es256-buildkite-ok '{"alg":"ES256"}' "$BK"
signed es256-buildkite-kid '{"alg":"ES256","kid":"e1"}' "$BK"
signed es256-as-rs256 '{"alg":"RS256","kid":"e1"}' "$GLP"
signed es256-jwk '{"alg":"ES256","kid":"e1","jwk":{"kty":"EC"}}' "$GLP"
signed es256-dup-alg '{"alg":"none","alg":"ES256","kid":"e1"}' "$GLP"
signed claims-aud-array '{"alg":"ES256"}' "{\"iss\":\"https://agent.buildkite.com\",\"aud\":[\"x\",\"jobkey\"],\"iat\":$NOW,\"exp\":$((NOW + 60))}"
signed claims-aud-mixed '{"alg":"ES256"}' "{\"iss\":\"https://agent.buildkite.com\",\"aud\":[\"jobkey\",null],\"iat\":$NOW,\"exp\":$((NOW + 60))}"
signed claims-exp-string '{"alg":"ES256"}' "{\"iss\":\"https://agent.buildkite.com\",\"aud\":\"jobkey\",\"iat\":$NOW,\"exp\":\"$((NOW + 60))\"}"
signed claims-exp-negative '{"alg":"ES256"}' "{\"iss\":\"https://agent.buildkite.com\",\"aud\":\"jobkey\",\"iat\":$NOW,\"exp\":-1}"
signed claims-exp-huge '{"alg":"ES256"}' "{\"iss\":\"https://agent.buildkite.com\",\"aud\":\"jobkey\",\"iat\":$NOW,\"exp\":1e300}"
signed claims-exp-before-iat '{"alg":"ES256"}' "{\"iss\":\"https://agent.buildkite.com\",\"aud\":\"jobkey\",\"iat\":$NOW,\"exp\":$((NOW - 1))}"
signed claims-nbf-future '{"alg":"ES256"}' "{\"iss\":\"https://agent.buildkite.com\",\"aud\":\"jobkey\",\"iat\":$NOW,\"nbf\":$((NOW + 10)),\"exp\":$((NOW + 60))}"
signed claims-max-u64 '{"alg":"ES256"}' "{\"iss\":\"https://agent.buildkite.com\",\"aud\":\"jobkey\",\"iat\":18446744073709551615,\"exp\":18446744073709551615}"
signed not-json '{"alg":"ES256"' "$BK"

# --- policy ----------------------------------------------------------------
cp policies/production.yaml "$C/policy/production"
cp policies/staging.yaml "$C/policy/staging"
cp policies/tests/production.yaml "$C/policy/fixtures-production"
awk '/```yaml/{f=1; n++; next} /```/{f=0} f && n == 4' README.md >"$C/policy/readme"
{
    cat policies/production.yaml
    echo '#fuzz-request {"issuer": "github", "claims": {"repository_id": "892347", "ref": "refs/heads/feature", "event_name": "push", "environment": "production", "runner_environment": "github-hosted"}}'
    echo '#fuzz-request {"issuer": "github", "claims": {"repository_id": 892347, "ref": "refs/heads/main", "event_name": "workflow_dispatch", "environment": "production", "runner_environment": "self-hosted"}}'
} >"$C/policy/production-requests"
cat >"$C/policy/every-kind" <<'EOF'
max_ttl: 1h
credentials:
  db: {database: {role: deploy}, ttl: 10m}
  mq: {rabbitmq: {role: app}, ttl: 10m}
  cert: {certificate: {role: deploy, common_name: "{repository}.deploy.internal", alt_names: ["{repository_owner}.deploy.internal"]}, ttl: 10m}
  vt: {vault_token: {policies: [deploy], num_uses: 5}, ttl: 10m}
  ssh: {ssh_certificate: {role: deploy, valid_principals: [deploy, "ci-{repository}"]}, ttl: 10m}
  kv: {kv: {mount: secret, path: "ci/{repository}", fields: [token]}, wrap_ttl: 2m, ttl: 10m}
rules:
  - name: any-main
    issuer: internal
    claims:
      /ref: refs/heads/main
      repository: {glob: "acme/*"}
      actor: {regex: "^[a-z]+$"}
      environment: {not: staging}
      run_id: {present: true}
    grant: [db, mq, cert, vt, ssh, kv]
  - name: deny-bots
    effect: deny
    issuer: internal
    claims: {actor: ["dependabot[bot]", {glob: "*-bot"}]}
#fuzz-request {"issuer": "internal", "claims": {"ref": "refs/heads/main", "repository": "acme/api", "actor": "alice", "environment": "production", "run_id": "7"}}
#fuzz-request {"issuer": "internal", "claims": {"ref": "refs/heads/main", "repository": "acme/api", "actor": "build-bot", "run_id": 7}}
EOF
cat >"$C/policy/require" <<'EOF'
credentials:
  db: {kv: {mount: secret, path: p/db}, ttl: 10m}
require:
  runner_environment: github-hosted
  repository_owner_id: {present: true}
rules:
  - name: r
    issuer: github
    claims: {repository_id: ["1", "2"], repository_owner_id: "10001", ref: refs/heads/main}
    grant: [db]
    ttl: 5m
EOF
printf 'credentials:\n  a: &x {kv: {mount: secret, path: p}, ttl: 1m}\n  b: *x\nrules:\n  - name: r\n    issuer: github\n    claims: {repository_id: "1"}\n    grant: [a, b]\n' >"$C/policy/anchors"
printf 'rules: [\n' >"$C/policy/broken-flow"
printf 'credentials:\n  db:\n    kv: {mount: secret, path: p}\n    ttl: 0s\nrules:\n  - name: r\n    issuer: nowhere\n    claims: {}\n    grant: [nothing]\n' >"$C/policy/invalid"

# --- config ----------------------------------------------------------------
cp examples/jobkey.toml "$C/config/example"
sed -e 's/^# \[state\]/[state]/' -e 's/^# redis_url = .*/redis_url = "redis:\/\/:hunter2-secret@127.0.0.1:6379"/' \
    -e 's/^# key_prefix/key_prefix/' -e 's/^# timeout = "3s"/timeout = "3s"/' \
    -e 's/^# \[fetch\]/[fetch]/' -e 's/^# timeout = "5s"/timeout = "5s"/' -e 's/^# max_bytes/max_bytes/' \
    -e 's/^# min_refetch_interval/min_refetch_interval/' -e 's/^# max_key_age/max_key_age/' \
    examples/jobkey.toml >"$C/config/example-every-key"
sed -e 's/^method = "token"/method = "approle"/' -e 's/^token_env = .*/role_id_file = "role-id"\nsecret_id_file = "secret-id"/' \
    examples/jobkey.toml >"$C/config/example-approle"
cat >"$C/config/presets" <<'EOF'
listen = "0.0.0.0:8400"
audiences = ["jobkey", "https://jobkey.example.com"]
policy_dir = "/etc/jobkey/policies"
max_token_bytes = 8192

[audit]
path = "/var/log/jobkey/audit.jsonl"

[vault]
address = "https://vault.internal:8200"
ca_file = "/etc/jobkey/vault-ca.pem"
timeout = "10s"

[vault.auth]
method = "token"
token_file = "/run/secrets/jobkey-vault-token"

[issuers.github]
preset = "github"

[issuers.github-acme]
preset = "github-enterprise"
enterprise = "acme"

[issuers.gitlab]
preset = "gitlab"

[issuers.internal-gitlab]
issuer = "https://gitlab.internal.example"
provider = "gitlab"
ca_file = "/etc/jobkey/internal-ca.pem"
algorithms = ["RS256", "ES256"]

[issuers.ci]
issuer = "http://127.0.0.1:8401"
jwks_url = "http://localhost:8401/.well-known/jwks"
leeway = "30s"
max_lifetime = "1h"

[issuers.pinned]
issuer = "https://ci.example.com/oidc"
jwks_file = "keys/ci.json"
EOF
printf '[state]\nredis_url = "redis://user:hunter2-secret@127.0.0.1:6379/0" x\n' >"$C/config/redis-password-syntax-error"
printf 'listen = "127.0.0.1:8400"\naudiences = []\nunknown_key = 1\n[vault]\naddress = "http://vault.example.com"\n' >"$C/config/invalid"

# --- mask ------------------------------------------------------------------
# NUL-separated values.
cp tests/fixtures/keys/issuer-a.pub.pem "$C/mask/pem"
printf 'hunter2-secret\0short\0{"password": "p\\"w\\n1"}\0%s' "$(head -c 300 tests/fixtures/keys/rogue.pem)" >"$C/mask/mixed"
printf 'line-one-secret\r\nline-two-secret\r\nxy\r\n\r\n   \r\n-----END PRIVATE KEY-----\r\n' >"$C/mask/crlf"
printf 'apiVersion: v1\nclusters:\n- cluster:\n    server: https://k8s.prod.internal:6443\n  name: prod\nusers:\n- name: deploy\n  user:\n    token: eyJhbGciOiJSUzI1NiJ9.c2VjcmV0\n' >"$C/mask/kubeconfig"
printf 'pässwörd-ünïcode\0 leading and trailing \0\0\n\nonly-after-blank-lines\0aaaaaaa\0aaaaaaaa' >"$C/mask/edges"
printf 'first-half-secret\rsecond-half-secret' >"$C/mask/lone-cr"

# --- github_env ------------------------------------------------------------
# Mode `a` (even): EXISTING NUL NAME NUL VALUE ... ; `o` (odd): NAME NUL VALUE NUL HEX.
printf 'a\0JOBKEY_DB_PASSWORD\0hunter2-secret' >"$C/github_env/one"
printf 'aFOO=bar\nPATH_ADDED=1\n\0JOBKEY_DB_USERNAME\0deploy\0JOBKEY_DB_PASSWORD\0x\nEVIL=1\nLD_PRELOAD=/tmp/e.so' >"$C/github_env/injection"
printf 'aNOTES<<EOF\nline 1\nline 2\nEOF\n\0JOBKEY_KUBE_KUBECONFIG\0apiVersion: v1\nkind: Config\n\0JOBKEY_EMPTY\0' >"$C/github_env/heredoc-before"
printf 'a\0bad name\0v\0JOBKEY_OK\0v' >"$C/github_env/bad-name"
printf 'oJOBKEY_X_Y\0x\nghadelimiter_00ff\nLD_PRELOAD=/tmp/e.so\000ff' >"$C/github_env/delimiter-in-value"
printf 'oJOBKEY_X_Y\0value\r\nwith CR\r\n\00123456789abcdef0123456789abcdef' >"$C/github_env/crlf"
printf 'o1ABC\0v\0ab' >"$C/github_env/digit-name"

for t in token policy config mask github_env; do
    echo "$t: $(ls "$C/$t" | wc -l) seeds"
done
