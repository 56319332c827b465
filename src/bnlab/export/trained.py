"""One trained member of a stored run, as the export commands take it: its model, parameters
and BN statistics, read from the variant's checkpoint (digest checked) or its
``recalibrated`` one (``experiments.recalibrate``).

Only a finished model leaves a run: a run that a live process trains or recalibrates now
(its lock is held), a variant that has not trained all its epochs, and a seed that diverged
are refused, each with one line that says what to do instead. What is exported computes
inference (BatchNorm with its population statistics); there is no training-mode export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from bnlab.config.experiment import ExperimentConfig
from bnlab.errors import ConfigError
from bnlab.nn.model import Sequential
from bnlab.store.lock import training_holder
from bnlab.store.record import VariantRecord, read_record
from bnlab.train.checkpoint import read_checkpoint, restore_state
from bnlab.train.engine import RunKeys, fixed, init_train_states


@dataclass(frozen=True)
class TrainedMember:
    """``model`` with one seed's ``params`` and ``bn_state`` (no seed axis), from ``variant``
    of a run after ``epoch`` epochs."""

    variant: str
    seed: int
    epoch: int
    model: Sequential
    params: tuple[dict, ...] = field(repr=False)
    bn_state: tuple[dict, ...] = field(repr=False)


def trained_member(run_dir: Path, config: ExperimentConfig, variant: str | None = None,
                   seed: int | None = None, *, recalibrated: bool = False) -> TrainedMember:
    """Seed ``seed`` (default: the run's first) of ``variant`` (default: its only one, or
    the first with BatchNorm) of the run in ``run_dir`` (its experiment: ``config``), read
    from its record once (shapes from ``jax.eval_shape``: nothing is initialized); a name
    the run does not have is a ``ConfigError`` listing those it has, a damaged checkpoint a
    ``CheckpointError``, and a model still in training or diverged (module docstring) a
    ``ConfigError``."""
    names = [p.name for p in config.points]
    if variant is None:
        with_bn = [p.name for p in config.points
                   if p.build(config.input_shape()).has_batchnorm]
        variant = (with_bn or names)[0]
    if variant not in names:
        raise ConfigError(f"{run_dir.name} has no variant {variant!r}; it has "
                          f"{', '.join(names)}")
    seeds = list(config.seed_list)
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise ConfigError(f"{run_dir.name} has no seed {seed}; it has "
                          f"{', '.join(map(str, seeds))}")
    holder = training_holder(run_dir)
    if holder is not None:
        raise ConfigError(f"{run_dir} is being trained or recalibrated now (PID "
                          f"{holder.get('pid', '?')} on {holder.get('host', '?')}); its models "
                          "are taken only when it ends: try again then")
    stem = "recalibrated" if recalibrated else "checkpoint"
    path = run_dir / variant / f"{stem}.safetensors"
    if recalibrated and not path.exists():
        raise ConfigError(f"{path} is missing: recalibrate the run first (bnlab recalibrate "
                          "RUN, or bnlab.recalibrate)")
    arrays, record = read_record(run_dir / variant) if not recalibrated else (
        read_checkpoint(path.with_suffix(""))[0], read_record(run_dir / variant)[1])
    _check_finished(run_dir, config, variant, seed, record)
    point = config.point(variant)
    model = point.build(config.input_shape())
    template = jax.eval_shape(lambda: init_train_states(
        fixed(model, point.optimizer.build()), RunKeys.for_seeds(seeds)))
    state = restore_state(arrays, template, path)
    member = jax.tree_util.tree_map(lambda a: np.asarray(a)[seeds.index(seed)], state)
    return TrainedMember(variant, seed, record.epoch, model, member.params, member.bn_state)


def _check_finished(run_dir: Path, config: ExperimentConfig, variant: str, seed: int,
                    record: VariantRecord) -> None:
    """A ``ConfigError`` unless ``seed`` of ``variant`` finished training without diverging."""
    if not record.finished(config.epochs):
        raise ConfigError(f"{run_dir.name}/{variant} has trained {record.epoch} of "
                          f"{config.epochs} epochs; a model still in training is not taken: "
                          "finish it first by resuming the run")
    diverged = record.history.diverged
    if seed in diverged:
        finite = [s for s in config.seed_list if s not in diverged]
        raise ConfigError(f"seed {seed} of {run_dir.name}/{variant} diverged "
                          f"({diverged[seed]}): its weights are no model; "
                          + (f"choose another seed, such as {finite[0]}" if finite else
                             "every seed diverged: retrain at a smaller learning rate"))
