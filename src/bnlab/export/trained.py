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

import jax
import numpy as np

from bnlab.errors import ConfigError
from bnlab.nn.model import Sequential
from bnlab.store.lock import training_holder
from bnlab.store.runs import Run, variant_finished
from bnlab.train.checkpoint import load_checkpoint
from bnlab.train.engine import RunKeys, init_train_states


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


def trained_member(run: Run, variant: str | None = None, seed: int | None = None, *,
                   recalibrated: bool = False) -> TrainedMember:
    """Seed ``seed`` (default: the run's first) of ``variant`` (default: its only one, or
    the first with BatchNorm) of ``run``; a name the run does not have is a ``ConfigError``
    listing those it has, a damaged checkpoint a ``CheckpointError``, and a model still in
    training or diverged (module docstring) a ``ConfigError``."""
    config = run.config
    names = [p.name for p in config.points]
    if variant is None:
        with_bn = [p.name for p in config.points
                   if p.build(config.input_shape()).has_batchnorm]
        variant = (with_bn or names)[0]
    if variant not in names:
        raise ConfigError(f"{run.path.name} has no variant {variant!r}; it has "
                          f"{', '.join(names)}")
    seeds = list(config.seed_list)
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise ConfigError(f"{run.path.name} has no seed {seed}; it has "
                          f"{', '.join(map(str, seeds))}")
    holder = training_holder(run.path)
    if holder is not None:
        raise ConfigError(f"{run.path} is being trained or recalibrated now (PID "
                          f"{holder.get('pid', '?')} on {holder.get('host', '?')}); its models "
                          "are taken only when it ends: try again then")
    saved = run.saved.get(variant)  # None: damaged or missing, which load_checkpoint says
    if saved is not None and not variant_finished(saved, config):
        raise ConfigError(f"{run.path.name}/{variant} has trained {saved.epoch} of "
                          f"{config.epochs} epochs; a model still in training is not taken: "
                          "finish it first by resuming the run")
    if saved is not None and seed in saved.history.diverged:
        finite = [s for s in seeds if s not in saved.history.diverged]
        raise ConfigError(f"seed {seed} of {run.path.name}/{variant} diverged "
                          f"({saved.history.diverged[seed]}): its weights are no model; "
                          + (f"choose another seed, such as {finite[0]}" if finite else
                             "every seed diverged: retrain at a smaller learning rate"))
    point = config.point(variant)
    model = point.build(config.input_shape())
    template = init_train_states(model, point.optimizer.build(), RunKeys.for_seeds(seeds))
    template = jax.tree_util.tree_map(np.asarray, template)
    stem = run.path / variant / ("recalibrated" if recalibrated else "checkpoint")
    if recalibrated and not stem.with_suffix(".safetensors").exists():
        raise ConfigError(f"{stem.with_suffix('.safetensors')} is missing: recalibrate the run "
                          "first (bnlab recalibrate RUN, or bnlab.recalibrate)")
    state, epoch, _, _ = load_checkpoint(stem, template)
    index = seeds.index(seed)
    member = jax.tree_util.tree_map(lambda a: np.asarray(a)[index], state)
    return TrainedMember(variant, seed, epoch, model, member.params, member.bn_state)
