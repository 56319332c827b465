"""An epoch's batches, drawn on the device from the whole training set.

The data stay on the device as ``uint8`` images ``(n, 28, 28)`` and ``int32`` labels
``(n,)``; each step gathers its rows and scales pixels by 1/255 (the notebook's
preprocessing). An epoch shuffles the ``n`` training rows with its own PRNG key and walks
them in ``ceil(n / batch_size)`` steps; the ragged last batch is padded to full size and a
row mask keeps the padding out of the loss, the accuracy, the gradient and the BN
statistics, so it behaves exactly like Keras's smaller last batch (24 rows of 55,000 / 32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from bnlab.errors import ConfigError
from bnlab.lazy import Deferred
from bnlab.limits import BATCH_VALUES, PARAMETERS
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.model import Sequential
from bnlab.train.augment import Augmentation, augmentation_key

if TYPE_CHECKING:
    from jax import Array

jax = Deferred("jax")
jnp = Deferred("jax.numpy")
# One step's batch: rows (batch_size,) int32, mask (batch_size,) bool, the step's dropout key
# and its 0-based index in the epoch.
Batch = tuple["Array", "Array", "Array", "Array"]


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """``ceil(n_samples / batch_size)``: 1,719 for 55,000 rows at batch 32."""
    return -(-n_samples // batch_size)


def check_batching(n_samples: int, batch_size: int, model: Sequential) -> None:
    """Reject batchings that would leave a one-row batch for a model with BatchNorm, and
    sizes over ``limits.PARAMETERS`` (``model.weight_bound``) or ``limits.BATCH_VALUES``
    (``batch_size`` × the model's widest layer), before anything is allocated."""
    if batch_size < 1 or n_samples < 1:
        raise ConfigError(f"batch_size and the dataset size must be ≥ 1, got {batch_size}, "
                          f"{n_samples}")
    PARAMETERS.check(model.weight_bound, f"the model {model.name}")
    widest = max(math.prod(shape) for shape in (model.input_shape, *model.output_shapes))
    BATCH_VALUES.check(batch_size * widest, f"a batch of {batch_size:,} rows × {widest:,} "
                                            "values (the widest layer)")
    has_bn = any(isinstance(layer, BatchNorm) for layer in model.layers)
    if has_bn and (batch_size == 1 or n_samples % batch_size == 1):
        raise ConfigError(
            f"with {n_samples} samples and batch_size {batch_size} a training batch has one "
            "row, whose BatchNorm variance is 0; pick a batch_size that leaves ≥ 2 rows"
        )


def scale_pixels(images: Array) -> Array:
    """Model inputs from stored images: ``uint8`` pixels become float32 in [0, 1] (the
    notebook's ``X / 255.0``); floating-point inputs are used as they are, in float32."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def row_mask(n_samples: int, batch_size: int) -> Array:
    """``(steps, batch_size)`` bool: which rows of each step's padded batch are real."""
    steps = steps_per_epoch(n_samples, batch_size)
    return (jnp.arange(steps * batch_size) < n_samples).reshape(steps, batch_size)


def epoch_batches(shuffle_key: Array, dropout_key: Array, n_samples: int,
                  mask: Array) -> Batch:
    """Every step's batch of an epoch (leaves ``(steps, …)``): a permutation of the
    ``n_samples`` rows drawn from ``shuffle_key``, padded to ``mask``'s shape
    (``row_mask(n_samples, batch_size)``), and a dropout key per step split from
    ``dropout_key``."""
    steps, batch_size = mask.shape
    order = jax.random.permutation(shuffle_key, n_samples)
    order = jnp.pad(order, (0, steps * batch_size - n_samples)).reshape(steps, batch_size)
    step_keys = jax.random.split(dropout_key, steps)
    return order, mask, step_keys, jnp.arange(steps, dtype=jnp.int32)


def batch_reader(images: Array, labels: Array, augmentation: Augmentation | None = None
                 ) -> Callable[[Array, Array], tuple[Array, Array]]:
    """``(rows, step_key) → (x, y)``: the model inputs and labels of ``rows`` of the training
    set, each image augmented (``train.augment``) by draws from the step's key."""
    # Rows are gathered as flat vectors, then reshaped back (free): in the BN models XLA's CPU
    # gather of (28, 28) rows is slower (measured in benchmarks/results/).
    flat_images = images.reshape(images.shape[0], -1)

    def batch_of(rows: Array, step_key: Array) -> tuple[Array, Array]:
        x = scale_pixels(flat_images[rows].reshape(rows.shape + images.shape[1:]))
        if augmentation is not None and augmentation.active:
            x = augmentation.apply(augmentation_key(step_key), x)
        return x, labels[rows]

    return batch_of
