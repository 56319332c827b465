#!/usr/bin/env bash
# apt-install.sh PACKAGE WHAT-HAPPENS-WITHOUT-IT
# Install one Debian package with apt-get, as root or through passwordless sudo. Never fails:
# without apt, root rights or a reachable archive it prints why and what happens instead, and
# exits 0, so that `make seed` / `make test` go on (both have a fallback for each package).
set -uo pipefail
package=$1
without=$2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-install: no apt-get here; $without" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "apt-install: not root; run 'sudo apt-get install $package' ($without meanwhile)" >&2
    exit 0
  fi
fi
echo "apt-install: installing Debian's $package" >&2
install() { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$package" >/dev/null; }
# Refresh the package lists only when apt does not know the package or its lists are stale.
if ! { apt-cache show "$package" >/dev/null 2>&1 && install; }; then
  if ! { $sudo apt-get update -qq && install; }; then
    echo "apt-install: could not install $package; $without" >&2
  fi
fi
exit 0
