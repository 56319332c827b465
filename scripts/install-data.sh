#!/usr/bin/env bash
# Install Debian's dataset-fashion-mnist (the real Fashion-MNIST files) when it is missing.
# Where that cannot be done, bnlab downloads the files from the canonical mirrors into the
# user cache and verifies their digests.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] && [ -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then
  exit 0
fi
bash "$(dirname "$0")/apt-install.sh" dataset-fashion-mnist \
  "bnlab will download Fashion-MNIST into its cache (digests verified)"
