"""The notebook's models and their summaries from Python, without training (so ``bnlab
summary`` imports no optimizer and no trainer)."""

from __future__ import annotations

from pathlib import Path

from bnlab.config.experiment import ExperimentConfig
from bnlab.config.files import load_experiment
from bnlab.errors import ConfigError
from bnlab.nn.model import Sequential
from bnlab.nn.summary import ModelSummary, summarize
from bnlab.nn.zoo import get_model


def model(name: str) -> Sequential:
    """The notebook's model ``name``: ``baseline``, ``bn_after`` or ``bn_before``
    (``bnlab.nn.zoo``; ``docs/reference.md`` lists their layers)."""
    if not isinstance(name, str):
        raise ConfigError(f"model: give a preset name (baseline, bn_after, bn_before), got "
                          f"{type(name).__name__}")
    return get_model(name)


def _as_model(value: Sequential | str, where: str) -> Sequential:
    """A ``Sequential``, or the preset of that name; anything else is a ``ConfigError``."""
    if isinstance(value, Sequential):
        return value
    if isinstance(value, str):
        return get_model(value)
    raise ConfigError(f"{where}: give a bnlab.Sequential or a preset name (baseline, bn_after, "
                      f"bn_before), got {type(value).__name__}")


def summary(model: Sequential | str) -> ModelSummary:
    """The summary of ``model`` (or of the preset of that name) as data: rows, Keras and
    PyTorch counts, BatchNorm variables with their trainable flags. It prints as Keras's
    table and shows as HTML in Jupyter."""
    return summarize(_as_model(model, "summary"))


def summaries(experiment: str | Path | ExperimentConfig) -> dict[str, ModelSummary]:
    """The summary of every variant of an experiment (a file, a preset's name such as
    ``"seed"``, or an ``ExperimentConfig``), by variant name, as ``bnlab summary FILE``."""
    config = (experiment if isinstance(experiment, ExperimentConfig)
              else load_experiment(experiment))
    return {variant.name: summarize(variant.build(config.input_shape()))
            for variant in config.variants}
