"""When, inside an epoch's ``lax.scan``, a ``ProbePlan`` records (``train.probes`` says what).

The epoch's steps are scanned in chunks of ``gcd(every, measures_every)`` steps: before each
chunk the state is recorded where the plan's schedule says (a ``lax.cond`` on the step),
then the chunk's steps run in an inner scan that holds nothing but the step itself. A record
taken inside the inner scan would hold the weights the step updates in place, and XLA would
copy them at every step. Without a plan the epoch is one plain scan.

    schedule = ProbeSchedule(plan, steps, probe_images)
    carry, outputs, records = schedule.scan(step, carry, batches, model, optimizer, loss_of)

``records`` has the shapes ``probes.probe_records`` gives (``{}`` without a plan).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from bnlab.errors import ConfigError
from bnlab.nn.model import Sequential
from bnlab.train.batches import scale_pixels
from bnlab.train.probes import (
    ProbePlan,
    internal_covariate_shift,
    kernel_layers,
    landscape,
    probe_records,
    record_activations,
    tree_norm,
    written,
)

Array = jax.Array
# (batch, state) → the loss of that batch as a function of the parameters, with the state's
# BN statistics: the loss of the step about to be taken
LossOf = Callable[[tuple, object], Callable[[tuple[dict, ...]], Array]]


class ProbeSchedule:
    """The records of ``plan`` over an epoch of ``steps`` steps; the activation statistics
    are taken on ``probe_images: (rows, …)`` (uint8 pixels or floats)."""

    def __init__(self, plan: ProbePlan, steps: int, probe_images: Array | None) -> None:
        if plan.every and probe_images is None:
            raise ConfigError("a probe plan with activation statistics needs probe_images")
        self.plan = plan
        self.steps = steps
        self.probe_x = None if not plan.every else scale_pixels(jnp.asarray(probe_images))
        self.chunk = math.gcd(plan.every, plan.measures_every)  # steps between records; 0: none

    def scan(self, step: Callable, carry, batches, model: Sequential,
             optimizer: optax.GradientTransformation, loss_of: LossOf):
        """``step`` (``(carry, batch) → (carry, outputs)``, carry ``(state, …)``) over
        ``batches`` (leaves ``(steps, …)``, each batch ``(rows, mask, key, step)``) with the
        records taken before the chunks: ``(carry, outputs, records)``; ``loss_of(batch,
        state)`` is the step's loss as a function of the parameters."""
        state = carry[0]
        records = self.empty(model, state.params, state.bn_state)
        if not self.chunk:
            carry, outputs = jax.lax.scan(step, carry, batches)
            return carry, outputs, records

        def probed(carry, chunk_batches, records):
            """Record the state before the first of ``chunk_batches``, then train them."""
            first = jax.tree_util.tree_map(lambda b: b[0], chunk_batches)
            _, _, step_key, step_number = first
            records = self.record(records, model, optimizer, carry[0], step_number, step_key,
                                  loss_of(first, carry[0]))
            carry, outputs = jax.lax.scan(step, carry, chunk_batches)
            return carry, outputs, records

        def outer(carry_records, chunk_batches):
            carry, records = carry_records
            carry, outputs, records = probed(carry, chunk_batches, records)
            return (carry, records), outputs

        chunks, rest = divmod(self.steps, self.chunk)
        head = jax.tree_util.tree_map(
            lambda b: b[:chunks * self.chunk].reshape(chunks, self.chunk, *b.shape[1:]),
            batches)
        (carry, records), outputs = jax.lax.scan(outer, (carry, records), head)
        outputs = jax.tree_util.tree_map(lambda o: o.reshape(-1, *o.shape[2:]), outputs)
        if rest:
            tail = jax.tree_util.tree_map(lambda b: b[chunks * self.chunk:], batches)
            carry, tail_outputs, records = probed(carry, tail, records)
            outputs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), outputs,
                                             tail_outputs)
        return carry, outputs, records

    def empty(self, model: Sequential, params, bn_state) -> dict:
        """Zeroed buffers for an epoch's records, shaped as ``probe_records`` says."""
        shapes = probe_records(model, self.plan, self.steps, params, bn_state, self.probe_x)
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def record(self, records: dict, model: Sequential, optimizer: optax.GradientTransformation,
               state, step: Array, step_key: Array,
               loss_of: Callable[[tuple[dict, ...]], Array]) -> dict:
        """``records`` with the activation statistics and measures of ``state`` (the state
        before step ``step``) written where the plan's schedule says."""
        plan, records = self.plan, dict(records)
        if plan.every:
            def activations(buffer):
                stats = record_activations(model, state.params, state.bn_state, self.probe_x,
                                           units=plan.units,
                                           key=jax.random.fold_in(step_key, 1))
                return written(buffer, step // plan.every, stats)

            records["activations"] = jax.lax.cond(step % plan.every == 0, activations,
                                                  lambda buffer: buffer, records["activations"])
        if plan.measures_every:
            def measures(buffer):
                return written(buffer, step // plan.measures_every,
                               measured(model, optimizer, state, loss_of, plan.step_scales))

            records["measures"] = jax.lax.cond(step % plan.measures_every == 0, measures,
                                               lambda buffer: buffer, records["measures"])
        return records


def measured(model: Sequential, optimizer: optax.GradientTransformation, state,
             loss_of: Callable[[tuple[dict, ...]], Array],
             step_scales: tuple[float, ...]) -> dict[str, Array]:
    """Santurkar et al.'s measures of ``state`` on the step's batch (``train.probes``)."""
    params = state.params
    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, _ = optimizer.update(grads, state.opt_state, params)
    shift, cosine = internal_covariate_shift(loss_of, params,
                                             optax.apply_updates(params, updates),
                                             kernel_layers(model))
    grad_norm = tree_norm(grads)
    # Step sizes as multiples of the step taken along the gradient: for SGD, ‖Δ‖/‖g‖ is the
    # learning rate.
    taken = tree_norm(updates) / jnp.maximum(grad_norm, jnp.finfo(jnp.float32).tiny)
    sizes = taken * jnp.asarray(step_scales, jnp.float32)
    losses, changes = landscape(loss_of, params, grads, sizes)
    return {"ics": shift, "ics_cosine": cosine, "loss": loss, "grad_norm": grad_norm,
            "step_sizes": sizes, "loss_along": losses, "grad_change": changes}
