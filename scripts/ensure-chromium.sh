#!/usr/bin/env bash
# Installs Debian's `chromium` when it is missing: the review page's test
# loads the page in headless Chromium (`--dump-dom`, `--screenshot`).
# Idempotent: when `chromium` is on PATH it only prints its path.
#
#   scripts/ensure-chromium.sh      # prints the chromium binary's path
set -euo pipefail

if path="$(command -v chromium 2>/dev/null)"; then
    echo "$path"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no chromium and no apt-get; install Chromium and put \`chromium\` on PATH" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "ensure-chromium: installing chromium needs root (apt-get install chromium)" >&2
        exit 1
    }
    sudo="sudo"
fi
echo "ensure-chromium: installing Debian's chromium (once)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
command -v chromium
