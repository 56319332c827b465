"""What a compiled epoch records about the network besides its loss: activation statistics
(Ioffe & Szegedy 2015, Figure 1) and Santurkar et al.'s measures of internal covariate shift
and of the loss landscape (2018, "How Does Batch Normalization Help Optimization?").

All of it runs inside the epoch's ``lax.scan`` (``engine.make_train_epoch(probe=…)``) on a
schedule of steps, so nothing returns to the host between steps; each function here is pure
and works on one member (vmapped over members like the step itself).

**Activation statistics** — every ``ProbePlan.every`` steps, before that step's update, the
network runs in training mode (BatchNorm with the probe batch's own statistics, moving
statistics untouched, dropout as in training) on a fixed probe batch ``x: (rows, …)``. For
the input of every hidden nonlinearity (``activation_inputs``: a Dense or Conv2D layer's
pre-activation when the layer has an activation of its own, else the input of the Activation
or LeakyReLU layer that follows; the output layer's softmax is left out), ``activation_statistics``
keeps, over all ``rows × units`` values, the 15th, 50th and 85th percentiles, the minimum,
maximum, mean and standard deviation (``STATISTICS``), and for each of the first
``ProbePlan.units`` units its own 15th, 50th and 85th percentiles over the rows — the bands
of the paper's Figure 1 (b, c). A conv layer's unit is a channel, over every pixel of every
row (``by_unit``). Percentiles interpolate linearly, as ``numpy.percentile``.

**Santurkar et al.'s measures** — every ``ProbePlan.measures_every`` steps, on that step's own
batch ``(x, y)`` and loss ``L`` (training mode), with ``θ`` the parameters before the step, ``g
= ∇L(θ)`` and ``Δ`` the optimizer's update the step applies:

- internal covariate shift of Dense or Conv2D layer *i* (their Definition 2.1): with
  ``G = ∇_{W_i} L(θ)`` and ``G' = ∇_{W_i} L(θ′)``, where ``θ′`` has the layers below *i*
  updated (``θ + Δ``) and layer *i* and those above as in ``θ``, ``ICS_i = ‖G − G'‖₂``
  and ``cos∠(G, G')`` (``internal_covariate_shift``);
- along the gradient, for each step size ``η`` of the grid (``landscape``): the loss
  ``L(θ − ηg)`` (its range over the grid is their "loss variation", Fig. 4a) and the
  gradient change ``‖∇L(θ) − ∇L(θ − ηg)‖₂`` (their "gradient predictiveness", Fig. 4b);
  the effective β-smoothness is ``max_η ‖∇L(θ) − ∇L(θ − ηg)‖₂ / ‖ηg‖₂`` (Fig. 4c), computed
  from these by ``beta_smoothness``. The grid is ``ProbePlan.step_scales`` times the member's
  learning rate.

This is not the envelope of training losses over learning rates that some course scripts plot
and call the landscape: every point here is the same batch's loss at one state moved along
its own gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bnlab.errors import ConfigError
from bnlab.lazy import Deferred
from bnlab.nn.layers import Activation, LeakyReLU
from bnlab.nn.model import WEIGHTED, Sequential

if TYPE_CHECKING:
    from jax import Array

jax = Deferred("jax")
jnp = Deferred("jax.numpy")
PERCENTILES = (15.0, 50.0, 85.0)
STATISTICS = ("p15", "p50", "p85", "min", "max", "mean", "std")
UNIT_STATISTICS = ("p15", "p50", "p85")


@dataclass(frozen=True)
class ProbePlan:
    """What an epoch records and when.

    every: steps between activation statistics (0: none); rows: the probe batch, the first
    ``rows`` validation images; units: per layer, the first ``units`` units whose own
    percentiles are kept; measures_every: steps between Santurkar et al.'s measures (0:
    none); step_scales: their step sizes along the gradient, as multiples of the member's
    learning rate; test_each_epoch: evaluate the test set after every epoch (the paper's
    Figure 1a plots test accuracy against steps), not only after the last.
    """

    every: int = 500
    rows: int = 256
    units: int = 4
    measures_every: int = 0
    step_scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    test_each_epoch: bool = False

    def __post_init__(self) -> None:
        for name in ("every", "rows", "units", "measures_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"probe {name} must be a whole number ≥ 0, got {value!r}")
        if self.every and self.rows < 2:
            raise ConfigError(f"probe rows must be ≥ 2 (BatchNorm needs two rows in training "
                              f"mode), got {self.rows}")
        scales = tuple(self.step_scales)
        if not scales or not all(isinstance(s, int | float) and not isinstance(s, bool)
                                 and 0 < s < float("inf") for s in scales):
            raise ConfigError(f"probe step_scales must be positive finite numbers, got "
                              f"{list(scales)}")
        object.__setattr__(self, "step_scales", tuple(float(s) for s in scales))

    def probe_steps(self, steps: int) -> int:
        """How many activation records an epoch of ``steps`` steps makes (steps 0, every, …)."""
        return -(-steps // self.every) if self.every else 0

    def measure_steps(self, steps: int) -> int:
        """How many measure records an epoch of ``steps`` steps makes."""
        return -(-steps // self.measures_every) if self.measures_every else 0


def activation_inputs(model: Sequential) -> tuple[tuple[str, str], ...]:
    """``(record name, intermediate name)`` of every hidden nonlinearity's input, in layer
    order: ``("dense/pre_activation", "dense/pre_activation")`` for a Dense layer with its
    own activation, ``("leaky_re_lu/input", "dense")`` for an Activation or LeakyReLU layer
    (its input is the previous layer's output, as ``Sequential.apply_with_intermediates``
    names it). The output layer is left out."""
    names = model.layer_names
    found = []
    for i, layer in enumerate(model.layers[:-1]):
        if isinstance(layer, WEIGHTED) and layer.activation != "linear":
            found.append((f"{names[i]}/pre_activation", f"{names[i]}/pre_activation"))
        elif isinstance(layer, Activation | LeakyReLU) and i > 0:
            found.append((f"{names[i]}/input", names[i - 1]))
    return tuple(found)


def _sortable(x: Array) -> Array:
    """float32 → int32 keys in the same order (IEEE 754: flip the magnitude bits of
    negatives), so that order statistics can be found by counting."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def percentiles(values: Array, q: Sequence[float] = PERCENTILES) -> Array:
    """``numpy.percentile(values, q)`` (linear interpolation between the order statistics
    at ``q/100 · (n − 1)``) of all of ``values``, exactly, without sorting: each floor order
    statistic is found by bisection on the values' int32 keys (32 rounds of counting
    ``keys ≤ mid``, all percentiles at once), the next one as the least value above it (or
    the same, for a tie). XLA's CPU sort of 76,800 values (a 256-row probe of a 300-unit
    layer) takes about 15 ms; this takes about 1.5."""
    flat = values.reshape(-1).astype(jnp.float32)
    keys = _sortable(flat)
    position = jnp.asarray(q, jnp.float32) / 100.0 * (flat.size - 1)
    lower = jnp.floor(position).astype(jnp.int32)

    def halve(_, bounds):
        low, high = bounds
        middle = (low >> 1) + (high >> 1) + (low & high & 1)  # no int32 overflow
        above = jnp.sum(keys[None, :] <= middle[:, None], axis=1) > lower
        return jnp.where(above, low, middle + 1), jnp.where(above, middle, high)

    start = (jnp.full(lower.shape, jnp.iinfo(jnp.int32).min, jnp.int32),
             jnp.full(lower.shape, jnp.iinfo(jnp.int32).max, jnp.int32))
    key, _ = jax.lax.fori_loop(0, 32, halve, start)
    floor_value = jax.lax.bitcast_convert_type(
        jnp.where(key < 0, key ^ jnp.int32(0x7FFFFFFF), key), jnp.float32)
    at_or_below = jnp.sum(keys[None, :] <= key[:, None], axis=1)
    next_value = jnp.where(at_or_below > lower + 1, floor_value,
                           jnp.min(jnp.where(keys[None, :] > key[:, None], flat[None, :],
                                             jnp.inf), axis=1))
    next_value = jnp.where(lower + 1 < flat.size, next_value, floor_value)
    return floor_value + (position - lower) * (next_value - floor_value)


