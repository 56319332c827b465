"""One training epoch as one compiled program (``jax.jit`` over ``jax.lax.scan``).

An epoch walks the training set on the device in shuffled, masked batches
(``train.batches``); its steps are scanned, with what a ``ProbePlan`` records taken between
chunks of them (``train.probe_schedule``).

The epoch's ``loss`` and ``accuracy`` are what Keras prints: means over all training
samples seen in the epoch (each batch's mean loss weighted by its number of rows).

All functions are pure: ``TrainState`` and keys flow in and out, so ``jax.vmap`` over a
leading seed axis of the state and the keys trains several seeds in one program
(``train.seeds.over_seeds``, ``train.trainer.SeedBatchTrainer``). Every program gets what it
trains one way, a ``Bind``: a member's scalar hyperparameters (traced as data) → its model
and optimizer; ``fixed(model, optimizer)`` is the bind of members that share both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bnlab.nn.fused import apply_training
from bnlab.nn.model import Sequential
from bnlab.train.augment import Augmentation
from bnlab.train.batches import (
    Batch,
    batch_reader,
    check_batching,
    epoch_batches,
    row_mask,
    scale_pixels,
    steps_per_epoch,
)
from bnlab.train.probe_schedule import ProbeSchedule
from bnlab.train.probes import ProbePlan

Array = jax.Array
# A member's scalar hyperparameters by name (``{"optimizer.learning_rate": ()}``), traced as
# data, and the function that builds its model and optimizer from them: members that differ
# only in these share one compiled program (``train.trainer.SeedBatchTrainer``).
Scalars = Mapping[str, Array]
Bind = Callable[[Scalars], tuple[Sequential, optax.GradientTransformation]]


class TrainState(NamedTuple):
    """Everything that changes during training; separate trees for separate roles."""

    params: tuple[dict, ...]  # trainable
    bn_state: tuple[dict, ...]  # non-trainable (BN moving statistics)
    opt_state: optax.OptState


class EpochMetrics(NamedTuple):
    """Per-epoch training metrics; ``step_loss: (steps,)`` is each batch's mean loss.

    ``diverged_step``: the 0-based step of the epoch whose loss was the first non-finite
    one, ``-1`` if none was (``steps`` when every loss was finite but the state after the
    last step is not); ``loss`` and ``accuracy`` are NaN when it is set. ``probes``: what
    the epoch's ``ProbePlan`` recorded (``probe_records``), ``{}`` without one.
    """

    loss: Array
    accuracy: Array
    step_loss: Array
    diverged_step: Array
    probes: dict = {}  # noqa: RUF012 — a NamedTuple default, never mutated


class RunKeys(NamedTuple):
    """The keys of one run, split visibly from its root seed; or of several runs, each
    field then a ``(seeds,)`` key array (``for_seeds``)."""

    init: Array
    shuffle: Array
    dropout: Array

    @classmethod
    def from_seed(cls, seed: int) -> RunKeys:
        init, shuffle, dropout = jax.random.split(jax.random.key(seed), 3)
        return cls(init, shuffle, dropout)

    @classmethod
    def for_seeds(cls, seeds: Sequence[int]) -> RunKeys:
        """``from_seed`` of every seed, stacked: each field ``(len(seeds),)``."""
        return jax.tree_util.tree_map(lambda *keys: jnp.stack(keys),
                                      *[cls.from_seed(seed) for seed in seeds])

    def epoch(self, epoch: int) -> tuple[Array, Array]:
        """``(shuffle_key, dropout_key)`` for a 0-based epoch (same seed → same keys), each
        with the seed axis of these keys."""
        fold_in = jax.random.fold_in
        if jnp.ndim(self.shuffle):
            fold_in = jax.vmap(jax.random.fold_in, in_axes=(0, None))
        return fold_in(self.shuffle, epoch), fold_in(self.dropout, epoch)


def compiler_options() -> dict[str, bool | int]:
    """bnlab's XLA options for its compiled programs on JAX's default backend
    (``jit(...).lower(...).compile(options)``).

    CPU: copy insertion with region analysis. Without it XLA copies a weight matrix at every
    step when the step both reads it and updates it in place (the BN models' first kernel,
    784×300, whose input gradient feeds the input BatchNorm); results are identical.

    GPU: no GEMM autotuning (``xla_gpu_autotune_level`` 0: XLA's default kernel choice instead
    of compiling and timing candidates), which cuts compilation by seconds per program for a
    few percent per epoch. Both trade-offs are measured by ``benchmarks/compile_options.py``
    and ``benchmarks/profile_epoch.py`` (results in ``benchmarks/results/``).
    """
    backend = jax.default_backend()
    if backend == "cpu":
        return {"xla_cpu_copy_insertion_use_region_analysis": True}
    if backend == "gpu":
        return {"xla_gpu_autotune_level": 0}
    return {}


def fixed(model: Sequential, optimizer: optax.GradientTransformation) -> Bind:
    """The ``Bind`` of members that all train ``model`` with ``optimizer`` (no scalars)."""
    def bind(scalars: Scalars) -> tuple[Sequential, optax.GradientTransformation]:
        del scalars
        return model, optimizer

    return bind


def init_train_state(model: Sequential, optimizer: optax.GradientTransformation,
                     key: Array) -> TrainState:
    """Fresh parameters, BN statistics and optimizer state from ``key``."""
    params, bn_state = model.init(key)
    return TrainState(params, bn_state, optimizer.init(params))


def init_train_states(bind: Bind, keys: RunKeys, scalars: Scalars | None = None
                      ) -> TrainState:
    """``init_train_state`` for every member of ``RunKeys.for_seeds``: leaves ``(members,
    …)``, each member's model and optimizer ``bind`` of its ``scalars`` (``{name:
    (members,)}``)."""
    def one(key, member_scalars):
        return init_train_state(*bind(member_scalars), key)

    return jax.vmap(one)(keys.init, dict(scalars or {}))


def all_finite(tree) -> Array:
    """Whether every value of ``tree``'s leaves is finite: one sum per leaf (NaN and ±inf
    propagate through a sum; finite values overflow it only far beyond any trained
    network's weights)."""
    return jnp.all(jnp.stack([jnp.isfinite(jnp.sum(leaf))
                              for leaf in jax.tree_util.tree_leaves(tree)]))


