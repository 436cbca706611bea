#!/usr/bin/env bash
# `make demo`: the whole local stack and a sample job exchange.
#
#   OpenBao (dev mode, in memory) on 127.0.0.1:8200, seeded with two secrets,
#   jobkey's least-privilege policy and token role (examples/vault/); three
#   stand-in CI issuers
#   (`jobkey dev-issuer`: GitHub-shaped on :8401, GitLab-shaped on :8402,
#   Buildkite-shaped on :8403);
#   jobkey on :8400 with examples/jobkey.toml and policies/.
#
# Then: an allowed GitHub deploy, an allowed GitLab staging job, and a denied
# job from a feature branch. Keeps serving until Ctrl-C; DEMO_EXIT=1 exits
# after the samples.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEMO="$ROOT/.demo"
JOBKEY="$ROOT/target/debug/jobkey"
BAO="$(scripts/ensure-openbao.sh)"
mkdir -p "$DEMO"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
need_port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "port $1 is in use (another demo still running?); stop it and run make demo again" >&2
        exit 1
    fi
}
wait_http() { # url, what
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$2 did not come up; see $DEMO/*.log" >&2
    exit 1
}
for p in 8200 8400 8401 8402 8403 8404; do need_port_free "$p"; done

say "OpenBao (dev mode) on 127.0.0.1:8200"
ROOT_TOKEN="demo-root-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$BAO" server -dev -dev-root-token-id="$ROOT_TOKEN" -dev-listen-address=127.0.0.1:8200 >"$DEMO/openbao.log" 2>&1 &
PIDS+=($!)
export BAO_ADDR=http://127.0.0.1:8200 VAULT_ADDR=http://127.0.0.1:8200
wait_http "$BAO_ADDR/v1/sys/health" "OpenBao"
bao() { BAO_TOKEN="$ROOT_TOKEN" VAULT_TOKEN="$ROOT_TOKEN" "$BAO" "$@"; }
DB_PASSWORD="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
bao kv put -mount=secret production/deploy-db username=deploy password="$DB_PASSWORD" >/dev/null
bao kv put -mount=secret staging/app-config api_key="stg-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >/dev/null
# Dynamic credentials for the release workflow: a PostgreSQL user per
# exchange (the local PostgreSQL, trust auth) and a Kubernetes client
# certificate from a PKI mount whose CA the (imaginary) cluster trusts.
DYNAMIC=0
if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
    bao secrets enable database >/dev/null
    bao write database/config/pg plugin_name=postgresql-database-plugin \
        "connection_url=postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable" \
        allowed_roles=deploy verify_connection=true >/dev/null
    bao write database/roles/deploy db_name=pg default_ttl=1h max_ttl=2h \
        "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT CONNECT ON DATABASE postgres TO \"{{name}}\";" >/dev/null
    bao secrets enable -path=pki-k8s pki >/dev/null
    bao secrets tune -max-lease-ttl=87600h pki-k8s >/dev/null
    bao write -field=certificate pki-k8s/root/generate/internal common_name="demo cluster client CA" ttl=87600h >/dev/null
    bao write pki-k8s/roles/k8s-deploy allow_any_name=true enforce_hostnames=false server_flag=false \
        client_flag=true organization=deployers key_type=ec key_bits=256 max_ttl=1h >/dev/null
    DYNAMIC=1
else
    echo "PostgreSQL is not answering on 127.0.0.1:5432: the dynamic-credential step is skipped"
fi
# jobkey logs in with its documented least-privilege policy (no sudo) and
# creates vault_token credentials only through the token role, whose
# allowed_policies match [vault] allowed_token_policies in
# examples/jobkey.toml (docs/vault-policy.md).
bao policy write jobkey examples/vault/jobkey-policy.hcl >/dev/null
bao write auth/token/roles/jobkey-job @examples/vault/jobkey-job-role.json >/dev/null
JOBKEY_TOKEN="$(bao token create -policy=jobkey -no-default-policy -period=1h -field=token)"
echo "seeded secret/production/deploy-db and secret/staging/app-config; jobkey logs in with examples/vault/jobkey-policy.hcl"

say "Stand-in CI issuers (jobkey dev-issuer)"
for k in github gitlab buildkite; do
    [ -s "$DEMO/$k-key.pem" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DEMO/$k-key.pem" 2>/dev/null
done
"$JOBKEY" dev-issuer --listen 127.0.0.1:8401 --key "$DEMO/github-key.pem" --kid github-demo >"$DEMO/github-issuer.log" 2>&1 &
PIDS+=($!)
"$JOBKEY" dev-issuer --listen 127.0.0.1:8402 --key "$DEMO/gitlab-key.pem" --kid gitlab-demo >"$DEMO/gitlab-issuer.log" 2>&1 &
PIDS+=($!)
"$JOBKEY" dev-issuer --listen 127.0.0.1:8403 --key "$DEMO/buildkite-key.pem" --kid buildkite-demo >"$DEMO/buildkite-issuer.log" 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:8401/.well-known/openid-configuration "the GitHub stand-in"
wait_http http://127.0.0.1:8402/.well-known/openid-configuration "the GitLab stand-in"
wait_http http://127.0.0.1:8403/.well-known/openid-configuration "the Buildkite stand-in"
echo "GitHub-shaped issuer http://127.0.0.1:8401, GitLab-shaped :8402, Buildkite-shaped :8403"

say "jobkey on 127.0.0.1:8400 (examples/jobkey.toml, policies/)"
rm -f "$DEMO/audit.jsonl"
VAULT_TOKEN="$JOBKEY_TOKEN" "$JOBKEY" serve --config examples/jobkey.toml >"$DEMO/jobkey.log" 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:8400/healthz "jobkey"
"$JOBKEY" check --config examples/jobkey.toml

mint() { # issuer-port shape overrides-json
    curl -fsS -X POST "http://127.0.0.1:$1/mint" -H 'content-type: application/json' \
        -d "{\"shape\":\"$2\",\"audience\":\"jobkey\",\"claims\":$3}" | jq -r .token
}
exchange() { # token body
    local code
    code=$(curl -sS -o "$DEMO/response.json" -w '%{http_code}' -X POST http://127.0.0.1:8400/v1/exchange \
        -H "authorization: Bearer $1" -H 'content-type: application/json' -d "$2")
    echo "HTTP $code"
    # The mask list is long (every value, each line, and its JSON, base64 and
    # URL-encoded forms): show its size, not its contents.
    jq 'if .mask then .mask = "<\(.mask | length) strings for the CI to mask>" else . end' "$DEMO/response.json"
    jq -r '.revocation.handle // empty' "$DEMO/response.json" > "$DEMO/last-handle"
    jq -r '.request_id // empty' "$DEMO/response.json" > "$DEMO/last-request-id"
    rm -f "$DEMO/response.json"
}

say "1. A GitHub Actions deploy of acme/api from main to production asks for deploy-db"
TOKEN="$(mint 8401 github '{}')"
echo "token claims: $(echo "$TOKEN" | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null | jq -c '{repository,repository_id,ref,environment,event_name}' 2>/dev/null || true)"
exchange "$TOKEN" '{"environment":"production","credentials":["deploy-db"]}'
GH_REQUEST="$(cat "$DEMO/last-request-id")"

say "2. A GitLab job of acme/api on protected main deploys to staging (all it is granted)"
exchange "$(mint 8402 gitlab '{}')" '{"environment":"staging"}'

say "3. The same GitHub workflow on a feature branch asks for deploy-db: denied"
exchange "$(mint 8401 github '{"ref":"refs/heads/feature/x","sub":"repo:acme/api:ref:refs/heads/feature/x"}')" \
    '{"environment":"production","credentials":["deploy-db"]}'

say "4. The GitHub job ends: a KV read issued nothing revocable, so its exchange had no revocation handle and was not kept"
echo "-- revoking it with the job's own ID token finds nothing (the password stays valid until rotated):"
curl -sS -X POST http://127.0.0.1:8400/v1/revoke -H "authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' -d "{\"request_id\":\"$GH_REQUEST\"}" -w '\nHTTP %{http_code}\n'
rm -f "$DEMO/last-handle" "$DEMO/last-request-id"

if [ "$DYNAMIC" = 1 ]; then
    say "5. The release workflow of acme/api gets a fresh PostgreSQL user and a kubeconfig"
    RELEASE='"acme/api/.github/workflows/release.yml@refs/heads/main"'
    code=$(curl -sS -o "$DEMO/release.json" -w '%{http_code}' -X POST http://127.0.0.1:8400/v1/exchange \
        -H "authorization: Bearer $(mint 8401 github "{\"job_workflow_ref\":$RELEASE,\"workflow_ref\":$RELEASE}")" \
        -H 'content-type: application/json' -d '{"environment":"production","credentials":["app-db-user","prod-kubeconfig"]}')
    echo "HTTP $code"
    jq '.mask = "<\(.mask | length) strings>" | .credentials["prod-kubeconfig"].values.kubeconfig |= ((split("\n")[0:6] | join("\n")) + "\n…")' "$DEMO/release.json"
    DB_USER="$(jq -r '.credentials["app-db-user"].values.username' "$DEMO/release.json")"
    echo "-- the job logs in to PostgreSQL as that user:"
    psql -h 127.0.0.1 -U "$DB_USER" -d postgres -tAc 'select current_user' || true
    echo "-- the job ends and revokes with its revocation handle:"
    curl -sS -X POST http://127.0.0.1:8400/v1/revoke -H "authorization: Bearer $(jq -r .revocation.handle "$DEMO/release.json")" \
        -H 'content-type: application/json' -d "{\"request_id\":$(jq .request_id "$DEMO/release.json")}" -w '\nHTTP %{http_code}\n'
    echo "-- the same login now fails:"
    psql -h 127.0.0.1 -U "$DB_USER" -d postgres -tAc 'select current_user' 2>&1 | sed 's/^/   /' || true
    rm -f "$DEMO/release.json"
fi

say "The audit log ($DEMO/audit.jsonl): one hash-chained line per decision"
jq -c '{seq, decision: (.action // .decision), environment, who: (.identity.repository // .identity.project_path), ref: .identity.ref, credentials: [.credentials[]?.name], why: (.credentials[0].rule // .reason.kind // .reason.code // (if .action then "exchange \(.exchange): \(.revoked) revoked" else null end))}' "$DEMO/audit.jsonl"
"$JOBKEY" audit verify "$DEMO/audit.jsonl"

say "An auditor: the production database password turned up in a build log. Which job received it?"
printf '%s\n' "$DB_PASSWORD" | "$JOBKEY" audit find --config examples/jobkey.toml

say "The full story of the denied request (the job's error names its id)"
DENIED_ID="$("$JOBKEY" audit query --config examples/jobkey.toml --decision deny --format json | jq -r 'select(.event.request_id) | .event.request_id' | head -n 1)"
if [ -n "$DENIED_ID" ]; then
    "$JOBKEY" audit show "$DENIED_ID" --config examples/jobkey.toml --policies policies
fi

say "The review page for auditors (read-only, loopback)"
"$JOBKEY" review --config examples/jobkey.toml --listen 127.0.0.1:8404 >"$DEMO/review.log" 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:8404/ "the review page"

if [ "${DEMO_EXIT:-0}" = "1" ]; then
    say "Done (DEMO_EXIT=1)"
    echo "Review page (stopped with the demo): http://127.0.0.1:8404/"
    exit 0
fi
say "Still serving. Try your own request from another terminal:"
cat <<EOT
  TOKEN=\$(curl -s -X POST http://127.0.0.1:8401/mint -H 'content-type: application/json' \\
            -d '{"shape":"github","audience":"jobkey","claims":{"ref":"refs/heads/dev"}}' | jq -r .token)
  curl -s -X POST http://127.0.0.1:8400/v1/exchange -H "authorization: Bearer \$TOKEN" \\
       -d '{"environment":"production"}' | jq
Logs: $DEMO/jobkey.log   Audit: $DEMO/audit.jsonl   Ctrl-C stops everything.
EOT
say "Review page: http://127.0.0.1:8404/"
wait
