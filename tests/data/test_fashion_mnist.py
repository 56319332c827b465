"""The real Fashion-MNIST (Debian's dataset-fashion-mnist or bnlab's cache): shapes,
digests, the split."""

import gzip

import numpy as np
import pytest

from bnlab.data.datasets import FASHION_MNIST
from bnlab.train.batches import scale_pixels

# `fashion_mnist` (tests/conftest.py) loads the dataset once per session, without
# downloading, and skips when the files are not on disk.
pytestmark = pytest.mark.realdata


def raw_idx(splits, name: str, header: int) -> np.ndarray:
    """The file's data as uint8, read without bnlab (header: 16 for images, 8 for labels)."""
    [path] = [s.path for s in splits.sources if s.path.name == name]
    return np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=header)


def test_shapes_and_dtypes_are_the_notebooks(fashion_mnist):
    got = {name: (getattr(fashion_mnist, name).shape, getattr(fashion_mnist, name).dtype)
           for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    assert got == {
        "x_train": ((55_000, 28, 28), np.uint8), "y_train": ((55_000,), np.int32),
        "x_val": ((5_000, 28, 28), np.uint8), "y_val": ((5_000,), np.int32),
        "x_test": ((10_000, 28, 28), np.uint8), "y_test": ((10_000,), np.int32),
    }


def test_validation_is_the_first_5000_training_images_and_train_the_rest(fashion_mnist):
    images = raw_idx(fashion_mnist, "train-images-idx3-ubyte.gz", 16).reshape(60_000, 28, 28)
    labels = raw_idx(fashion_mnist, "train-labels-idx1-ubyte.gz", 8)
    assert np.array_equal(fashion_mnist.x_val, images[:5000])
    assert np.array_equal(fashion_mnist.x_train, images[5000:])
    assert np.array_equal(fashion_mnist.y_val, labels[:5000])
    assert np.array_equal(fashion_mnist.y_train, labels[5000:])
    assert np.array_equal(fashion_mnist.y_test,
                          raw_idx(fashion_mnist, "t10k-labels-idx1-ubyte.gz", 8))


def test_labels_are_balanced_over_the_ten_classes(fashion_mnist):
    # Fashion-MNIST has exactly 6,000 training and 1,000 test images per class.
    train = np.concatenate([fashion_mnist.y_val, fashion_mnist.y_train])
    assert np.bincount(train, minlength=10).tolist() == [6000] * 10
    assert np.bincount(fashion_mnist.y_test, minlength=10).tolist() == [1000] * 10
    names = fashion_mnist.class_names
    assert len(names) == 10 and names[0] == "T-shirt/top" and names[9] == "Ankle boot"


def test_files_come_from_disk_with_the_registered_digests(fashion_mnist):
    assert {s.origin for s in fashion_mnist.sources} <= {"system", "cache"}
    assert [s.path.name for s in fashion_mnist.sources] == [
        f.name for f in FASHION_MNIST.files().values()
    ]
    assert [s.sha256 for s in fashion_mnist.sources] == [
        f.sha256 for f in FASHION_MNIST.files().values()
    ]


def test_pixels_span_0_to_255_and_scale_to_0_to_1(fashion_mnist):
    assert fashion_mnist.x_test.min() == 0 and fashion_mnist.x_test.max() == 255
    scaled = np.asarray(scale_pixels(fashion_mnist.x_val))  # what the training step sees
    assert scaled.dtype == np.float32 and scaled.min() == 0.0 and scaled.max() == 1.0
    # The notebook divides in float64 and Keras casts to float32; XLA multiplies by 1/255,
    # within one float32 ulp of that (tests/train/test_engine.py).
    np.testing.assert_array_max_ulp(scaled, (fashion_mnist.x_val / 255.0).astype(np.float32),
                                    maxulp=1)
