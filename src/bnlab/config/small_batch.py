"""The warning for BatchNorm batches of 2 rows, which are legal but nearly meaningless."""

from __future__ import annotations

from bnlab.config.experiment import ExperimentConfig
from bnlab.nn.batchnorm import BatchNorm


def small_batch_warnings(config: ExperimentConfig, n_train: int) -> list[str]:
    """One line per point (a variant without a sweep) with BatchNorm layers whose training
    batches would hold exactly 2 rows (``batch_size == 2``, or ``n_train % batch_size ==
    2``: the ragged last batch of every epoch); ``[]`` when none would. ``n_train`` is the
    number of training rows.

    Training BN normalizes with the batch's own statistics. For two rows a and b of one
    feature, μ = (a + b)/2 and σ² = ((a − b)/2)², so

        x̂ = ±((a − b)/2) / √(((a − b)/2)² + ε)  ≈  ±1   (for |a − b| ≫ √ε)

    (+ for a, − for b): every feature of that batch becomes ±γ + β, whatever its
    values; the layer passes on only the sign of a − b. A batch of 1 row is an error
    (``train.engine.check_batching``); 2 rows is legal but nearly meaningless, so it is
    a warning, with a batch size that avoids it. A BatchNorm over images is not concerned:
    its statistics average 2·H·W values per channel; a model with both kinds names the
    layers over features.
    """
    warnings = []
    for point in config.points:
        batch_size = point.batch_size
        last = n_train % batch_size
        if batch_size != 2 and last != 2:
            continue
        if batch_size == 2:
            what = "every training batch has 2 rows"
        else:
            what = (f"the last batch of every epoch has 2 rows ({n_train:,} training rows, "
                    f"batch_size {batch_size})")
        better = _batch_size_without_tiny_batches(n_train, batch_size)
        fix = (f"batch_size {better} avoids it" if better is not None
               else "use more training rows")
        model = point.build(config.input_shape())
        ranks = {name: (layer, len(shape)) for name, layer, shape in zip(
            model.layer_names, model.layers, model.output_shapes, strict=True)
            if isinstance(layer, BatchNorm)}
        over_features = {name: layer for name, (layer, rank) in ranks.items() if rank == 1}
        if over_features:
            epsilons = sorted({layer.epsilon for layer in over_features.values()})
            eps = ", ".join(f"{e:g}" for e in epsilons)
            which = ("" if len(over_features) == len(ranks) else
                     f" over features ({', '.join(over_features)}; those over images average "
                     f"2·H·W values)")
            kind = "variant" if point.name == point.variant else "point"
            warnings.append(
                f"{kind} {point.name!r}: {what}; BatchNorm{which} of 2 rows a, b gives each "
                f"feature ±((a−b)/2)/√(((a−b)/2)² + ε) ≈ ±1 (ε = {eps}), so it passes on "
                f"only the sign of a − b; {fix}")
    return warnings


def _batch_size_without_tiny_batches(n_train: int, batch_size: int) -> int | None:
    """The batch size nearest ``batch_size`` (the larger first on a tie) in 3..``n_train``
    whose batches all hold at least 3 rows; ``None`` when there is none (``n_train < 3``)."""
    candidates = range(3, n_train + 1)
    fits = [b for b in candidates if n_train % b not in (1, 2)]
    return min(fits, key=lambda b: (abs(b - batch_size), -b), default=None)