def activation_statistics(values: Array, units: int) -> tuple[Array, Array]:
    """``values: (rows, features)`` → ``(layer: (7,), per_unit: (units, 3))``: ``STATISTICS``
    over every value, and ``UNIT_STATISTICS`` of each of the first ``units`` features over
    the rows (``units`` larger than ``features`` is cut to it)."""
    flat = values.reshape(-1)
    pooled = percentiles(flat)
    layer = jnp.concatenate([pooled, jnp.stack([flat.min(), flat.max(), flat.mean(),
                                                 flat.std()])])
    tracked = values[:, :units]
    per_unit = jnp.percentile(tracked, jnp.asarray(PERCENTILES), axis=0, method="linear").T
    return layer, per_unit


def record_activations(model: Sequential, params: tuple[dict, ...], bn_state: tuple[dict, ...],
                       x: Array, *, units: int, key: Array | None = None
                       ) -> dict[str, tuple[Array, Array]]:
    """``{record name: activation_statistics(...)}`` of ``model`` in training mode on the
    probe batch ``x: (rows, …)`` (float inputs; the moving statistics it would update are
    dropped); ``key`` drives Dropout as in training."""
    _, _, outputs = model.apply_with_intermediates(params, bn_state, x, train=True, key=key)
    return {name: activation_statistics(by_unit(outputs[source]), units)
            for name, source in activation_inputs(model)}


