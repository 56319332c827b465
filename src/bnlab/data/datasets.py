"""The dataset registry, and the notebook's train / validation / test split.

The notebook (Géron, handson-ml2 ch. 11) does::

    (X_train_full, y_train_full), (X_test, y_test) = keras.datasets.fashion_mnist.load_data()
    X_valid, X_train = X_train_full[:5000] / 255., X_train_full[5000:] / 255.

so validation is the FIRST 5,000 training images and train the remaining 55,000, in file
order. `load_dataset` returns exactly those splits, with pixels left as uint8 (see `Splits`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnlab.data.idx import read_idx
from bnlab.data.sources import LocatedFile, Progress, read_files
from bnlab.data.spec import DatasetSpec, IdxFile
from bnlab.errors import ConfigError, DataError

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    train_images=IdxFile(
        "train-images-idx3-ubyte.gz",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        47_040_016,
        (60_000, 28, 28),
    ),
    train_labels=IdxFile(
        "train-labels-idx1-ubyte.gz",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        60_008,
        (60_000,),
    ),
    test_images=IdxFile(
        "t10k-images-idx3-ubyte.gz",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        7_840_016,
        (10_000, 28, 28),
    ),
    test_labels=IdxFile(
        "t10k-labels-idx1-ubyte.gz",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        10_008,
        (10_000,),
    ),
    class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    validation_size=5000,
    mirrors=(
        # The one the notebook's keras.datasets.fashion_mnist uses, then upstream's.
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    debian_package="dataset-fashion-mnist",
)

DATASETS: Mapping[str, DatasetSpec] = {"fashion_mnist": FASHION_MNIST}


@dataclass(frozen=True, eq=False)
class Splits:
    """The notebook's three splits as read-only arrays (Fashion-MNIST shapes shown).

    x_train: (55000, 28, 28) uint8   training images 5000.. of the training file
    y_train: (55000,) int32          their labels, 0..9
    x_val:   (5000, 28, 28) uint8    the FIRST 5000 images of the training file
    y_val:   (5000,) int32
    x_test:  (10000, 28, 28) uint8   the test file
    y_test:  (10000,) int32
    class_names: label -> name
    sources: the verified files the arrays came from

    Pixels stay uint8 in 0..255: a quarter of float32's memory and host-to-device traffic.
    The training step scales them by 1/255 on the device, as the notebook's `/ 255.` does.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    sources: tuple[LocatedFile, ...]

    def subset(self, *, train: int | None = None, val: int | None = None,
               test: int | None = None) -> Splits:
        """The first ``train`` / ``val`` / ``test`` rows of each split (``None``: all), for a
        quick run: ``splits.subset(train=6424)`` is 200 full steps of 32 and a last batch of
        24 rows, as the notebook's 55,000 rows end."""
        def first(images: np.ndarray, labels: np.ndarray, rows: int | None, name: str):
            if rows is None:
                return images, labels
            if not 1 <= rows <= len(labels):
                raise ConfigError(f"subset: {name} must be in 1..{len(labels):,} rows, got "
                                  f"{rows!r}")
            return images[:rows], labels[:rows]

        x_train, y_train = first(self.x_train, self.y_train, train, "train")
        x_val, y_val = first(self.x_val, self.y_val, val, "val")
        x_test, y_test = first(self.x_test, self.y_test, test, "test")
        return dataclasses.replace(self, x_train=x_train, y_train=y_train, x_val=x_val,
                                   y_val=y_val, x_test=x_test, y_test=y_test)

    def __repr__(self) -> str:
        return (f"Splits(train={len(self.y_train):,}, val={len(self.y_val):,}, "
                f"test={len(self.y_test):,}, images {self.x_train.shape[1:]} "
                f"{self.x_train.dtype}, {len(self.class_names)} classes)")


def get_spec(name: str, registry: Mapping[str, DatasetSpec] = DATASETS) -> DatasetSpec:
    """The registry entry `name`; an unknown name is a `DataError` listing the known ones."""
    if name not in registry:
        known = ", ".join(sorted(registry))
        raise DataError(f"unknown dataset {name!r}; choose one of: {known}")
    return registry[name]


def load_dataset(
    name: str = "fashion_mnist",
    *,
    data_dir: Path | None = None,
    cache_dir: Path,
    system_dirs: Sequence[Path] | None = None,
    mirrors: Sequence[str] | None = None,
    download: bool = True,
    timeout: float = 60.0,
    registry: Mapping[str, DatasetSpec] = DATASETS,
    on_progress: Progress | None = None,
) -> Splits:
    """Find, verify, parse and split dataset `name` (see `bnlab.data.sources` for the search).

    `system_dirs` and `mirrors` default to the spec's own (Debian's dir; the Keras bucket,
    then upstream GitHub); `on_progress` hears about each download as it arrives. Raises
    `DataError` with one line saying what is wrong and the fix.
    """
    spec = get_spec(name, registry)
    found = read_files(
        spec, data_dir=data_dir, cache_dir=cache_dir, system_dirs=system_dirs,
        mirrors=mirrors, download=download, timeout=timeout, on_progress=on_progress,
    )
    arrays = {
        role: _parse(record, raw, spec.files()[role], spec) for role, (record, raw) in found.items()
    }
    v = spec.validation_size
    train_images, train_labels = arrays["train_images"], arrays["train_labels"]
    return Splits(
        x_train=train_images[v:],
        y_train=train_labels[v:],
        x_val=train_images[:v],
        y_val=train_labels[:v],
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"],
        class_names=spec.class_names,
        sources=tuple(record for record, _ in found.values()),
    )


def _parse(record: LocatedFile, raw: bytes, file: IdxFile, spec: DatasetSpec) -> np.ndarray:
    """Parse one verified file; labels come back as read-only int32, images as uint8."""
    fix = f"the {spec.name} registry entry does not match its own digest; correct the registry"
    array = read_idx(raw, name=str(record.path), fix=fix)
    if array.dtype != np.uint8 or array.shape != file.shape:
        raise DataError(
            f"{record.path} holds a {array.dtype} array of shape {array.shape}, "
            f"expected uint8 {file.shape}; {fix}"
        )
    if record.role.endswith("_images"):
        return array
    n_classes = len(spec.class_names)
    if array.size and array.max() >= n_classes:
        raise DataError(
            f"{record.path} holds label {array.max()}, outside 0..{n_classes - 1}; {fix}"
        )
    labels = array.astype(np.int32)
    labels.flags.writeable = False
    return labels
