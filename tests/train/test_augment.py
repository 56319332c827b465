"""Augmentation inside the compiled epoch (``train.augment``): every augmented image is a crop
of its zero-padded self, mirrored or not (found among all candidates in NumPy), the draws
cover every offset and flip about half the images, a key gives the same images every time,
and the compiled epoch trains on exactly those images; the ``[augment]`` table round-trips
through a run's ``config.json``."""

from __future__ import annotations

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnlab.config.files import experiment_from_json, load_experiment
from bnlab.errors import ConfigError
from bnlab.train.augment import Augmentation, augmentation_key
from bnlab.train.batches import epoch_batches, row_mask, scale_pixels
from bnlab.train.engine import RunKeys, fixed, init_train_state, make_train_epoch
from tests.synthetic import tiny_model, tiny_splits


def candidates(image: np.ndarray, padding: int) -> dict[tuple[int, int, bool], np.ndarray]:
    """Every image the augmentation may make of ``image``: each crop of its zero-padded
    copy, mirrored or not, by ``(dy, dx, flipped)``."""
    height, width = image.shape
    padded = np.pad(image, padding)
    found = {}
    for dy, dx, flipped in itertools.product(range(2 * padding + 1), range(2 * padding + 1),
                                             (False, True)):
        crop = padded[dy:dy + height, dx:dx + width]
        found[(dy, dx, flipped)] = crop[:, ::-1] if flipped else crop
    return found


def test_each_image_is_a_crop_of_its_padded_self_and_the_draws_cover_every_choice():
    x = np.random.default_rng(0).random((400, 6, 5)).astype(np.float32)
    augmentation = Augmentation(crop_padding=2, flip=True)
    out = np.asarray(jax.jit(augmentation.apply)(jax.random.key(1), jnp.asarray(x)))
    chosen = []
    for image, augmented in zip(x, out, strict=True):
        matches = [choice for choice, candidate in candidates(image, 2).items()
                   if np.array_equal(candidate, augmented)]
        assert matches, "an augmented image that is no crop of its padded self"
        chosen.append(matches[0])
    offsets = {(dy, dx) for dy, dx, _ in chosen}
    assert offsets == set(itertools.product(range(5), range(5)))  # 25 offsets, 16 each
    flipped = np.mean([f for _, _, f in chosen])
    assert 0.4 < flipped < 0.6  # 400 fair coins: sd 0.025


def test_a_key_gives_the_same_images_and_nothing_is_done_by_default():
    x = jnp.asarray(np.random.default_rng(2).random((8, 7, 7, 3)), jnp.float32)
    augmentation = Augmentation(crop_padding=3, flip=True)
    first = augmentation.apply(jax.random.key(5), x)
    np.testing.assert_array_equal(first, augmentation.apply(jax.random.key(5), x))
    assert not np.array_equal(first, augmentation.apply(jax.random.key(6), x))
    assert first.shape == x.shape
    np.testing.assert_array_equal(Augmentation().apply(jax.random.key(5), x), x)
    with pytest.raises(ConfigError, match="smaller than the images' sides"):
        Augmentation(crop_padding=7).check_images((7, 7, 3))


@pytest.mark.slow
def test_the_compiled_epoch_trains_on_the_augmented_images_of_each_step():
    """A Python loop over the epoch's batches, each augmented with its step's key, gives the
    compiled epoch's numbers (1e-5: float32 reassociation; the images of a crop by one pixel
    and a flip differ by order 1, so an epoch on the plain images would not)."""
    splits = tiny_splits(n_train=64)
    model, optimizer = tiny_model(), optax.sgd(0.1)
    augmentation = Augmentation(crop_padding=1, flip=True)
    keys = RunKeys.from_seed(7)
    state = init_train_state(model, optimizer, keys.init)
    shuffle_key, dropout_key = keys.epoch(0)
    epoch = jax.jit(make_train_epoch(fixed(model, optimizer), 64, 16,
                                     augmentation=augmentation))
    compiled, metrics = epoch(state, {}, True, splits.x_train, splits.y_train, shuffle_key,
                              dropout_key)

    @jax.jit
    def step(params, bn_state, opt_state, images, labels, step_key):
        x = augmentation.apply(augmentation_key(step_key), scale_pixels(images))

        def loss_fn(p):
            logits, new_state = model.apply(p, bn_state, x, train=True)
            return (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(),
                    new_state)

        (_, bn_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), bn_state, opt_state

    rows, _, step_keys, _ = epoch_batches(shuffle_key, dropout_key, 64, row_mask(64, 16))
    params, bn_state, opt_state = state
    for batch_rows, step_key in zip(np.asarray(rows), step_keys, strict=True):
        params, bn_state, opt_state = step(params, bn_state, opt_state,
                                           splits.x_train[batch_rows],
                                           splits.y_train[batch_rows], step_key)
    for got, want in zip(jax.tree_util.tree_leaves((compiled.params, compiled.bn_state)),
                         jax.tree_util.tree_leaves((params, bn_state)), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.isfinite(float(metrics.loss))


def test_the_augment_table_is_checked_and_round_trips_through_a_stored_config():
    config = load_experiment("seed", ["augment.crop_padding = 2", "augment.flip = true"])
    assert config.augment == Augmentation(crop_padding=2, flip=True)
    stored = json.loads(json.dumps(config.to_dict()))
    assert stored["augment"] == {"crop_padding": 2, "flip": True}
    assert experiment_from_json(stored, source="config.json").augment == config.augment
    plain = load_experiment("seed")
    assert "augment" not in plain.to_dict()  # a run without it stores what it stored before
    assert experiment_from_json(plain.to_dict(), source="config.json").augment == Augmentation()
    for setting, message in [("augment.crop_padding = 28", "smaller than the images' sides"),
                             ("augment.crop_padding = -1", "must be ≥ 0"),
                             ("augment.flip = 'yes'", "must be true or false"),
                             ("augment.rotate = 15", "unknown key; allowed: crop_padding, flip")]:
        with pytest.raises(ConfigError, match=message):
            load_experiment("seed", [setting])
