#!/usr/bin/env bash
# Installs Prometheus (the Debian package `prometheus`) when it is not on
# the PATH, for the test that scrapes jobkey's /metrics with a real
# Prometheus. Only the binary is used: the test runs its own instance on a
# free loopback port with its own configuration and data directory; the
# package's service is not started (policy-rc.d refuses it during the
# install, and nothing here enables it).
#
#   scripts/ensure-prometheus.sh    # prints the path of the prometheus binary
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
    command -v prometheus
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-prometheus: prometheus is not installed and there is no apt-get; install Prometheus and put it on the PATH" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "ensure-prometheus: installing the Debian package prometheus" >&2
export DEBIAN_FRONTEND=noninteractive
# Keep the package's own service from starting inside the install.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    added_policy=1
fi
cleanup() { if [ -n "$added_policy" ]; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT
$sudo apt-get install -y --no-install-recommends prometheus >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends prometheus >/dev/null; }
command -v prometheus
