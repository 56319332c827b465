#!/usr/bin/env bash
# Install the tools the browser test needs: Debian's chromium (headless, at /usr/bin/chromium).
# Idempotent. Without apt or root rights it says so and exits 0; the browser test then skips
# with the reason.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-tools: no apt-get here; the browser test of the HTML report will skip." >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "install-test-tools: not root; run 'sudo apt-get install chromium' to enable the" \
         "browser test of the HTML report (it skips meanwhile)." >&2
    exit 0
  fi
fi
echo "install-test-tools: installing Debian's chromium" >&2
install() { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null; }
# Refresh the package lists once, only when apt does not know chromium or its lists are stale.
if ! { apt-cache show chromium >/dev/null 2>&1 && install; }; then
  $sudo apt-get update -qq && install || {
    echo "install-test-tools: could not install chromium; the browser test will skip." >&2
  }
fi
