"""A model's summary as data: Keras's ``model.summary()`` rows, parameter counts in the Keras
and the PyTorch view, and every variable with its trainable flag.

    summary = summarize(bn_after())
    summary.total, summary.trainable, summary.non_trainable    # 271346 268978 2368
    summary.layers[1]     # LayerRow(name='batch_normalization', type_name='BatchNormalization',
                          #          output_shape=(None, 784), params=3136)
    summary.normalization_variables()  # gamma, beta (trainable), moving_mean, moving_variance

Keras counts four numbers per BatchNorm feature (γ and β trainable, the two moving statistics
not); PyTorch counts γ and β as parameters and the statistics, plus one
``num_batches_tracked`` per BatchNorm layer, as buffers. A frozen BatchNorm's γ and β live in
its non-trainable state, so they count as non-trainable, and its row says ``frozen``. A
summary renders itself: as Rich tables in a terminal (``rich.print(summary)``,
``str(summary)``) and as an HTML table in Jupyter (``_repr_html_``); the CLI and the HTML
report use these two renderings.
"""

from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
from rich.console import Console, Group
from rich.table import Table

from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.model import KERAS_TYPE_NAMES, Sequential
from bnlab.nn.norms import LayerNorm


class LayerRow(NamedTuple):
    """One row of ``model.summary()``: ``output_shape`` has ``None`` for the batch axis."""

    name: str
    type_name: str
    output_shape: tuple[int | None, ...]
    params: int
    frozen: str = ""  # "frozen" (γ, β and moving statistics), "γ, β frozen", or ""
    reads: str = ""  # a Branch's or Add's other input: a layer's name, or "input"

    @property
    def type_label(self) -> str:
        """``BatchNormalization``, ``BatchNormalization, frozen``, ``Add, + conv2d_2``."""
        detail = self.frozen or (f"{'from' if self.type_name == 'Branch' else '+'} "
                                 f"{self.reads}" if self.reads else "")
        return f"{self.type_name}, {detail}" if detail else self.type_name


class Variable(NamedTuple):
    """One variable of one layer, in Keras's order and with Keras's names."""

    layer: str
    name: str
    shape: tuple[int, ...]
    trainable: bool


@dataclass(frozen=True, repr=False)
class ModelSummary:
    """What ``summarize`` returns: rows, counts and variables of one model; its ``repr`` is
    the text tables (a REPL shows the summary, as Keras prints it)."""

    model_name: str
    layers: tuple[LayerRow, ...]
    variables: tuple[Variable, ...]
    batchnorm_layers: int
    normalization_layers: tuple[str, ...] = ()  # names of the BatchNorm-family, LayerNorm
    #                                             and GroupNorm layers

    @property
    def trainable(self) -> int:
        """Parameters the optimizer updates (Keras "Trainable params")."""
        return sum(math.prod(v.shape) for v in self.variables if v.trainable)

    @property
    def non_trainable(self) -> int:
        """BatchNorm moving statistics, frozen γ and β and step counters (Keras
        "Non-trainable params")."""
        return sum(math.prod(v.shape) for v in self.variables if not v.trainable)

    @property
    def total(self) -> int:
        """Keras "Total params": ``trainable + non_trainable``."""
        return self.trainable + self.non_trainable

    @property
    def pytorch_buffers(self) -> int:
        """PyTorch's buffer count: the non-trainable arrays (bnlab's step counters aside)
        and one ``num_batches_tracked`` per BatchNorm layer."""
        counters = sum(1 for v in self.variables if not v.trainable and v.shape == ())
        return self.non_trainable - counters + self.batchnorm_layers

    def normalization_variables(self) -> tuple[Variable, ...]:
        """The variables of the normalization layers (γ, β, moving mean and variance, …)."""
        return tuple(v for v in self.variables if v.layer in self.normalization_layers)

    def totals_line(self) -> str:
        return (f"Total params: {self.total:,}   Trainable params: {self.trainable:,}   "
                f"Non-trainable params: {self.non_trainable:,}")

    def pytorch_line(self) -> str:
        return (f"PyTorch view: {self.trainable:,} parameters; buffers: "
                f"{self.non_trainable:,} running statistics + {self.batchnorm_layers} "
                "num_batches_tracked")

    def __rich__(self) -> Group:
        """Keras's summary table (totals and the PyTorch view in its caption), then the
        BatchNorm variables with their trainable flags."""
        table = Table(title=f'Model: "{self.model_name}"', title_justify="left",
                      caption=f"{self.totals_line()}\n{self.pytorch_line()}",
                      caption_justify="left")
        table.add_column("Layer (type)")
        table.add_column("Output Shape")
        table.add_column("Param #", justify="right")
        for row in self.layers:
            table.add_row(f"{row.name} ({row.type_label})", str(row.output_shape),
                          f"{row.params:,}")
        parts: list[Table] = [table]
        if self.normalization_variables():
            variables = Table(title="Normalization variables", title_justify="left")
            for column in ("layer", "variable", "shape", "trainable"):
                variables.add_column(column)
            for v in self.normalization_variables():
                variables.add_row(v.layer, v.name, str(v.shape), "yes" if v.trainable else "no")
            parts.append(variables)
        return Group(*parts)

    def __str__(self) -> str:
        console = Console(file=io.StringIO(), width=100, color_system=None, highlight=False,
                          force_jupyter=False, force_terminal=False)
        console.print(self, markup=False, soft_wrap=True)
        return console.file.getvalue()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        """The summary as one HTML fragment (Jupyter; the HTML report embeds it too)."""
        def cell(value: object, css: str = "") -> str:
            return f'<td{css}>{html.escape(str(value))}</td>'

        num = ' class="num"'
        rows = "".join(
            f'<tr><td>{html.escape(r.name)} <span class="type">({html.escape(r.type_label)})'
            f'</span></td><td><code>{html.escape(str(r.output_shape))}</code></td>'
            f'{cell(f"{r.params:,}", num)}</tr>' for r in self.layers)
        variables = "".join(
            f"<tr>{cell(v.layer)}{cell(v.name)}<td><code>{html.escape(str(v.shape))}</code></td>"
            f"{cell('yes' if v.trainable else 'no')}</tr>" for v in self.normalization_variables())
        variables_table = (
            '<table class="variables"><thead><tr><th>layer</th><th>variable</th><th>shape</th>'
            f"<th>trainable</th></tr></thead><tbody>{variables}</tbody></table>"
            if variables else "")
        return (
            f'<div class="bnlab-summary"><p><b>Model: "{html.escape(self.model_name)}"</b></p>'
            '<table class="summary"><thead><tr><th>Layer (type)</th><th>Output Shape</th>'
            f'<th class="num">Param #</th></tr></thead><tbody>{rows}</tbody></table>'
            '<dl class="totals">'
            f"<dt>Total params</dt><dd>{self.total:,}</dd>"
            f"<dt>Trainable params</dt><dd>{self.trainable:,}</dd>"
            f"<dt>Non-trainable params</dt><dd>{self.non_trainable:,}</dd></dl>"
            f'<p class="pytorch">{html.escape(self.pytorch_line())}</p>{variables_table}</div>')


