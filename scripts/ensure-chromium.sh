#!/usr/bin/env bash
# Installs Debian's `chromium` when it is missing: the review page's test
# loads the page in headless Chromium (`--dump-dom`, `--screenshot`).
# Idempotent: when `chromium` is on PATH it only prints its path.
#
#   scripts/ensure-chromium.sh      # prints the chromium binary's path
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/ensure-deb.sh" chromium chromium fonts-dejavu-core