def by_unit(values: Array) -> Array:
    """A layer's values as ``(samples, units)``: ``(rows, features)`` as they are, images
    ``(rows, H, W, C)`` as ``(rows·H·W, C)`` — a conv layer's unit is a channel, and its
    samples are every pixel of every image (what BatchNorm normalizes it over)."""
    return values.reshape(-1, values.shape[-1])


def kernel_layers(model: Sequential) -> tuple[int, ...]:
    """Indices of the layers whose kernels ICS is measured for: every Dense and Conv2D
    layer."""
    return tuple(i for i, layer in enumerate(model.layers) if isinstance(layer, WEIGHTED))


def internal_covariate_shift(loss: Callable[[tuple[dict, ...]], Array],
                             params: tuple[dict, ...], updated: tuple[dict, ...],
                             layers: Sequence[int]) -> tuple[Array, Array]:
    """Santurkar et al.'s ICS of each layer in ``layers`` (indices of layers with a
    ``"kernel"``): ``(‖G − G'‖₂: (len(layers),), cos∠(G, G'): (len(layers),))`` with ``G =
    ∇_kernel loss(params)`` and ``G' = ∇_kernel loss(θ′)``, ``θ′`` taking ``updated``'s
    values for the layers below and ``params``' for the rest. The ``len(layers)``
    gradients at the ``θ′`` are one vmapped evaluation."""
    grad = jax.grad(loss)
    before = grad(params)
    # A layer with no parameter below it has no shift by definition (G′ = G): exact zeros,
    # rather than the rounding difference of a second, vmapped evaluation.
    moved = [bool(jax.tree_util.tree_leaves(params[:i])) for i in layers]
    shifted = jax.vmap(lambda below: grad(tuple(
        jax.tree_util.tree_map(lambda new, old, b=below[j]: jnp.where(b, new, old), u, p)
        for j, (u, p) in enumerate(zip(updated, params, strict=True)))))(
        jnp.asarray([[j < i for j in range(len(params))] for i in layers]))
    changes, cosines = [], []
    for k, i in enumerate(layers):
        if not moved[k]:
            changes.append(jnp.zeros((), before[i]["kernel"].dtype))
            cosines.append(jnp.ones((), before[i]["kernel"].dtype))
            continue
        g, g_shifted = before[i]["kernel"], shifted[i]["kernel"][k]
        changes.append(jnp.linalg.norm(g - g_shifted))
        cosines.append(jnp.sum(g * g_shifted)
                       / (jnp.linalg.norm(g) * jnp.linalg.norm(g_shifted)))
    return jnp.stack(changes), jnp.stack(cosines)