def layer_variables(model: Sequential) -> tuple[Variable, ...]:
    """Every variable of ``model`` in Keras's order (per layer: gamma, beta, moving_mean,
    moving_variance). Shapes from ``jax.eval_shape`` (nothing is computed); the order is the
    one ``init`` builds its dicts in, read while it is traced (``eval_shape`` returns dicts
    with sorted keys)."""
    built: list[tuple[tuple[dict, ...], tuple[dict, ...]]] = []

    def init(key):
        built.append(model.init(key))
        return built[-1]

    params, bn_state = jax.eval_shape(init, jax.random.key(0))
    rows: list[Variable] = []
    for name, p, s, (p_order, s_order) in zip(model.layer_names, params, bn_state,
                                             zip(*built[0], strict=True), strict=True):
        rows += [Variable(name, var, tuple(p[var].shape), True) for var in p_order]
        rows += [Variable(name, var, tuple(s[var].shape), False) for var in s_order]
    return tuple(rows)


def summarize(model: Sequential) -> ModelSummary:
    """``model``'s summary: a row per layer (Keras's names, output shapes with ``None`` for
    the batch, parameter counts), its variables and its BatchNorm layer count."""
    variables = layer_variables(model)
    per_layer: dict[str, int] = {}
    for v in variables:
        per_layer[v.layer] = per_layer.get(v.layer, 0) + math.prod(v.shape)
    names = model.layer_names

    def reads(layer: object) -> str:
        source = getattr(layer, "source", None)
        return "" if source is None else "input" if source < 0 else names[source]

    rows = tuple(
        LayerRow(name, KERAS_TYPE_NAMES[type(layer)][0], (None, *shape), per_layer.get(name, 0),
                 frozen_label(layer), reads(layer))
        for layer, name, shape in zip(model.layers, names, model.output_shapes, strict=True))
    normalization = tuple(name for layer, name in zip(model.layers, model.layer_names,
                                                      strict=True)
                          if isinstance(layer, BatchNorm | LayerNorm))
    return ModelSummary(model.name, rows, variables,
                        sum(isinstance(layer, BatchNorm) for layer in model.layers),
                        normalization)


def frozen_label(layer: object) -> str:
    """What a layer keeps fixed in training: ``"frozen"`` (γ, β and the moving statistics),
    ``"γ, β frozen"``, or ``""``."""
    if getattr(layer, "freeze", False):
        return "frozen"
    return "γ, β frozen" if getattr(layer, "freeze_affine", False) else ""
