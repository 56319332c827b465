"""One training epoch as one compiled program (``jax.jit`` over ``jax.lax.scan``).

The data stay on the device as ``uint8`` images ``(n, 28, 28)`` and ``int32`` labels
``(n,)``; each step gathers its rows and scales pixels by 1/255 (the notebook's
preprocessing). An epoch shuffles the ``n`` training rows with its own PRNG key and walks
them in ``ceil(n / batch_size)`` steps; the ragged last batch is padded to full size and a
row mask keeps the padding out of the loss, the accuracy, the gradient and the BN
statistics, so it behaves exactly like Keras's smaller last batch (24 rows of 55,000 / 32).

The epoch's ``loss`` and ``accuracy`` are what Keras prints: means over all training
samples seen in the epoch (each batch's mean loss weighted by its number of rows).

All functions are pure: ``TrainState`` and keys flow in and out, so ``jax.vmap`` over a
leading seed axis of the state and the keys trains several seeds in one program
(``train.seeds.over_seeds``, ``train.trainer.SeedBatchTrainer``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.fused import apply_training
from bnlab.nn.model import Sequential
from bnlab.train.probes import (
    ProbePlan,
    dense_kernels,
    internal_covariate_shift,
    landscape,
    probe_records,
    record_activations,
    tree_norm,
    written,
)

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


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """``ceil(n_samples / batch_size)``: 1,719 for 55,000 rows at batch 32."""
    return -(-n_samples // batch_size)


def check_batching(n_samples: int, batch_size: int, model: Sequential) -> None:
    """Reject batchings that would leave a one-row batch for a model with BatchNorm."""
    if batch_size < 1 or n_samples < 1:
        raise ConfigError(f"batch_size and the dataset size must be ≥ 1, got {batch_size}, "
                          f"{n_samples}")
    has_bn = any(isinstance(layer, BatchNorm) for layer in model.layers)
    if has_bn and (batch_size == 1 or n_samples % batch_size == 1):
        raise ConfigError(
            f"with {n_samples} samples and batch_size {batch_size} a training batch has one "
            "row, whose BatchNorm variance is 0; pick a batch_size that leaves ≥ 2 rows"
        )


def init_train_state(model: Sequential, optimizer: optax.GradientTransformation,
                     key: Array) -> TrainState:
    """Fresh parameters, BN statistics and optimizer state from ``key``."""
    params, bn_state = model.init(key)
    return TrainState(params, bn_state, optimizer.init(params))


def init_train_states(model: Sequential, optimizer: optax.GradientTransformation,
                      keys: RunKeys, scalars: Scalars | None = None,
                      bind: Bind | None = None) -> TrainState:
    """``init_train_state`` for every member of ``RunKeys.for_seeds``: leaves ``(members,
    …)``; with ``bind``, each member's model and optimizer are ``bind`` of its ``scalars``
    (``{name: (members,)}``)."""
    def one(key, member_scalars):
        return init_train_state(*bound(model, optimizer, bind, member_scalars), key)

    return jax.vmap(one)(keys.init, dict(scalars or {}))


def bound(model: Sequential, optimizer: optax.GradientTransformation, bind: Bind | None,
          scalars: Scalars) -> tuple[Sequential, optax.GradientTransformation]:
    """The model and optimizer of one member: ``bind(scalars)``, or ``model`` and
    ``optimizer`` as they are without ``bind``."""
    return (model, optimizer) if bind is None else bind(scalars)


def scale_pixels(images: Array) -> Array:
    """Model inputs from stored images: ``uint8`` pixels become float32 in [0, 1] (the
    notebook's ``X / 255.0``); floating-point inputs are used as they are, in float32."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def all_finite(tree) -> Array:
    """Whether every value of ``tree``'s leaves is finite: one sum per leaf (NaN and ±inf
    propagate through a sum; finite values overflow it only far beyond any trained
    network's weights)."""
    return jnp.all(jnp.stack([jnp.isfinite(jnp.sum(leaf))
                              for leaf in jax.tree_util.tree_leaves(tree)]))


def make_train_epoch(
    model: Sequential,
    optimizer: optax.GradientTransformation,
    n_samples: int,
    batch_size: int,
    *,
    guard: bool = True,
    bind: Bind | None = None,
    probe: ProbePlan | None = None,
    probe_images: Array | None = None,
) -> Callable[..., tuple[TrainState, EpochMetrics]]:
    """Build ``train_epoch(state, scalars, active, images, labels, shuffle_key,
    dropout_key)`` (not jitted).

    ``images: (n_samples, …) uint8``, ``labels: (n_samples,) int32``; ``scalars``: the
    member's scalar hyperparameters, given to ``bind`` to build its model and optimizer
    (``{}`` and ``bind=None`` train ``model`` with ``optimizer``); ``active``: a bool scalar,
    ``False`` for a member whose state must not change (one that diverged before, or whose
    record is ahead of the others' on a resume). Returns the new state and
    ``EpochMetrics``. Jit it (``jax.jit(..., donate_argnums=0)``) or vmap it.

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
    """
    check_batching(n_samples, batch_size, model)
    steps = steps_per_epoch(n_samples, batch_size)
    padded = steps * batch_size
    row_mask = (jnp.arange(padded) < n_samples).reshape(steps, batch_size)
    plan = probe or ProbePlan(every=0)
    if plan.every and probe_images is None:
        raise ConfigError("a probe plan with activation statistics needs probe_images")
    probe_x = None if not plan.every else scale_pixels(jnp.asarray(probe_images))
    kernels = dense_kernels(model)
    chunk = math.gcd(plan.every, plan.measures_every)  # steps between records; 0: none

    def probe_step(records: dict, member_model: Sequential, member_optimizer, state: TrainState,
                   step: Array, step_key: Array, loss_of: Callable) -> dict:
        """``records`` with the activation statistics and measures of ``state``, the state
        before step ``step``, written where the plan's schedule says (a ``lax.cond`` on the
        step, taken between the scans of the epoch's chunks, never inside a step)."""
        records = dict(records)
        params = state.params
        if plan.every:
            def activations(buffer):
                stats = record_activations(member_model, params, state.bn_state, probe_x,
                                           units=plan.units,
                                           key=jax.random.fold_in(step_key, 1))
                return written(buffer, step // plan.every, stats)

            records["activations"] = jax.lax.cond(step % plan.every == 0, activations,
                                                  lambda buffer: buffer, records["activations"])
        if plan.measures_every:
            def measures(buffer):
                loss, grads = jax.value_and_grad(loss_of)(params)
                updates, _ = member_optimizer.update(grads, state.opt_state, params)
                shift, cosine = internal_covariate_shift(loss_of, params,
                                                         optax.apply_updates(params, updates),
                                                         kernels)
                grad_norm = tree_norm(grads)
                # Step sizes as multiples of the step taken along the gradient: for SGD,
                # ‖Δ‖/‖g‖ is the learning rate.
                taken = tree_norm(updates) / jnp.maximum(grad_norm, jnp.finfo(jnp.float32).tiny)
                sizes = taken * jnp.asarray(plan.step_scales, jnp.float32)
                losses, changes = landscape(loss_of, params, grads, sizes)
                return written(buffer, step // plan.measures_every, {
                    "ics": shift, "ics_cosine": cosine, "loss": loss, "grad_norm": grad_norm,
                    "step_sizes": sizes, "loss_along": losses, "grad_change": changes})

            records["measures"] = jax.lax.cond(step % plan.measures_every == 0, measures,
                                               lambda buffer: buffer, records["measures"])
        return records

    def empty_records(params, bn_state) -> dict:
        """Zeroed buffers for an epoch's records, shaped as ``probe_records`` says."""
        shapes = probe_records(model, plan, steps, params, bn_state, probe_x)
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def train_epoch(state: TrainState, scalars: Scalars, active: Array, images: Array,
                    labels: Array, shuffle_key: Array,
                    dropout_key: Array) -> tuple[TrainState, EpochMetrics]:
        member_model, member_optimizer = bound(model, optimizer, bind, scalars)

        def loss_fn(params, bn_state, x, y, mask, key):
            logits, new_bn_state = apply_training(member_model, params, bn_state, x,
                                                  mask=mask, key=key)
            per_row = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            count = mask.sum().astype(per_row.dtype)
            loss = jnp.sum(jnp.where(mask, per_row, 0.0)) / count  # padded rows count nowhere
            correct = jnp.sum(mask & (jnp.argmax(logits, axis=-1) == y))
            return loss, (new_bn_state, correct, count)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        # Rows are gathered as flat vectors, then reshaped back (free): in the BN models XLA's
        # CPU gather of (28, 28) rows is slower (measured in benchmarks/results/).
        flat_images = images.reshape(images.shape[0], -1)

        def batch_of(rows):
            x = scale_pixels(flat_images[rows].reshape(rows.shape + images.shape[1:]))
            return x, labels[rows]

        def train_step(carry: tuple[TrainState, Array], batch):
            state, diverged_step = carry
            rows, mask, step_key, step = batch  # rows, mask: (batch_size,)
            x, y = batch_of(rows)
            (loss, (bn_state, correct, count)), grads = grad_fn(
                state.params, state.bn_state, x, y, mask, step_key
            )
            updates, opt_state = member_optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            updating = active
            if guard:
                diverged_step = jnp.where(active & (diverged_step < 0) & ~jnp.isfinite(loss),
                                          step, diverged_step)
                updating = active & (diverged_step < 0)
            new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(updating, new, old),
                                               TrainState(params, bn_state, opt_state), state)
            return (new_state, diverged_step), (loss, loss * count, correct, count)

        def probed(carry, batches, records):
            """Record the state before the first of ``batches`` (a chunk of steps), then
            train the chunk."""
            state, _ = carry
            rows, mask, step_key, step = (b[0] for b in batches)
            x, y = batch_of(rows)

            def loss_of(params):
                return loss_fn(params, state.bn_state, x, y, mask, step_key)[0]

            records = probe_step(records, member_model, member_optimizer, state, step,
                                 step_key, loss_of)
            carry, outputs = jax.lax.scan(train_step, carry, batches)
            return carry, outputs, records

        order = jax.random.permutation(shuffle_key, n_samples)
        order = jnp.pad(order, (0, padded - n_samples)).reshape(steps, batch_size)
        step_keys = jax.random.split(dropout_key, steps)
        batches = (order, row_mask, step_keys, jnp.arange(steps, dtype=jnp.int32))
        carry = (state, jnp.int32(-1))
        records = empty_records(state.params, state.bn_state)
        if not chunk:
            carry, outputs = jax.lax.scan(train_step, carry, batches)
        else:
            # Steps in chunks between the records (the schedule's greatest common divisor),
            # so that nothing but the step itself runs inside the inner scan: a record taken
            # inside it would hold the weights the step updates in place, and XLA would copy
            # them at every step.
            chunks, rest = divmod(steps, chunk)

            def outer(carry_records, chunk_batches):
                carry, records = carry_records
                carry, outputs, records = probed(carry, chunk_batches, records)
                return (carry, records), outputs

            head = jax.tree_util.tree_map(
                lambda b: b[:chunks * chunk].reshape(chunks, chunk, *b.shape[1:]), batches)
            (carry, records), outputs = jax.lax.scan(outer, (carry, records), head)
            outputs = jax.tree_util.tree_map(lambda o: o.reshape(-1, *o.shape[2:]), outputs)
            if rest:
                tail = jax.tree_util.tree_map(lambda b: b[chunks * chunk:], batches)
                carry, tail_outputs, records = probed(carry, tail, records)
                outputs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]),
                                                 outputs, tail_outputs)
        (state, diverged_step), (step_loss, loss_sum, correct, count) = carry, outputs
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
    model: Sequential, chunk_size: int = 5000, *, bind: Bind | None = None,
    batch_statistics: bool = False,
) -> Callable[[tuple[dict, ...], tuple[dict, ...], Scalars, Array, Array],
              tuple[Array, Array]]:
    """Build ``evaluate(params, bn_state, scalars, images, labels) -> (loss, accuracy)``
    (not jitted); ``scalars`` and ``bind`` as in ``make_train_epoch`` (an optimizer is not
    needed: ``bind``'s is ignored). Means over all rows.

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
        member_model = model if bind is None else bind(scalars)[0]
        if batch_statistics:
            member_model = member_model.without_training_noise()
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
            logits, _ = member_model.apply(params, bn_state, scale_pixels(xb),
                                           train=batch_statistics,
                                           mask=vb if batch_statistics else None)
            per_row = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
            correct = jnp.argmax(logits, axis=-1) == yb
            # `where`: a padded row's loss must not enter the sum, even as 0·NaN
            return None, (jnp.sum(jnp.where(vb, per_row, 0.0)), jnp.sum(correct & vb))

        _, (loss_sum, correct) = jax.lax.scan(chunk, None, (x, y, valid))
        return loss_sum.sum() / n, correct.sum() / n

    return evaluate
