#!/usr/bin/env bash
# Install the tools the browser test needs: Debian's chromium (headless, at /usr/bin/chromium).
# Idempotent; where it cannot be installed the browser test of the HTML report skips, saying why.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
bash "$(dirname "$0")/apt-install.sh" chromium "the browser test of the HTML report will skip"