def masked_loss(model: Sequential) -> Callable:
    """``loss(params, bn_state, x, y, mask, key) -> (loss, (new_bn_state, correct, rows))``:
    the mean softmax cross-entropy over the rows ``mask`` marks, in training mode; padded
    rows count nowhere (``where``: not even as 0·NaN)."""
    def loss(params, bn_state, x, y, mask, key):
        logits, new_bn_state = apply_training(model, params, bn_state, x, mask=mask, key=key)
        per_row = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        count = mask.sum().astype(per_row.dtype)
        mean = jnp.sum(jnp.where(mask, per_row, 0.0)) / count
        correct = jnp.sum(mask & (jnp.argmax(logits, axis=-1) == y))
        return mean, (new_bn_state, correct, count)

    return loss


def make_step(loss: Callable, optimizer: optax.GradientTransformation,
              batch_of: Callable[[Array, Array], tuple[Array, Array]], active: Array,
              guard: bool) -> Callable:
    """The scanned step ``((state, diverged_step), batch) → ((state, diverged_step),
    (loss, loss·rows, correct, rows))``: one update of ``state`` on ``batch``
    (``train.batches.Batch``) unless the member is not ``active`` or, with ``guard``, has
    diverged (``diverged_step``: the first step whose loss was not finite, ``-1`` before)."""
    grad_fn = jax.value_and_grad(loss, has_aux=True)

    def train_step(carry: tuple[TrainState, Array], batch: Batch):
        state, diverged_step = carry
        rows, mask, step_key, step = batch
        x, y = batch_of(rows, step_key)
        (value, (bn_state, correct, count)), grads = grad_fn(
            state.params, state.bn_state, x, y, mask, step_key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        updating = active
        if guard:
            diverged_step = jnp.where(active & (diverged_step < 0) & ~jnp.isfinite(value),
                                      step, diverged_step)
            updating = active & (diverged_step < 0)
        new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(updating, new, old),
                                           TrainState(params, bn_state, opt_state), state)
        return (new_state, diverged_step), (value, value * count, correct, count)

    return train_step


