"""What bnlab prints: Keras-style summaries, epoch lines and result tables (Rich)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.table import Table

from bnlab.experiments.runner import EpochLog, VariantResult
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.model import KERAS_TYPE_NAMES, Sequential, layer_variables, param_counts


def summary_table(model: Sequential) -> Table:
    """Keras ``model.summary()``: layer (type), output shape, params, and the totals."""
    table = Table(title=f'Model: "{model.name}"', title_justify="left")
    table.add_column("Layer (type)")
    table.add_column("Output Shape")
    table.add_column("Param #", justify="right")
    per_layer: dict[str, int] = {}
    for layer_name, _, shape, _ in layer_variables(model):
        per_layer[layer_name] = per_layer.get(layer_name, 0) + int(np.prod(shape))
    for layer, name, shape in zip(model.layers, model.layer_names, model.output_shapes,
                                  strict=True):
        type_name = KERAS_TYPE_NAMES[type(layer)][0]
        table.add_row(f"{name} ({type_name})", str((None, *shape)),
                      f"{per_layer.get(name, 0):,}")
    counts = param_counts(model)
    bn_layers = sum(isinstance(layer, BatchNorm) for layer in model.layers)
    table.caption = (
        f"Total params: {counts['total']:,}   Trainable params: {counts['trainable']:,}   "
        f"Non-trainable params: {counts['non_trainable']:,}\n"
        f"PyTorch view: {counts['trainable']:,} parameters; buffers: "
        f"{counts['non_trainable']:,} running statistics + {bn_layers} num_batches_tracked"
    )
    table.caption_justify = "left"
    return table


def variables_table(model: Sequential) -> Table | None:
    """Each BN layer's variables with their trainable flag (as the notebook lists them)."""
    rows = [r for r in layer_variables(model) if r[0].startswith("batch_normalization")]
    if not rows:
        return None
    table = Table(title="BatchNormalization variables", title_justify="left")
    for column in ("layer", "variable", "shape", "trainable"):
        table.add_column(column)
    for layer_name, variable, shape, trainable in rows:
        table.add_row(layer_name, variable, str(shape), "yes" if trainable else "no")
    return table


def epoch_line(log: EpochLog) -> str:
    """Keras ``verbose=2`` line; with several seeds, metrics are means over seeds."""
    parts = [f"{log.steps}/{log.steps}", f"{log.seconds:.2f}s/epoch",
             f"{1000 * log.seconds / log.steps:.2f}ms/step"]
    for metric, values in log.metrics.items():
        text = f"{metric}: {values.mean():.4f}"
        if len(values) > 1:
            text += f" ±{values.std(ddof=1):.4f}"
        parts.append(text)
    return " - ".join(parts)


def results_table(results: Sequence[VariantResult]) -> Table:
    """Final validation and test metrics per variant (mean ± sd over seeds)."""
    seeds = len(results[0].seeds)
    title = "Results after training" + (f" (mean ± sd over {seeds} seeds)" if seeds > 1 else "")
    table = Table(title=title, title_justify="left")
    for column in ("model", "val_accuracy", "val_loss", "test_accuracy", "test_loss",
                   "s/epoch", "compile s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for result in results:
        table.add_row(
            result.name,
            mean_sd(result.history["val_accuracy"][:, -1]),
            mean_sd(result.history["val_loss"][:, -1]),
            mean_sd(result.test_accuracy),
            mean_sd(result.test_loss),
            f"{np.median(result.epoch_seconds[1:] or result.epoch_seconds):.2f}",
            f"{result.compile_seconds:.1f}",
        )
    return table


def mean_sd(values: np.ndarray) -> str:
    """``0.8406`` for one value, ``0.8406 ± 0.0031`` (sample sd) for several."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"
