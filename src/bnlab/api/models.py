"""Models trained from Python as the notebook trains them: ``fit`` (presets and summaries:
``api.model_info``)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optax

from bnlab.api.model_info import _as_model
from bnlab.config.checks import failing_at
from bnlab.config.experiment import MAX_SEED, MAX_SEEDS
from bnlab.config.optimizer import parse_optimizer
from bnlab.errors import ConfigError
from bnlab.experiments.observer import Observer
from bnlab.nn.model import Sequential
from bnlab.report.progress import ProgressObserver
from bnlab.train.engine import TrainState
from bnlab.train.history import History
from bnlab.train.loop import train_epochs
from bnlab.train.trainer import SeedBatchTrainer


@dataclass(repr=False, kw_only=True)
class Fitted(History):
    """What ``fit`` returns: the ``History`` of its seeds (``.history`` is Keras's dict),
    the model, and the trained state of every seed (``state``: ``TrainState`` of NumPy arrays,
    leaves ``(seeds, …)``)."""

    model: Sequential
    state: TrainState
    compile_seconds: float
    _trainer: SeedBatchTrainer = field(repr=False)
    _trained_state: TrainState = field(repr=False)  # as the trainer holds it (padded seeds)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, float | np.ndarray]:
        """Inference-mode ``{"loss", "accuracy"}`` on ``x``, ``y`` (Keras's ``evaluate``):
        floats for one seed, ``(seeds,)`` arrays for several."""
        loss, accuracy = self._trainer.evaluate_arrays(self._trained_state, x, y)
        if len(self.seeds) == 1:
            return {"loss": float(loss[0]), "accuracy": float(accuracy[0])}
        return {"loss": loss, "accuracy": accuracy}


def fit(model: Sequential | str, x: np.ndarray, y: np.ndarray, *, epochs: int = 1,
        batch_size: int = 32, optimizer: str | optax.GradientTransformation = "sgd",
        learning_rate: float = 1e-3, seed: int = 42, seeds: int = 1,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None, verbose: int = 1,
        compiler_options: Mapping[str, Any] | None = None,
        observer: Observer | None = None) -> Fitted:
    """Train ``model`` (a ``Sequential``, or a preset's name) on ``x`` (images: uint8
    pixels, scaled by 1/255 on the device, or floats used as given), ``y`` (integer labels),
    as Keras's ``model.fit``.

    ``optimizer`` is an optax optimizer, or an optax name built with ``learning_rate`` (the
    default is the notebook's SGD at 1e-3). ``seeds`` is a count, as in an experiment file:
    that many runs train in one program, with seeds ``seed, seed+1, …`` (the result's
    ``.seeds``), each its own initialization, shuffle order and dropout. With
    ``validation_data`` every epoch ends with an inference-mode evaluation on it and, for a
    model with BatchNorm, one with batch statistics (``val_batchstats_loss``,
    ``val_batchstats_accuracy`` in ``per_seed``: the train/inference gap). ``verbose``: 1 a
    live progress bar, 2 a Keras line per epoch, 0 nothing. A seed whose
    loss becomes non-finite is recorded in ``.diverged`` (epoch and step) and its metrics are
    NaN from then on, while the other seeds train on (Keras prints ``nan`` and goes on).
    ``observer`` (``experiments.observer``) hears each compile and epoch instead of the
    progress ``verbose`` draws.
    """
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                             ("seeds", seeds, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"fit: {name} must be an integer ≥ {low}, got {value!r}")
    if seed + seeds - 1 > MAX_SEED:
        raise ConfigError(f"fit: seeds {seed} … {seed + seeds - 1} go past {MAX_SEED:,} "
                          "(seeds are 31-bit, so larger ones would repeat smaller ones)")
    if seeds > MAX_SEEDS:
        raise ConfigError(f"fit: seeds must be at most {MAX_SEEDS:,}, got {seeds:,}")
    batch_size = min(batch_size, len(x))  # as Keras: one batch of every row at most
    model = _as_model(model, "fit")
    if isinstance(optimizer, str):
        optimizer = parse_optimizer({"name": optimizer, "learning_rate": learning_rate},
                                    failing_at("fit", "")).build()
    elif not isinstance(optimizer, optax.GradientTransformation):
        raise ConfigError(f"fit: optimizer must be an optax optimizer (optax.sgd(1e-3)) or its "
                          f"name ('sgd'), got {type(optimizer).__name__}")
    if validation_data is not None and (not isinstance(validation_data, tuple | list)
                                        or len(validation_data) != 2):
        raise ConfigError("fit: validation_data must be a pair (x_val, y_val)")
    evaluation = {} if validation_data is None else {"val": tuple(validation_data)}
    for name, values in (("x", x), *((("validation_data[0]", evaluation["val"][0]),)
                                      if evaluation else ())):
        _refuse_non_finite(name, values)
    trainer = SeedBatchTrainer(model, optimizer, batch_size=batch_size, x_train=x, y_train=y,
                               seeds=range(seed, seed + seeds), evaluation=evaluation,
                               compiler_options=compiler_options)
    state = trainer.init_state()
    history = History(trainer.seeds)
    with (ProgressObserver(verbose=verbose, epochs=epochs) if observer is None
          else contextlib.nullcontext(observer)) as observer:
        compile_seconds = trainer.compile(state, batch_statistics=(
            tuple(evaluation) if model.has_batchnorm else ()))
        observer.compiled(model.name, compile_seconds)
        for record in train_epochs(trainer, state, epochs=epochs,
                                   validation="val" if evaluation else None):
            state = record.state
            history.append(record)
            observer.epoch(model.name, record)
    return Fitted(history.seeds, history.per_seed, history.epoch_seconds, history.diverged,
                  model=model,
                  state=trainer.saved(state), compile_seconds=compile_seconds,
                  _trainer=trainer, _trained_state=state)


def _refuse_non_finite(name: str, values) -> None:
    """A ``ConfigError`` when float inputs hold a NaN or an infinity, which training would
    otherwise report as a divergence of every seed."""
    values = np.asarray(values)
    if values.dtype.kind != "f":
        return
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        raise ConfigError(f"fit: {name} holds NaN or infinite values in {int(bad.sum()):,} "
                          f"rows (the first is row {int(bad.argmax())}); clean or drop them "
                          "first")
