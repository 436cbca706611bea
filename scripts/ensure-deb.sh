#!/usr/bin/env bash
# Installs Debian packages when the command they provide is missing, and
# prints the command's path. Idempotent: when the command is on PATH it only
# prints its path. (Prometheus has a script of its own: its package's
# service must be kept from starting.)
#
#   scripts/ensure-deb.sh COMMAND PACKAGE...   # e.g. valgrind valgrind
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: scripts/ensure-deb.sh COMMAND PACKAGE..." >&2
    exit 2
fi
cmd="$1"
shift
pkgs=("$@")
pkg="${pkgs[*]}"
if path="$(command -v "$cmd" 2>/dev/null)"; then
    echo "$path"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-deb: $cmd is missing and there is no apt-get; install $pkg and put \`$cmd\` on PATH" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "ensure-deb: installing $pkg needs root (apt-get install $pkg)" >&2
        exit 1
    }
    sudo="sudo"
fi
echo "ensure-deb: installing Debian's $pkg (once)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 \
    || { $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2; }
command -v "$cmd"
