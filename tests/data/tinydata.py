"""Builders for a tiny dataset of real gzip-compressed IDX files and its registry entry."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnlab.data.idx import write_idx
from bnlab.data.spec import ROLES, DatasetSpec, IdxFile

NAMES = {
    "train_images": "tiny-train-images.gz",
    "train_labels": "tiny-train-labels.gz",
    "test_images": "tiny-test-images.gz",
    "test_labels": "tiny-test-labels.gz",
}


@dataclass(frozen=True)
class Tiny:
    """spec: registry entry whose digests match `gz`; gz: file name -> .gz bytes."""

    spec: DatasetSpec
    arrays: dict[str, np.ndarray]
    gz: dict[str, bytes]

    def put(self, directory: Path, *, skip: tuple[str, ...] = ()) -> Path:
        """Write the .gz files (except the names in `skip`) into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, payload in self.gz.items():
            if name not in skip:
                (directory / name).write_bytes(payload)
        return directory


def make_tiny(
    arrays: dict[str, np.ndarray] | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> Tiny:
    """8 train + 4 test images of 3x2 pixels, 3 classes, validation_size 3.

    `arrays` replaces file contents by role; `shapes` overrides the shapes the registry
    declares (to build a registry that disagrees with its files).
    """
    default = {
        "train_images": np.arange(8 * 6, dtype=np.uint8).reshape(8, 3, 2),
        "train_labels": (np.arange(8) % 3).astype(np.uint8),
        "test_images": (200 + np.arange(4 * 6)).astype(np.uint8).reshape(4, 3, 2),
        "test_labels": np.array([2, 1, 0, 2], np.uint8),
    }
    arrays = {**default, **(arrays or {})}
    shapes = {**{role: arrays[role].shape for role in ROLES}, **(shapes or {})}
    files, gz = {}, {}
    for role in ROLES:
        raw = write_idx(arrays[role])
        files[role] = IdxFile(NAMES[role], hashlib.sha256(raw).hexdigest(), len(raw), shapes[role])
        gz[NAMES[role]] = gzip.compress(raw, mtime=0)
    spec = DatasetSpec(
        name="tiny", **files, class_names=("a", "b", "c"), validation_size=3,
        debian_package="dataset-tiny",
    )
    return Tiny(spec, arrays, gz)


def other_gz() -> bytes:
    """A valid gzip-compressed IDX file that matches none of the tiny digests."""
    return gzip.compress(write_idx(np.zeros((2, 2), np.uint8)), mtime=0)
