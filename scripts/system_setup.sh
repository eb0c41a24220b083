#!/usr/bin/env bash
# The Debian packages some tests drive: chromium (tests/browser: Playwright drives
# /usr/bin/chromium; its own browser downloads, `playwright install`, do not work on these
# machines) and nginx (tests/cluster/test_load_balancer.py: the load balancer in front of two
# instances). Idempotent: nothing to do, and nothing asked of the network, when both are there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
NGINX=/usr/sbin/nginx

missing=()
[[ -x "$CHROMIUM" ]] || missing+=(chromium)
[[ -x "$NGINX" ]] || missing+=(nginx-light)
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "system_setup: need root (or sudo) for apt-get" >&2; exit 1; }
    SUDO=(sudo)
fi

echo "system_setup: installing Debian's ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null

for binary in "$CHROMIUM" "$NGINX"; do
    if [[ ! -x "$binary" ]]; then
        echo "system_setup: apt-get finished but $binary is missing" >&2
        exit 1
    fi
done
"$CHROMIUM" --version 2>/dev/null || true
"$NGINX" -v 2>&1 || true
