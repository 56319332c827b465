"""The seed-batch trainer: one model, one optimizer and a batch of members, compiled once.

    trainer = SeedBatchTrainer(model, optax.sgd(1e-3), batch_size=32, x_train=x, y_train=y,
                               seeds=(42, 43, 44), evaluation={"val": (x_val, y_val)})
    state = trainer.init_state()
    trainer.compile(state)                       # ahead of time: seconds it took
    state, loss, accuracy, diverged, records = trainer.train_epoch(state, epoch=0)  # (3,)
    val_loss, val_accuracy = trainer.evaluate(state, "val")

It takes built objects, never config types: the runner, ``bnlab.fit`` and the benchmarks
build the model and optimizer their own way and share this class and ``train.loop``. Every
member has the initialization, shuffle order and dropout keys of its seed (``engine.RunKeys``),
exactly as if it ran alone; ``train.seeds.over_seeds`` spreads the members over the devices.

A member is a seed and, for a sweep, its scalar hyperparameters: with ``scalars={name:
(members,) values}`` and ``bind`` (``engine.Bind``: scalars → model, optimizer), members that
differ in learning rate, momentum, BN momentum or epsilon, or dropout rate train in one
program with those values as data. Two members with the same seed share initialization key
and data order, so comparisons between them are paired by seed:

    trainer = SeedBatchTrainer(model, optimizer, ..., seeds=(42, 43, 42, 43),
                               scalars={"optimizer.learning_rate": [0.01, 0.01, 0.1, 0.1]},
                               bind=lambda s: (model, optax.sgd(s["optimizer.learning_rate"])))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnlab.errors import ConfigError
from bnlab.nn.conv import Conv2D
from bnlab.nn.model import Sequential
from bnlab.train.augment import Augmentation
from bnlab.train.batches import check_batching, scale_pixels, steps_per_epoch
from bnlab.train.engine import (
    Bind,
    RunKeys,
    TrainState,
    fixed,
    init_train_states,
    make_evaluate,
    make_train_epoch,
)
from bnlab.train.engine import compiler_options as default_compiler_options
from bnlab.train.probes import ProbePlan
from bnlab.train.recalibrate import RECALIBRATION_STREAM, make_recalibrate
from bnlab.train.seeds import over_seeds, pad_seeds, seeds_to_run

Data = tuple[np.ndarray, np.ndarray]  # images (n, *input_shape), labels (n,)


class SeedBatchTrainer:
    """Compiled epoch and evaluation programs for ``model`` and a batch of ``seeds``.

    Arguments:
        model, optimizer: what to train and how (an ``optax.GradientTransformation``).
        batch_size: rows per step; the ragged last batch is masked (``train.engine``).
        x_train, y_train: ``(n, *model.input_shape)`` images, ``uint8`` pixels (scaled by
            1/255 on the device) or floats (used as they are); ``(n,)`` integer labels in
            ``0..classes−1``.
        seeds: one member per entry (a seed may repeat: members of a sweep), all in one
            program.
        scalars, bind: each member's scalar hyperparameters, ``{name: (members,) floats}``,
            and ``bind`` (``engine.Bind``) building a member's model and optimizer from them
            (traced: the values are data of the one program); ``model`` and ``optimizer``
            still give the shapes, and without ``bind`` every member trains them
            (``engine.fixed``).
        evaluation: named data sets for ``evaluate`` (e.g. ``{"val": …, "test": …}``), placed
            on the devices once.
        compiler_options: XLA options for every program; default ``engine.compiler_options()``.
        probe, probe_images: what every epoch records besides its loss
            (``train.probes.ProbePlan``) and the fixed probe batch ``(rows, *input_shape)``
            its activation statistics are taken on; ``train_epoch`` returns the records.
        augmentation: what each training image goes through (``train.augment``); default
            nothing.

    The state it trains holds the seeds as the programs run them, ``run_seeds =
    seeds_to_run(seeds)``: padded once, by repeating the last seed, to fill every device (5
    seeds on 2 → 6), so that no program pads and un-pads. Metrics come back for ``seeds``
    only; ``saved`` and ``restored`` convert the state for a checkpoint, which holds
    ``seeds`` only.
    """

    def __init__(self, model: Sequential, optimizer: optax.GradientTransformation, *,
                 batch_size: int, x_train: np.ndarray, y_train: np.ndarray,
                 seeds: Sequence[int], evaluation: Mapping[str, Data] | None = None,
                 compiler_options: Mapping[str, bool | int | str] | None = None,
                 scalars: Mapping[str, Sequence[float]] | None = None,
                 bind: Bind | None = None, probe: ProbePlan | None = None,
                 probe_images: np.ndarray | None = None,
                 augmentation: Augmentation | None = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.seeds = tuple(int(seed) for seed in seeds)
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")
        self.run_seeds = seeds_to_run(self.seeds)
        self.keys = RunKeys.for_seeds(self.run_seeds)
        self.bind = fixed(model, optimizer) if bind is None else bind
        self.scalars = {}
        for name, values in (scalars or {}).items():
            values = np.asarray(values, np.float32)
            if values.shape != (len(self.seeds),):
                raise ConfigError(f"scalars[{name!r}]: give one value per member "
                                  f"({len(self.seeds)}), got shape {values.shape}")
            self.scalars[name] = pad_seeds(jnp.asarray(values), len(self.run_seeds))
        if self.scalars and bind is None:
            raise ConfigError("scalars need bind, the function that builds a member's model "
                              "and optimizer from them")
        self.classes = model.output_shapes[-1][-1]
        x_train, y_train = self.checked("training data", x_train, y_train)
        self.x_train, self.y_train = jnp.asarray(x_train), jnp.asarray(y_train)
        self.n_train = len(y_train)
        self.batch_size = batch_size
        self.steps = steps_per_epoch(self.n_train, batch_size)
        self.evaluation = {name: self.checked(name, *data)
                           for name, data in (evaluation or {}).items()}
        self.compiler_options = dict(default_compiler_options() if compiler_options is None
                                     else compiler_options)
        self.probe_plan = probe or ProbePlan(every=0)
        if probe_images is not None:
            probe_images = self.checked("probe images", probe_images,
                                        np.zeros(len(probe_images), np.int32))[0]
        check_batching(self.n_train, batch_size, model)
        self.augmentation = augmentation or Augmentation()
        if self.augmentation.active:
            self.augmentation.check_images(model.input_shape)
        epoch = make_train_epoch(self.bind, self.n_train, batch_size, probe=self.probe_plan,
                                 probe_images=probe_images, augmentation=self.augmentation)
        self.convolutional = any(isinstance(layer, Conv2D) for layer in model.layers)
        self._epoch = jax.jit(self.over_seeds(epoch, (0, 0, 0, None, None, 0, 0)),
                              donate_argnums=0)
        self._evaluate = {
            statistics: jax.jit(self.over_seeds(
                make_evaluate(self.bind, batch_size if statistics else 5000,
                              batch_statistics=statistics), (0, 0, 0, None, None)))
            for statistics in (False, True)}
        self._evaluate_compiled: dict[tuple[int, bool], Callable] = {}
        self._placed: dict[str, tuple[jax.Array, jax.Array]] = {}
        self._probe: Callable | None = None
        self._recalibrate: dict[int, Callable] = {}
        self.compile_seconds = 0.0

    def checked(self, name: str, images: np.ndarray, labels: np.ndarray) -> Data:
        """``(images, labels as int32)`` after checking they fit the model; a mismatch is a
        one-line ``ConfigError`` naming ``name``."""
        images, labels = np.asarray(images), np.asarray(labels)
        if images.shape[1:] != self.model.input_shape:
            raise ConfigError(f"{name}: images of shape {images.shape[1:]} do not fit the "
                              f"model's input shape {self.model.input_shape}")
        if labels.shape != images.shape[:1]:
            raise ConfigError(f"{name}: {len(images):,} images but labels of shape "
                              f"{labels.shape}; give one label per image")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(f"{name}: labels must be integers, got {labels.dtype}")
        if images.dtype != np.uint8 and images.dtype.kind != "f":
            raise ConfigError(f"{name}: images must be uint8 pixels (scaled by 1/255) or floats "
                              f"(used as they are), got {images.dtype}; e.g. "
                              "images.astype(np.uint8)")
        if len(labels) == 0:
            raise ConfigError(f"{name}: no rows")
        if labels.min() < 0 or labels.max() >= self.classes:
            raise ConfigError(f"{name}: labels must be in 0..{self.classes - 1} (the model has "
                              f"{self.classes} outputs), got {labels.min()}..{labels.max()}")
        return images, labels.astype(np.int32)

    def init_state(self) -> TrainState:
        """Member-stacked initial state: leaves have a leading ``(run seeds,)`` axis."""
        return init_train_states(self.bind, self.keys, self.scalars)

    def saved(self, state: TrainState) -> TrainState:
        """``state`` as NumPy arrays of ``seeds`` only (the padding dropped), to save."""
        return jax.tree_util.tree_map(lambda a: np.asarray(a)[: len(self.seeds)], state)

    def restored(self, state: TrainState) -> TrainState:
        """A ``saved`` state padded again as ``init_state`` pads (the last seed repeated)."""
        return pad_seeds(state, len(self.run_seeds))

    def epoch_keys(self, epoch: int) -> tuple[jax.Array, jax.Array]:
        """``(shuffle, dropout)`` keys of a 0-based epoch, each ``(run seeds,)``."""
        return self.keys.epoch(epoch)

    def compile(self, state: TrainState, *, training: bool = True,
                batch_statistics: Sequence[str] = ()) -> float:
        """Compile the epoch (unless not ``training``: a finished state only evaluated) and
        the evaluation of every ``evaluation`` set ahead of time (and the batch-statistics
        evaluation of those named in ``batch_statistics``) and place their data on the
        devices; returns the seconds it took."""
        start = time.perf_counter()
        if training:
            shuffle, dropout = self.epoch_keys(0)
            self._epoch = self._epoch.lower(state, self.scalars, self._active(None),
                                            self.x_train, self.y_train, shuffle,
                                            dropout).compile(self.compiler_options)
            # The training data where the program wants them (on every device the seeds
            # spread over), once, rather than a copy per epoch.
            _, _, _, images, labels, _, _ = self._epoch.input_shardings[0]
            self.x_train = jax.device_put(self.x_train, images)
            self.y_train = jax.device_put(self.y_train, labels)
        for name, (images, labels) in self.evaluation.items():
            for statistics in (False, True):
                if statistics and name not in batch_statistics:
                    continue
                compiled = self._evaluate_compiled.get((len(labels), statistics))
                if compiled is None:
                    compiled = self._evaluate[statistics].lower(
                        state.params, state.bn_state, self.scalars, images, labels
                    ).compile(self.compiler_options)
                    self._evaluate_compiled[len(labels), statistics] = compiled
                if not statistics:
                    _, _, _, at_images, at_labels = compiled.input_shardings[0]
                    self._placed[name] = (jax.device_put(images, at_images),
                                          jax.device_put(labels, at_labels))
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def epoch_program_text(self) -> str:
        """The compiled epoch's optimized HLO (after ``compile``), for profiling
        (``benchmarks/profile_epoch.py``)."""
        if not hasattr(self._epoch, "as_text"):
            raise ConfigError("compile the trainer first (trainer.compile(state))")
        return self._epoch.as_text()

    def train_epoch(self, state: TrainState, epoch: int, active: Sequence[bool] | None = None
                    ) -> tuple[TrainState, np.ndarray, np.ndarray, np.ndarray, dict]:
        """One epoch (0-based ``epoch``) → ``(state, loss, accuracy, diverged_step,
        records)``, each ``(seeds, …)``; ``diverged_step`` is the 0-based step whose loss was
        the first non-finite one, ``-1`` where none was (``engine.EpochMetrics``); a
        diverged member stops updating there. ``records``: what the ``probe`` plan recorded
        (``probes.probe_records``), ``{}`` without one. ``active: (seeds,)`` bool (default
        all): the members that train; the others' state comes back unchanged and their
        metrics mean nothing. ``state`` is donated: use the returned one."""
        shuffle, dropout = self.epoch_keys(epoch)
        state, metrics = self._epoch(state, self.scalars, self._active(active), self.x_train,
                                     self.y_train, shuffle, dropout)
        return (state, self._own(metrics.loss), self._own(metrics.accuracy),
                self._own(metrics.diverged_step),
                jax.tree_util.tree_map(self._own, metrics.probes))

    def evaluate(self, state: TrainState, name: str, *, batch_statistics: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Inference-mode ``(loss (seeds,), accuracy (seeds,))`` on the ``evaluation`` set
        ``name``; with ``batch_statistics``, normalized as in training, batch by batch of
        the training batch size (``engine.make_evaluate``)."""
        if name not in self.evaluation:
            raise ConfigError(f"no evaluation data named {name!r}; the trainer has "
                              f"{', '.join(self.evaluation) or 'none'}")
        images, labels = self._placed.get(name) or self.evaluation[name]
        evaluate = self._evaluate_compiled.get((len(labels), batch_statistics),
                                               self._evaluate[batch_statistics])
        loss, accuracy = evaluate(state.params, state.bn_state, self.scalars, images, labels)
        return self._own(loss), self._own(accuracy)

    def evaluate_arrays(self, state: TrainState, images: np.ndarray,
                        labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like ``evaluate`` on any ``images``, ``labels`` (compiled for their shape)."""
        images, labels = self.checked("evaluation data", images, labels)
        loss, accuracy = self._evaluate[False](state.params, state.bn_state, self.scalars, images,
                                        labels)
        return self._own(loss), self._own(accuracy)

    def recalibrate(self, state: TrainState, batches: int) -> TrainState:
        """``state`` with every BatchNorm layer's moving statistics recomputed over
        ``batches`` full training batches run through the trained weights
        (``train.recalibrate``: fvcore's PreciseBN); the batches are the same for a seed
        every time. ``params`` and the optimizer state are ``state``'s own."""
        full = self.n_train // self.batch_size
        if isinstance(batches, bool) or not isinstance(batches, int) or not 1 <= batches <= full:
            raise ConfigError(f"recalibration batches must be a whole number in 1..{full:,} "
                              f"(full batches of {self.batch_size} in {self.n_train:,} training "
                              f"rows), got {batches!r}")
        program = self._recalibrate.get(batches)
        if program is None:
            program = jax.jit(self.over_seeds(
                make_recalibrate(self.bind, self.n_train, self.batch_size, batches),
                (0, 0, 0, None, 0)))
            self._recalibrate[batches] = program
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(self.keys.shuffle,
                                                               RECALIBRATION_STREAM)
        bn_state = program(state.params, state.bn_state, self.scalars, self.x_train, keys)
        return state._replace(bn_state=bn_state)

    def probe(self, state: TrainState, images: jax.Array,
              wanted: Callable[[str], bool] = lambda name: True) -> dict[str, np.ndarray]:
        """Inference-mode intermediates on a fixed probe batch ``images: (rows, …)``, those
        whose name ``wanted`` takes: ``{layer_name or "<layer>/pre_activation": (seeds, rows,
        values)}``, an image layer's (height, width, channels) flattened into its values.
        The first call fixes ``wanted`` (its program is kept)."""
        if self._probe is None:
            def intermediates(params, bn_state, scalars, x):
                model = self.bind(scalars)[0]
                outputs = model.apply_with_intermediates(params, bn_state, scale_pixels(x),
                                                         train=False)[2]
                return {name: value.reshape(value.shape[0], -1)
                        for name, value in outputs.items() if wanted(name)}
            self._probe = jax.jit(self.over_seeds(intermediates, (0, 0, 0, None)))
        outputs = self._probe(state.params, state.bn_state, self.scalars, images)
        return {name: self._own(values) for name, values in outputs.items()}

    def over_seeds(self, fn: Callable, in_axes: tuple[int | None, ...]) -> Callable:
        """``seeds.over_seeds`` of ``fn`` over this trainer's (padded) seeds."""
        return over_seeds(fn, in_axes, len(self.run_seeds), convolutional=self.convolutional)

    def _active(self, active: Sequence[bool] | None) -> jax.Array:
        """``active`` (default: every member) padded as the members are."""
        mask = np.ones(len(self.seeds), bool) if active is None else np.asarray(active, bool)
        if mask.shape != (len(self.seeds),):
            raise ConfigError(f"active: give one flag per member ({len(self.seeds)}), got "
                              f"shape {mask.shape}")
        return pad_seeds(jnp.asarray(mask), len(self.run_seeds))

    def _own(self, values: jax.Array) -> np.ndarray:
        """``(run seeds, …)`` → ``(seeds, …)`` on the host: the padding seeds dropped, once
        the computation is done (``wait_interruptibly``)."""
        return np.asarray(wait_interruptibly(values))[: len(self.seeds)]


def wait_interruptibly(values: jax.Array, poll_seconds: float = 0.01) -> jax.Array:
    """``values`` once computed, waited for in Python: a compiled epoch runs for seconds in
    XLA's threads, and reading its result directly would hold this thread in C++ until the
    epoch ends, where no signal handler runs. Polling keeps Ctrl-C and SIGTERM prompt: the
    ``KeyboardInterrupt`` is raised here at once, the epoch in flight is abandoned (the run
    resumes from its last saved epoch)."""
    is_ready = getattr(values, "is_ready", None)  # a NumPy array is ready
    while is_ready is not None and not is_ready():
        time.sleep(poll_seconds)
    return values
