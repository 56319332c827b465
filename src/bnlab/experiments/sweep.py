"""Sweep points → compiled programs: scalars as data, shapes as programs.

A **program** is a set of points (``config.sweep.Point``) that share every shape and
structure: the same variant, batch size and non-scalar axis values. Its members, every point
× every seed, train in one ``SeedBatchTrainer``: the values of the scalar axes (learning
rate, optimizer momentum, BN momentum and ε, dropout rate, LeakyReLU slope) are each
member's data, traced once (``Program.bind``), so seven learning rates × five seeds compile
one program, not 35. Members of one seed share its initialization and data order whatever
their point, so every comparison between points is paired by seed.

    for program in programs(config):
        trainer = program.trainer(splits)        # members: program.members
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import optax

from bnlab.config.experiment import ExperimentConfig
from bnlab.config.sweep import Point, value_text, with_layer_values
from bnlab.data.datasets import Splits
from bnlab.nn.model import Sequential
from bnlab.train.augment import Augmentation
from bnlab.train.batches import steps_per_epoch
from bnlab.train.engine import Scalars
from bnlab.train.probes import ProbePlan
from bnlab.train.trainer import SeedBatchTrainer


@dataclass(frozen=True)
class Program:
    """Points that train as one compiled program, each with ``seeds``.

    ``scalar_keys``: the axis keys whose values are the members' data. Members are ordered
    point by point, seed by seed: member ``i`` is point ``i // len(seeds)``, seed
    ``seeds[i % len(seeds)]``.
    """

    points: tuple[Point, ...]
    seeds: tuple[int, ...]
    scalar_keys: tuple[str, ...]

    @property
    def members(self) -> list[tuple[Point, int]]:
        return [(point, seed) for point in self.points for seed in self.seeds]

    def of(self, point: Point) -> list[int]:
        """The member indices of ``point``'s seeds."""
        first = self.points.index(point) * len(self.seeds)
        return list(range(first, first + len(self.seeds)))

    def scalars(self) -> dict[str, np.ndarray]:
        """``{axis key: (members,)}``: each member's value of each scalar axis."""
        return {key: np.array([float(point.value(key)) for point, _ in self.members],
                              np.float32) for key in self.scalar_keys}

    def bind(self, scalars: Scalars, input_shape: tuple[int, ...] = (28, 28),
             steps: int | None = None) -> tuple[Sequential, optax.GradientTransformation]:
        """One member's model (for inputs ``(batch, *input_shape)``) and optimizer (its
        schedule over ``steps``) with its scalar axis values ``scalars`` (traced in the
        program); every other value is the first point's, which all points share."""
        first = self.points[0]
        layer_values = [(i, option, scalars.get(key, value))
                        for key, i, option, value in first.layer_values]
        model = with_layer_values(first.base.build(input_shape), layer_values)
        return model, first.optimizer.build(steps, **{
            key.removeprefix("optimizer."): scalars[key] for key in self.scalar_keys
            if key.startswith("optimizer.")})

    def trainer(self, splits: Splits, *, epochs: int | None = None,
                compiler_options: Mapping[str, bool | int | str] | None = None,
                probe: ProbePlan | None = None,
                augmentation: Augmentation | None = None) -> SeedBatchTrainer:
        """The program's trainer on ``splits``, validating on ``val`` and testing on
        ``test``; ``epochs``: the run's length, over which a learning-rate schedule
        decays (``None``: a trainer that does not train, e.g. to recalibrate); ``probe``
        records what it says on the first ``probe.rows`` validation images;
        ``augmentation`` is what each training image goes through."""
        first, input_shape = self.points[0], splits.x_train.shape[1:]
        steps = None if epochs is None else epochs * steps_per_epoch(len(splits.y_train),
                                                                     first.batch_size)
        model, optimizer = first.build(input_shape), first.optimizer.build(steps)
        return SeedBatchTrainer(
            model, optimizer, batch_size=first.batch_size, x_train=splits.x_train,
            y_train=splits.y_train, seeds=[seed for _, seed in self.members],
            evaluation={"val": (splits.x_val, splits.y_val),
                        "test": (splits.x_test, splits.y_test)},
            compiler_options=compiler_options,
            scalars=self.scalars() if self.scalar_keys else None,
            bind=functools.partial(self.bind, input_shape=input_shape, steps=steps)
            if self.scalar_keys else None, probe=probe,
            probe_images=splits.x_val[:probe.rows] if probe and probe.every else None,
            augmentation=augmentation)

    def subset(self, points: list[Point]) -> Program:
        """The program of some of its points (a resume trains only those left)."""
        return Program(tuple(points), self.seeds, self.scalar_keys)

    def label(self) -> str:
        """How progress names the program: its point's name when it has one point (a
        variant of a run without a sweep), else ``describe``."""
        return self.points[0].name if len(self.points) == 1 else self.describe()

    def describe(self) -> str:
        """``bn_after, batch 32: 7 points × 5 seeds = 35 members (learning_rate as data)``."""
        first = self.points[0]
        shape = [f"{k.removeprefix('optimizer.')}={value_text(v)}" for k, v in first.values
                 if k not in self.scalar_keys and k != "batch_size"]
        data = (f" ({', '.join(k.removeprefix('optimizer.') for k in self.scalar_keys)} as "
                "data)" if self.scalar_keys else "")
        return (f"{', '.join([first.variant, *shape])}, batch {first.batch_size}: "
                f"{len(self.points)} point{'s' * (len(self.points) != 1)} × "
                f"{len(self.seeds)} seed{'s' * (len(self.seeds) != 1)} = "
                f"{len(self.members)} member{'s' * (len(self.members) != 1)}{data}")


def programs(config: ExperimentConfig) -> tuple[Program, ...]:
    """``config``'s points grouped into programs, in the order of their first point."""
    scalar = {axis.key for axis in config.sweep if axis.scalar}
    groups: dict[tuple, list[Point]] = {}
    for point in config.points:
        shape = (point.variant, point.batch_size,
                 tuple((k, repr(v)) for k, v in point.values if k not in scalar))
        groups.setdefault(shape, []).append(point)
    result = []
    for points in groups.values():
        keys = tuple(k for k, _ in points[0].values if k in scalar)
        result.append(Program(tuple(points), config.seed_list, keys))
    return tuple(result)


def program_of(config: ExperimentConfig, name: str) -> Program:
    """The program that trains point ``name``."""
    return next(p for p in programs(config) if any(q.name == name for q in p.points))
