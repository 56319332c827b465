"""A bnlab model as an ONNX graph (``onnx`` package), for onnxruntime and other runtimes.

    proto = to_onnx(model, params, bn_state)     # one member's params and BN statistics
    onnx.checker.check_model(proto)

The graph computes ``model.apply(..., train=False)``: input ``images`` ``(N, *input_shape)``
float32 (pixels already scaled as the model takes them, e.g. /255), outputs ``logits``
``(N, classes)`` and ``probabilities`` (their softmax). Layers map to standard operators
(opset ``OPSET``): Flatten → ``Flatten``; Dense → ``Gemm`` (+ its activation: ``Relu``,
``Sigmoid``, ``Tanh``, ``Elu``, ``Selu``, ``Gelu`` with the tanh approximation as
``jax.nn.gelu``, swish as ``x·Sigmoid(x)``); LeakyReLU → ``LeakyRelu``; Dropout → nothing
(the identity in inference); every BatchNorm-family layer → ``BatchNormalization`` in
inference mode with its moving statistics (γ = 1, β = 0 where the layer has none); LayerNorm
→ ``LayerNormalization``; GroupNorm → a ``Reshape`` to ``(N, groups, F/groups)``,
``LayerNormalization`` over the last axis, and back, then γ and β. Fold the BatchNorm
layers first (``nn.fold``) for the plain-MLP graph a deployment wants.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bnlab.errors import ConfigError, printable
from bnlab.export.onnx_checks import (
    checked_rows,
    graph_inputs,
    per_image_values,
    read_onnx,
    refuse_training_mode,
    run_bounded,
)
from bnlab.io import parse_json
from bnlab.limits import BATCH_VALUES
from bnlab.nn.batchnorm import BatchNorm, affine_parameters
from bnlab.nn.layers import Activation, Dense, Dropout, Flatten, LeakyReLU
from bnlab.nn.model import Sequential
from bnlab.nn.norms import GroupNorm, LayerNorm

OPSET = 20  # Gelu(approximate="tanh") needs 20; onnxruntime ≥ 1.17 runs it
UNARY = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "elu": "Elu", "selu": "Selu"}


class _Graph:
    """Nodes and initializers under construction, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, *, output: str | None = None,
             **attributes) -> str:
        """Add ``op`` of ``inputs``; its output is ``output``, or a fresh name from
        ``hint``."""
        output = output or self.name(hint)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


def activation_nodes(graph: _Graph, x: str, activation: str, hint: str) -> str:
    """``activation`` (a ``nn.layers.ACTIVATIONS`` name) applied to ``x``; a final softmax is
    the graph's ``probabilities``, so ``softmax`` here is only for hidden layers."""
    if activation == "linear":
        return x
    if activation in UNARY:
        return graph.node(UNARY[activation], [x], f"{hint}_{activation}")
    if activation == "gelu":
        return graph.node("Gelu", [x], f"{hint}_gelu", approximate="tanh")
    if activation == "swish":
        return graph.node("Mul", [x, graph.node("Sigmoid", [x], f"{hint}_sigmoid")],
                          f"{hint}_swish")
    if activation == "softmax":
        return graph.node("Softmax", [x], f"{hint}_softmax", axis=-1)
    raise ConfigError(f"activation {activation!r} has no ONNX export")


