#!/usr/bin/env bash
# Install Debian's dataset-fashion-mnist (the real Fashion-MNIST files) when it is missing.
# Without apt or root rights it says so and leaves the job to bnlab, which downloads the
# files from the canonical mirrors into the user cache and verifies their digests.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] && [ -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-data: no apt-get here; bnlab will download Fashion-MNIST into its cache." >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "install-data: not root; run 'sudo apt-get install dataset-fashion-mnist'" \
         "or let bnlab download the files into its cache." >&2
    exit 0
  fi
fi
echo "install-data: installing Debian's dataset-fashion-mnist" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