def tree_norm(tree) -> Array:
    """The Euclidean norm of all of ``tree``'s leaves together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))


def landscape(loss: Callable[[tuple[dict, ...]], Array], params: tuple[dict, ...],
              gradient: tuple[dict, ...], step_sizes: Array) -> tuple[Array, Array]:
    """Along the gradient ``g`` (``gradient``, ``∇loss(params)``), for each ``η`` of
    ``step_sizes: (sizes,)``: ``(loss(θ − ηg): (sizes,), ‖g − ∇loss(θ − ηg)‖₂: (sizes,))``,
    one vmapped evaluation over the sizes."""
    def at(eta):
        moved = jax.tree_util.tree_map(lambda p, g: p - eta * g, params, gradient)
        value, moved_gradient = jax.value_and_grad(loss)(moved)
        change = tree_norm(jax.tree_util.tree_map(jnp.subtract, gradient, moved_gradient))
        return value, change

    return jax.vmap(at)(step_sizes)


def beta_smoothness(gradient_change: Array, gradient_norm: Array,
                    step_sizes: Array) -> Array:
    """Effective β-smoothness: ``max_η ‖∇L(θ) − ∇L(θ − ηg)‖₂ / ‖ηg‖₂`` over the last axis
    (the step sizes); ``gradient_change: (…, sizes)``, ``gradient_norm: (…)`` = ‖g‖₂,
    ``step_sizes: (…, sizes)`` or ``(sizes,)``."""
    return jnp.max(gradient_change / (step_sizes * gradient_norm[..., None]), axis=-1)


def probe_records(model: Sequential, plan: ProbePlan, steps: int, params, bn_state,
                  probe_x: Array | None) -> dict:
    """The shapes (``jax.ShapeDtypeStruct``) of one member's epoch records under ``plan``:
    ``{"activations": {name: (layer: (n, 7), per_unit: (n, units, 3))}}`` with ``n =
    plan.probe_steps(steps)`` records at steps 0, every, …; ``{"measures": {"ics",
    "ics_cosine": (m, dense layers), "loss", "grad_norm": (m,), "step_sizes", "loss_along",
    "grad_change": (m, sizes)}}`` with ``m = plan.measure_steps(steps)``; each only when the
    plan asks for it (``train.probes`` defines every quantity)."""
    def stacked(tree, n):
        return jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct((n, *s.shape), s.dtype), tree)

    records = {}
    if plan.every:
        one = jax.eval_shape(lambda p, s: record_activations(
            model, p, s, probe_x, units=plan.units, key=jax.random.key(0)), params, bn_state)
        records["activations"] = stacked(one, plan.probe_steps(steps))
    if plan.measures_every:
        layers, sizes = len(kernel_layers(model)), len(plan.step_scales)

        def f32(*shape):
            return jax.ShapeDtypeStruct(shape, jnp.float32)

        one = {"ics": f32(layers), "ics_cosine": f32(layers), "loss": f32(),
               "grad_norm": f32(), "step_sizes": f32(sizes), "loss_along": f32(sizes),
               "grad_change": f32(sizes)}
        records["measures"] = stacked(one, plan.measure_steps(steps))
    return records


def written(buffer, index: Array, values):
    """``buffer`` (leaves ``(records, …)``) with record ``index`` set to ``values``."""
    return jax.tree_util.tree_map(lambda b, v: b.at[index].set(v.astype(b.dtype)), buffer,
                                  values)
