"""What a dataset is to bnlab: its four gzip-compressed IDX files, their digests and shapes,
its classes and the size of its validation split (``datasets.py`` holds the entries)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class IdxFile:
    """One gzip-compressed IDX file of a dataset.

    name: file name on disk and on the mirrors, e.g. "train-images-idx3-ubyte.gz".
    sha256: hex digest of the DECOMPRESSED bytes (mirrors gzip differently, same content).
    size: decompressed size in bytes.
    shape: shape of the uint8 array it holds, e.g. (60000, 28, 28) or (60000,).
    """

    name: str
    sha256: str
    size: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find, verify and split one image-classification dataset.

    Images are (n, height, width) uint8 and labels (n,) uint8 in 0..len(class_names)-1.
    `mirrors` are URL prefixes ending in "/" (the file name is appended); `system_dirs` are
    where an OS package installs the files; `debian_package` names that package.
    """

    name: str
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    class_names: tuple[str, ...]
    validation_size: int = 5000
    mirrors: tuple[str, ...] = ()
    system_dirs: tuple[Path, ...] = ()
    debian_package: str | None = None

    def __post_init__(self) -> None:
        n_train, n_test = self.train_images.shape[0], self.test_images.shape[0]
        if self.train_labels.shape != (n_train,) or self.test_labels.shape != (n_test,):
            raise ValueError(f"{self.name}: image and label counts differ in the registry")
        if not 0 < self.validation_size < n_train:
            raise ValueError(f"{self.name}: validation_size must be in 1..{n_train - 1}")

    def files(self) -> dict[str, IdxFile]:
        """The four files by role, in `ROLES` order."""
        return {role: getattr(self, role) for role in ROLES}
