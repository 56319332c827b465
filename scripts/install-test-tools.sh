#!/usr/bin/env bash
# Install the tools the tests need from Debian: chromium (headless, at /usr/bin/chromium) for
# the HTML report's browser test, and iproute2 (`ip netns`) for the Ray cluster test, which
# runs the cluster in a network namespace of its own. Idempotent; where a tool cannot be
# installed the test that needs it skips, saying why.
set -euo pipefail
here="$(dirname "$0")"
if [ ! -x /usr/bin/chromium ]; then
  bash "$here/apt-install.sh" chromium "the browser test of the HTML report will skip"
fi
if ! command -v ip >/dev/null 2>&1; then
  bash "$here/apt-install.sh" iproute2 "the Ray cluster test will skip"
fi
