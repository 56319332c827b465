"""One trained member of a stored run, as the export commands take it: its model, parameters
and BN statistics, read from the variant's checkpoint (digest checked) or its
``recalibrated`` one (``experiments.recalibrate``)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from bnlab.errors import ConfigError
from bnlab.nn.model import Sequential
from bnlab.store.runs import Run
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
    params: tuple[dict, ...]
    bn_state: tuple[dict, ...]


def trained_member(run: Run, variant: str | None = None, seed: int | None = None, *,
                   recalibrated: bool = False) -> TrainedMember:
    """Seed ``seed`` (default: the run's first) of ``variant`` (default: its only one, or
    the first with BatchNorm) of ``run``; a name the run does not have is a ``ConfigError``
    listing those it has, a damaged checkpoint a ``CheckpointError``."""
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
    point = config.point(variant)
    model = point.build(config.input_shape())
    template = init_train_states(model, point.optimizer.build(), RunKeys.for_seeds(seeds))
    template = jax.tree_util.tree_map(np.asarray, template)
    stem = run.path / variant / ("recalibrated" if recalibrated else "checkpoint")
    state, epoch, _, _ = load_checkpoint(stem, template)
    index = seeds.index(seed)
    member = jax.tree_util.tree_map(lambda a: np.asarray(a)[index], state)
    return TrainedMember(variant, seed, epoch, model, member.params, member.bn_state)
