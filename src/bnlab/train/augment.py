"""Data augmentation inside the compiled epoch: random crops after zero padding and horizontal
flips, the two of the Fashion-MNIST benchmark's best entries ("random horizontal flips",
"ResNet18 with augmentation"; He et al. 2016 §4.2 for CIFAR: 4 pixels padded, 32 × 32 crops,
flips).

For each training image of a step, independently:

    padded = the image with ``crop_padding`` zero pixels added on every side
    (dy, dx) ~ uniform over {0, …, 2·crop_padding}²
    image  ← padded[dy : dy + H, dx : dx + W]              (the same size as before)
    image  ← image[:, ::-1] with probability 1/2           (``flip``: left and right swapped)

on the model's inputs (pixels in [0, 1]) before the first layer, in training only; the
validation and test images and every evaluation are left as they are. The draws come from
the step's key (``augmentation_key``: the step's dropout key folded with a stream of its
own), so a seed gives the same images on every run and on a resume, and dropout's draws are
unchanged by turning augmentation on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bnlab.errors import ConfigError
from bnlab.lazy import Deferred

if TYPE_CHECKING:
    from jax import Array

jax = Deferred("jax")
jnp = Deferred("jax.numpy")
AUGMENTATION_STREAM = 0x41554721  # fold_in constant: augmentation's draws apart from dropout's


@dataclass(frozen=True)
class Augmentation:
    """What each training image goes through (module docstring); the default: nothing."""

    crop_padding: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        padding = self.crop_padding
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ConfigError(f"crop_padding must be a whole number of pixels ≥ 0, got "
                              f"{padding!r}")
        if not isinstance(self.flip, bool):
            raise ConfigError(f"flip must be true or false, got {self.flip!r}")

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip

    def check_images(self, image_shape: tuple[int, ...]) -> None:
        """A ``ConfigError`` unless images ``(height, width[, channels])`` can be cropped:
        the padding must be smaller than each side."""
        if len(image_shape) not in (2, 3):
            raise ConfigError(f"augmentation needs images (height, width[, channels]), got "
                              f"input shape {tuple(image_shape)}")
        if self.crop_padding >= min(image_shape[:2]):
            raise ConfigError(f"crop_padding {self.crop_padding} must be smaller than the "
                              f"images' sides {tuple(image_shape[:2])}")

    def apply(self, key: Array, x: Array) -> Array:
        """``x: (batch, height, width[, channels])`` with each image cropped and flipped by
        its own draws from ``key``."""
        if not self.active:
            return x
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(self._one)(keys, x)

    def _one(self, key: Array, image: Array) -> Array:
        crop_key, flip_key = jax.random.split(key)
        if self.crop_padding:
            p = self.crop_padding
            pads = ((p, p), (p, p)) + ((0, 0),) * (image.ndim - 2)
            dy, dx = jax.random.randint(crop_key, (2,), 0, 2 * p + 1)
            start = (dy, dx) + (0,) * (image.ndim - 2)
            image = jax.lax.dynamic_slice(jnp.pad(image, pads), start, image.shape)
        if self.flip:
            image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
        return image


def augmentation_key(step_key: Array) -> Array:
    """The key of a step's augmentation draws, from its dropout key."""
    return jax.random.fold_in(step_key, AUGMENTATION_STREAM)
