#!/usr/bin/env bash
# Debian's chromium for tests/browser (Playwright drives /usr/bin/chromium: its own browser
# downloads, `playwright install`, do not work on these machines). Idempotent: nothing to do,
# and nothing asked of the network, when /usr/bin/chromium is already there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [[ -x "$CHROMIUM" ]]; then
    exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "browser_setup: need root (or sudo) for apt-get" >&2; exit 1; }
    SUDO=(sudo)
fi

echo "browser_setup: installing Debian's chromium"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq chromium >/dev/null

if [[ ! -x "$CHROMIUM" ]]; then
    echo "browser_setup: apt-get finished but $CHROMIUM is missing" >&2
    exit 1
fi
"$CHROMIUM" --version 2>/dev/null || true