def to_onnx(model: Sequential, params: tuple[dict, ...], bn_state: tuple[dict, ...], *,
            name: str | None = None, class_names: Sequence[str] = ()) -> onnx.ModelProto:
    """``model`` with ``params`` and ``bn_state`` (one member's, NumPy or JAX arrays) as an
    ONNX model (module docstring), with ``class_names`` in its metadata (``class_names``, a
    JSON list) for ``bnlab predict``; a layer without an export is a ``ConfigError``."""
    graph = _Graph()
    x = "images"
    last = len(model.layers) - 1
    for index, (layer, layer_params, layer_state, layer_name) in enumerate(zip(
            model.layers, params, bn_state, model.layer_names, strict=True)):
        p = {k: np.asarray(v, np.float32) for k, v in layer_params.items()}
        s = {k: np.asarray(v) for k, v in layer_state.items()}
        if isinstance(layer, Flatten):
            x = graph.node("Flatten", [x], layer_name, axis=1)
        elif isinstance(layer, Dense):
            inputs = [x, graph.constant(f"{layer_name}_kernel", p["kernel"])]
            if layer.use_bias:
                inputs.append(graph.constant(f"{layer_name}_bias", p["bias"]))
            x = graph.node("Gemm", inputs, layer_name)
            if not (index == last and layer.activation == "softmax"):  # logits: as apply
                x = activation_nodes(graph, x, layer.activation, layer_name)
        elif isinstance(layer, Activation):
            x = activation_nodes(graph, x, layer.name, layer_name)
        elif isinstance(layer, LeakyReLU):
            x = graph.node("LeakyRelu", [x], layer_name, alpha=float(layer.negative_slope))
        elif isinstance(layer, Dropout):
            continue
        elif isinstance(layer, BatchNorm):
            gamma, beta = affine_parameters(p, {k: v.astype(np.float32) for k, v in s.items()})
            features = s["moving_mean"].shape[0]
            inputs = [x, graph.constant(f"{layer_name}_gamma", np.ones(features, np.float32)
                                        if gamma is None else gamma),
                      graph.constant(f"{layer_name}_beta", np.zeros(features, np.float32)
                                     if beta is None else beta),
                      graph.constant(f"{layer_name}_mean", s["moving_mean"].astype(np.float32)),
                      graph.constant(f"{layer_name}_var",
                                     s["moving_variance"].astype(np.float32))]
            x = graph.node("BatchNormalization", inputs, layer_name,
                           epsilon=float(layer.epsilon))
        elif isinstance(layer, LayerNorm):
            x = _layer_norm(graph, x, layer, p, layer_name, model.output_shapes[index][-1])
        else:
            raise ConfigError(f"{layer_name} ({type(layer).__name__}) has no ONNX export")
    logits = graph.node("Identity", [x], "logits", output="logits")
    graph.node("Softmax", [logits], "probabilities", output="probabilities", axis=-1)
    classes = model.output_shapes[-1][-1]
    onnx_graph = helper.make_graph(
        graph.nodes, name or model.name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                       ["N", *model.input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        graph.initializers)
    proto = helper.make_model(onnx_graph, producer_name="bnlab",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = 9  # what onnxruntime ≥ 1.16 reads
    if class_names:
        helper.set_model_props(proto, {"class_names": json.dumps(list(class_names))})
    return proto


def class_names_of(proto: onnx.ModelProto) -> list[str] | None:
    """The class names ``to_onnx`` stored in ``proto``'s metadata (control characters
    written out: ``errors.printable``), or ``None``."""
    for prop in proto.metadata_props:
        if prop.key == "class_names":
            try:
                names = parse_json(prop.value)
            except ValueError:
                return None
            return [printable(n) for n in names] if isinstance(names, list) and all(
                isinstance(n, str) for n in names) else None
    return None


@dataclass(frozen=True)
class OnnxClassifier:
    """An ONNX file as ``bnlab predict`` runs it (``load_classifier``): ``probabilities``
    maps images ``(N, 28, 28)`` float32 in [0, 1] to ``(N, classes)``; ``class_names`` is
    the file's own (``to_onnx`` metadata) or ``None``; ``note`` says how a file not written
    by bnlab was read, or is empty."""

    probabilities: Callable[[np.ndarray], np.ndarray]
    class_names: list[str] | None
    note: str


def load_classifier(path: Path, image_shape: tuple[int, ...] = (28, 28)) -> OnnxClassifier:
    """The ONNX classifier in ``path`` run by onnxruntime (CPU). bnlab's own files are run
    by their names (``images`` → ``probabilities``). Another file must have one input that
    holds ``prod(image_shape)`` values per image (e.g. ``(N, 784)`` or ``(N, 1, 28, 28)``)
    and a ``probabilities`` output or a single output. That output is taken as
    probabilities when its rows for two probe images (black, mid-grey) are non-negative
    and sum to 1, else as logits (a softmax applied). A file exported for a fixed batch size
    is run in chunks of it, any other in chunks of at most ``limits.BATCH_VALUES`` values in
    its largest tensor. The file is read and checked as ``onnx_checks.read_onnx`` says and run
    by ``onnx_checks.run_bounded``; a file that is refused, unreadable, invalid, in training
    mode or of another form is a one-line ``BnlabError``, and so is an output that is not a
    number (NaN) for an image."""
    import onnxruntime
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    ort_errors = (ort_state.Fail, ort_state.InvalidArgument, ort_state.InvalidGraph,
                  ort_state.InvalidProtobuf, ort_state.NotImplemented,
                  ort_state.RuntimeException)
    proto = read_onnx(path)
    inputs, outputs = graph_inputs(proto), [o.name for o in proto.graph.output]
    values = int(np.prod(image_shape))
    dims = inputs[0].shape[1:] if len(inputs) == 1 else []
    if len(inputs) != 1 or not all(isinstance(d, int) for d in dims) or int(
            np.prod(dims)) != values:
        raise ConfigError(f"{path}: not an image classifier bnlab can run: it needs one input "
                          f"of {values} values per image (it has "
                          f"{', '.join(f'{i.name} {i.shape}' for i in inputs) or 'none'})")
    if "probabilities" not in outputs and len(outputs) != 1:
        raise ConfigError(f"{path}: which output is the classes? It has "
                          f"{', '.join(outputs)}; bnlab reads 'probabilities' or a sole output")
    output = "probabilities" if "probabilities" in outputs else outputs[0]
    largest = per_image_values(proto, path)  # before onnxruntime allocates anything
    try:
        session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
    except ort_errors as err:
        raise ConfigError(f"{path}: onnxruntime cannot run it ({type(err).__name__}: {err})"
                          ) from None
    feed, shape = inputs[0].name, (-1, *dims)
    batch = inputs[0].shape[0]
    fixed = batch if isinstance(batch, int) and batch > 0 else None
    if fixed:
        BATCH_VALUES.check(fixed * largest, f"{path}: its fixed batch of {fixed:,} images")
    rows_at_once = max(1, BATCH_VALUES.value // max(largest, 1))

    def run(x: np.ndarray) -> np.ndarray:
        try:
            (rows,) = run_bounded(session, [output], {feed: x}, str(path))
        except ort_errors as err:
            raise ConfigError(f"{path}: onnxruntime failed ({type(err).__name__}: {err})"
                              ) from None
        return checked_rows(rows, len(x), f"{path}: its output {output}")

    def scores(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, np.float32).reshape(shape)
        if fixed is None:
            return np.concatenate([run(x[start:start + rows_at_once])
                                   for start in range(0, len(x), rows_at_once)])
        # a file exported for batches of `fixed`: chunks, the last padded with zeros
        padded = np.concatenate([x, np.zeros((-len(x) % fixed, *dims), np.float32)])
        return np.concatenate([run(chunk) for chunk in np.split(
            padded, len(padded) // fixed)])[:len(x)]

    probe = scores(np.stack([np.zeros(image_shape), np.full(image_shape, 0.5)]))
    as_probabilities = output == "probabilities" or bool(
        (probe >= 0).all() and np.allclose(probe.sum(axis=1), 1.0, atol=1e-4))

    def probabilities(images: np.ndarray) -> np.ndarray:
        rows = scores(images)
        if as_probabilities:
            return rows
        rows = np.exp(rows - rows.max(axis=1, keepdims=True))
        return rows / rows.sum(axis=1, keepdims=True)

    foreign = (feed, output) != ("images", "probabilities")
    note = (f"input {feed} {inputs[0].shape}, output {output} as "
            f"{'probabilities' if as_probabilities else 'logits'}") if foreign else ""
    return OnnxClassifier(probabilities, class_names_of(proto), note)


def _layer_norm(graph: _Graph, x: str, layer: LayerNorm, p: dict, layer_name: str,
                features: int) -> str:
    """LayerNorm of ``features`` as ``LayerNormalization``; GroupNorm as the same over each
    group, then its per-feature γ and β."""
    groups = layer.groups_of(features)
    ones, zeros = np.ones(features, np.float32), np.zeros(features, np.float32)
    gamma, beta = p.get("gamma", ones), p.get("beta", zeros)
    if not isinstance(layer, GroupNorm) or groups == 1:
        return graph.node("LayerNormalization", [
            x, graph.constant(f"{layer_name}_gamma", gamma),
            graph.constant(f"{layer_name}_beta", beta)], layer_name, axis=-1,
            epsilon=float(layer.epsilon))
    size = features // groups
    grouped = graph.node("Reshape", [x, graph.constant(f"{layer_name}_groups",
                                                       np.array([0, groups, size], np.int64))],
                         f"{layer_name}_grouped")
    normalized = graph.node("LayerNormalization", [
        grouped, graph.constant(f"{layer_name}_ones", np.ones(size, np.float32)),
        graph.constant(f"{layer_name}_zeros", np.zeros(size, np.float32))],
        f"{layer_name}_normalized", axis=-1, epsilon=float(layer.epsilon))
    flat = graph.node("Reshape", [normalized, graph.constant(
        f"{layer_name}_flat", np.array([0, features], np.int64))], f"{layer_name}_flat")
    scaled = graph.node("Mul", [flat, graph.constant(f"{layer_name}_gamma", gamma)],
                        f"{layer_name}_scaled")
    return graph.node("Add", [scaled, graph.constant(f"{layer_name}_beta", beta)], layer_name)


@dataclass(frozen=True)
class Verification:
    """onnxruntime's outputs against bnlab's inference on the same images: the largest
    absolute differences of the probabilities and of the logits, how many rows have the same
    top class, and how many are near ties, whose top two logits in bnlab lie within
    ``2 · max_logit_error`` of each other (rounding alone may swap their order, so on another
    CPU the count of the same top class may be lower by up to this many)."""

    rows: int
    max_probability_error: float
    max_logit_error: float
    same_top_class: int
    near_ties: int


def verify(proto: onnx.ModelProto, model: Sequential, params: tuple[dict, ...],
           bn_state: tuple[dict, ...], images: np.ndarray,
           chunk_rows: int = 1000) -> Verification:
    """Check ``proto`` with ``onnx.checker`` and run it with onnxruntime (CPU) on ``images``
    (model inputs, float32), against ``model.apply(..., train=False)``."""
    import jax
    import onnxruntime

    onnx.checker.check_model(proto, full_check=True)
    refuse_training_mode(proto, f"the ONNX graph {proto.graph.name!r}")
    session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    apply = jax.jit(lambda x: model.apply(params, bn_state, x, train=False)[0])
    probability_error = logit_error = 0.0
    same = 0
    margins = []  # bnlab's top logit minus its second, per row
    for start in range(0, len(images), chunk_rows):
        x = np.asarray(images[start:start + chunk_rows], np.float32)
        logits, probabilities = session.run(["logits", "probabilities"], {"images": x})
        want_logits = np.asarray(apply(x), np.float64)
        want = np.asarray(jax.nn.softmax(want_logits), np.float64)
        probability_error = max(probability_error, float(np.abs(probabilities - want).max()))
        logit_error = max(logit_error, float(np.abs(logits - want_logits).max()))
        same += int((probabilities.argmax(1) == want.argmax(1)).sum())
        top_two = np.sort(want_logits, axis=1)[:, -2:]
        margins.append(top_two[:, 1] - top_two[:, 0])
    near_ties = int((np.concatenate(margins) <= 2 * logit_error).sum()) if margins else 0
    return Verification(len(images), probability_error, logit_error, same, near_ties)
