#!/usr/bin/env bash
# Install Debian's headless browser for the web tests: chromium + chromium-driver.
# Idempotent and quiet: does nothing when /usr/bin/chromium already runs.
# Needs root (or sudo) and an apt mirror; exits non-zero when it cannot install.
set -euo pipefail

CHROMIUM=${MOEFLOW_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ] && "$CHROMIUM" --version >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install_browser: need root (or passwordless sudo) to apt-get install chromium" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: apt-get not found; install chromium yourself and set MOEFLOW_CHROMIUM" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_browser: installing chromium chromium-driver (apt-get)" >&2
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
"$CHROMIUM" --version >&2
