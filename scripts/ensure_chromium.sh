#!/usr/bin/env bash
# Make sure a Chromium exists for the browser test (tests/test_browser.py, marker `browser`).
#
# The test drives the system Chromium (/usr/bin/chromium, or $ALPHAEDIT_CHROMIUM) with
# Playwright; it never downloads a browser of its own. This script:
#   * does nothing when a Chromium is already there;
#   * as root on Debian/Ubuntu, installs Debian's `chromium` package with apt-get;
#   * otherwise prints how to install one and exits 0 (the browser test then skips, except
#     under CI=true, where it fails).
# Called by `make setup`; safe to run again.
set -euo pipefail

found() {
    local exe="$1" version
    version="$("$exe" --version 2>/dev/null | head -n 1 || true)"
    echo "ensure_chromium: chromium found at $exe${version:+ ($version)}"
}

if [ -n "${ALPHAEDIT_CHROMIUM:-}" ]; then
    if [ -x "$ALPHAEDIT_CHROMIUM" ]; then
        found "$ALPHAEDIT_CHROMIUM"
        exit 0
    fi
    echo "ensure_chromium: ALPHAEDIT_CHROMIUM=$ALPHAEDIT_CHROMIUM is not an executable file; ignoring it" >&2
fi

for exe in /usr/bin/chromium "$(command -v chromium 2>/dev/null || true)" "$(command -v chromium-browser 2>/dev/null || true)"; do
    if [ -n "$exe" ] && [ -x "$exe" ]; then
        found "$exe"
        exit 0
    fi
done

hint() {
    cat <<'MSG'
ensure_chromium: no Chromium found; the browser test (pytest -m browser) will be skipped (under CI=true it fails).
To enable it, install Chromium as root:
    sudo apt-get update && sudo apt-get install -y chromium      # Debian / Ubuntu
    sudo scripts/ensure_chromium.sh                               # the same, from this repo
or point ALPHAEDIT_CHROMIUM at an existing Chromium/Chrome executable:
    export ALPHAEDIT_CHROMIUM=/path/to/chrome
MSG
}

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: installing Debian's chromium with apt-get (root)"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -q && apt-get install -y -q --no-install-recommends chromium; then
        if [ -x /usr/bin/chromium ]; then
            found /usr/bin/chromium
            exit 0
        fi
    fi
    echo "ensure_chromium: apt-get could not install chromium" >&2
    hint
    exit 0
fi

hint
exit 0
