#!/bin/sh
# System packages the tests use (a virtual X display, X input tools, a headless browser).
# Installed only when missing; needs root (CI runs as root). Without root, tests that
# need them are skipped and say so.
set -e
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v Xvfb >/dev/null 2>&1 || missing="$missing xvfb"
command -v xdotool >/dev/null 2>&1 || missing="$missing xdotool"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium chromium-driver"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: missing:$missing (run as root or: sudo apt-get install$missing); the tests that need them will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends $missing >/dev/null