def make_train_epoch(
    bind: Bind,
    n_samples: int,
    batch_size: int,
    *,
    guard: bool = True,
    probe: ProbePlan | None = None,
    probe_images: Array | None = None,
    augmentation: Augmentation | None = None,
) -> Callable[..., tuple[TrainState, EpochMetrics]]:
    """Build ``train_epoch(state, scalars, active, images, labels, shuffle_key,
    dropout_key)`` (not jitted).

    ``images: (n_samples, …) uint8``, ``labels: (n_samples,) int32``; ``scalars``: the
    member's scalar hyperparameters, given to ``bind`` to build its model and optimizer;
    ``active``: a bool scalar, ``False`` for a member whose state must not change (one that
    diverged before, or whose record is ahead of the others' on a resume). Returns the new
    state and ``EpochMetrics``. Jit it (``jax.jit(..., donate_argnums=0)``) or vmap it.

    With ``guard`` (the default) the epoch reports where it diverged
    (``EpochMetrics.diverged_step``) and stops updating from there: every step checks its
    loss, and the state after the last step is checked once (``all_finite``). From the first
    step whose loss is not finite the state stays as it was before that step (the
    parameters that gave that loss), so a diverged member's NaNs never enter its later
    steps nor anything computed beside it. The loss suffices within the epoch: a non-finite
    weight or BN input makes the next forward pass, hence its loss, non-finite (``inf · 0``
    is NaN too), and checking it costs nothing; checking every updated parameter at every
    step cost 3-15% (``benchmarks/divergence_guard.py`` measured both, results in
    ``benchmarks/results/``). ``guard=False`` is for that benchmark.

    ``probe`` (a ``train.probes.ProbePlan``) records, on its schedule of steps and before
    those steps' updates, activation statistics on ``probe_images: (rows, …)`` and Santurkar
    et al.'s measures on the step's own batch, into ``EpochMetrics.probes``
    (``probe_records`` gives the shapes). They read the state and change nothing: the
    trained numbers are the same with or without them.

    ``augmentation`` (a ``train.augment.Augmentation``) crops and flips each training image
    by draws from its step's key; the probes' measures see the same augmented batch.
    """
    steps = steps_per_epoch(n_samples, batch_size)
    mask = row_mask(n_samples, batch_size)
    schedule = ProbeSchedule(probe or ProbePlan(every=0), steps, probe_images)

    def train_epoch(state: TrainState, scalars: Scalars, active: Array, images: Array,
                    labels: Array, shuffle_key: Array,
                    dropout_key: Array) -> tuple[TrainState, EpochMetrics]:
        model, optimizer = bind(scalars)
        check_batching(n_samples, batch_size, model)
        loss, batch_of = masked_loss(model), batch_reader(images, labels, augmentation)

        def loss_of(batch: Batch, state: TrainState) -> Callable:
            rows, row_mask_, step_key, _ = batch
            x, y = batch_of(rows, step_key)
            return lambda params: loss(params, state.bn_state, x, y, row_mask_, step_key)[0]

        step = make_step(loss, optimizer, batch_of, active, guard)
        batches = epoch_batches(shuffle_key, dropout_key, n_samples, mask)
        (state, diverged_step), outputs, records = schedule.scan(
            step, (state, jnp.int32(-1)), batches, model, optimizer, loss_of)
        step_loss, loss_sum, correct, count = outputs
        if guard:
            diverged_step = jnp.where(active & (diverged_step < 0) & ~all_finite(state), steps,
                                      diverged_step)
        total = count.sum()
        nan_if_diverged = jnp.where(diverged_step < 0, 1.0, jnp.nan)
        return state, EpochMetrics(nan_if_diverged * loss_sum.sum() / total,
                                   nan_if_diverged * correct.sum() / total, step_loss,
                                   diverged_step, records)

    return train_epoch


def make_evaluate(
    bind: Bind, chunk_size: int = 5000, *, batch_statistics: bool = False,
) -> Callable[[tuple[dict, ...], tuple[dict, ...], Scalars, Array, Array],
              tuple[Array, Array]]:
    """Build ``evaluate(params, bn_state, scalars, images, labels) -> (loss, accuracy)``
    (not jitted); ``scalars`` and ``bind`` as in ``make_train_epoch`` (the optimizer is not
    used). Means over all rows.

    Inference mode (moving statistics) by default. Rows are processed in chunks of
    ``chunk_size`` to bound memory; inference BN is per row, so chunking changes nothing.

    With ``batch_statistics`` the normalization layers compute as in training, each chunk of
    ``chunk_size`` consecutive rows (give the training batch size) normalized with its own
    statistics (the ragged last one masked), without dropout or other training noise
    (``Sequential.without_training_noise``) and without changing any state: what the model
    computes on the batches it trains on. Its difference from inference mode is the
    train/inference gap of BatchNorm.
    """

    def evaluate(params, bn_state, scalars, images, labels):
        model = bind(scalars)[0]
        if batch_statistics:
            model = model.without_training_noise()
        n = images.shape[0]
        chunks = steps_per_epoch(n, chunk_size)
        pad = chunks * chunk_size - n
        x = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
        y = jnp.pad(labels, (0, pad))
        valid = jnp.arange(chunks * chunk_size) < n
        x = x.reshape(chunks, chunk_size, *images.shape[1:])
        y = y.reshape(chunks, chunk_size)
        valid = valid.reshape(chunks, chunk_size)

        def chunk(_, batch):
            xb, yb, vb = batch
            logits, _ = model.apply(params, bn_state, scale_pixels(xb), train=batch_statistics,
                                    mask=vb if batch_statistics else None)
            per_row = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
            correct = jnp.argmax(logits, axis=-1) == yb
            # `where`: a padded row's loss must not enter the sum, even as 0·NaN
            return None, (jnp.sum(jnp.where(vb, per_row, 0.0)), jnp.sum(correct & vb))

        _, (loss_sum, correct) = jax.lax.scan(chunk, None, (x, y, valid))
        return loss_sum.sum() / n, correct.sum() / n

    return evaluate
