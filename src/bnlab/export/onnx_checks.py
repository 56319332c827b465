"""An ONNX file from outside read as data, and checked before onnxruntime runs it.

``read_onnx`` trusts nothing in the file:

- it is a regular file (a FIFO, a device or a folder is refused unopened) of at most
  ``limits.MODEL_BYTES``, parsed from memory;
- every tensor is inside it: weights in external files (which could name any file on the
  machine, or be any size) and sparse tensors (whose dense size is only declared) are refused;
- no node holds a subgraph (``If``, ``Loop``, ``Scan``: a loop's trip count comes from data,
  so it could run forever), no node is of a custom domain, and the file defines no functions
  — the whole graph is what is checked;
- ``onnx.checker`` accepts it, and nothing in it computes in training mode
  (``training_mode_nodes``);
- ``onnx``'s shape inference, with the batch at one image, gives every tensor the graph
  computes a whole size (``per_image_values``, the largest), so that a batch can be cut to
  ``limits.BATCH_VALUES`` values before it runs: an ``Expand``, a ``Pad`` or a ``Conv`` whose
  attributes ask for 10¹² values is refused before anything is allocated.

``run_bounded`` then runs the session in a worker thread, so Ctrl-C and SIGTERM stop it at
once (onnxruntime's ``RunOptions.terminate`` ends the run at its next node) and a run longer
than ``limits.INFERENCE_SECONDS`` is stopped the same way.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from bnlab.errors import ConfigError
from bnlab.io import read_regular
from bnlab.limits import BATCH_VALUES, INFERENCE_SECONDS, MODEL_BYTES, LimitExceeded

STANDARD_DOMAINS = ("", "ai.onnx")


def read_onnx(path: Path) -> onnx.ModelProto:
    """The model in the ONNX file at ``path`` after the checks of the module docstring but
    the last (``per_image_values``, once its input is known to be an image); any refusal is
    a one-line ``ConfigError`` (or ``BnlabError`` for the file itself) naming the file."""
    from google.protobuf.message import DecodeError

    data = read_regular(Path(path), limit=MODEL_BYTES)
    try:
        proto = onnx.ModelProto.FromString(data)
    except (DecodeError, RecursionError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable ONNX model ({err or 'not a protobuf'})"
                          ) from None
    _refuse_outside_data(proto, path)
    _refuse_control_flow(proto, path)
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as err:
        raise ConfigError(f"{path}: not a valid ONNX model ({_first_line(err)})") from None
    refuse_training_mode(proto, str(path))
    return proto


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def _refuse_outside_data(proto: onnx.ModelProto, path: Path) -> None:
    graph = proto.graph
    external = [t.name for t in graph.initializer
                if t.data_location == TensorProto.EXTERNAL]
    external += [n.output[0] for n in graph.node for a in n.attribute
                 if a.type == AttributeProto.TENSOR and a.t.data_location == TensorProto.EXTERNAL]
    if external:
        raise ConfigError(f"{path}: its weights ({', '.join(external[:3])}"
                          f"{' …' * (len(external) > 3)}) are in external files; bnlab reads "
                          "self-contained ONNX files (onnx.save(model, path, "
                          "save_as_external_data=False))")
    sparse = bool(graph.sparse_initializer) or any(
        a.type in (AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS)
        for n in graph.node for a in n.attribute)
    if sparse:
        raise ConfigError(f"{path}: it holds sparse tensors, whose dense size is only "
                          "declared; bnlab reads dense tensors (onnx's numpy_helper)")


def _refuse_control_flow(proto: onnx.ModelProto, path: Path) -> None:
    if proto.functions:
        raise ConfigError(f"{path}: it defines functions ({proto.functions[0].name} …); bnlab "
                          "runs plain graphs of standard operators (inline them when exporting)")
    for node in proto.graph.node:
        name = node.name or (node.output[0] if node.output else node.op_type)
        if node.domain not in STANDARD_DOMAINS:
            raise ConfigError(f"{path}: node {name} is {node.domain}.{node.op_type}, a custom "
                              "operator; bnlab runs standard ONNX operators only")
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
            raise ConfigError(f"{path}: node {name} is a {node.op_type}, control flow with a "
                              "subgraph (If, Loop, Scan); bnlab runs feed-forward graphs only, "
                              "whose work does not depend on the data")


@dataclass(frozen=True)
class GraphInput:
    """An input of a graph as onnxruntime lists it: its ``name`` and ``shape``, each
    dimension a whole number, a symbolic name (``"N"``) or ``None``."""

    name: str
    shape: list[int | str | None]


def graph_inputs(proto: onnx.ModelProto) -> list[GraphInput]:
    """The inputs of ``proto`` a caller feeds (not those an initializer gives)."""
    given = {t.name for t in proto.graph.initializer}
    return [GraphInput(value.name, [d.dim_value if d.HasField("dim_value") else
                                    d.dim_param or None
                                    for d in value.type.tensor_type.shape.dim])
            for value in proto.graph.input if value.name not in given]


def per_image_values(proto: onnx.ModelProto, path: Path) -> int:
    """The most values any one tensor of ``proto`` holds per image, by ``onnx``'s shape
    inference with the first input's batch dimension set to 1 (or at the fixed batch size a
    file declares, divided by it); a tensor whose size the
    inference cannot state, or over ``limits.BATCH_VALUES``, is a ``ConfigError``."""
    inputs = [i for i in proto.graph.input
              if i.name not in {t.name for t in proto.graph.initializer}]
    if len(inputs) != 1:
        return 0  # load_classifier says what is wrong with the inputs
    dims = inputs[0].type.tensor_type.shape.dim
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
    declared = None
    if dims and batch < 1:  # a batch of any size: one image, set in place for the inference
        declared = onnx.TensorShapeProto.Dimension()  # (a copy of the model would copy its
        declared.CopyFrom(dims[0])                    # weights), restored after it
        dims[0].ClearField("dim_param")
        dims[0].dim_value = batch = 1
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError,
            ValueError) as err:
        raise ConfigError(f"{path}: onnx cannot infer the sizes of its tensors "
                          f"({_first_line(err)}); bnlab runs graphs whose sizes are known"
                          ) from None
    finally:
        if declared is not None:
            dims[0].CopyFrom(declared)
    largest, unknown = 0, []
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        shape = value.type.tensor_type.shape
        sizes = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
        if not value.type.tensor_type.HasField("shape") or None in sizes:
            unknown.append(value.name)
            continue
        largest = max(largest, math.prod(sizes))
    for tensor in inferred.graph.initializer:
        largest = max(largest, math.prod(tensor.dims))
    if unknown:
        raise ConfigError(f"{path}: onnx cannot infer the size of {', '.join(unknown[:3])}"
                          f"{' …' * (len(unknown) > 3)}; bnlab runs graphs whose sizes are "
                          "known from the input's")
    BATCH_VALUES.check(largest, f"{path}: the largest tensor it computes for a batch of "
                                f"{batch:,}")
    return -(-largest // batch)


def training_mode_nodes(proto: onnx.ModelProto) -> list[str]:
    """The nodes of ``proto`` that compute in training mode: a ``BatchNormalization`` with
    ``training_mode=1`` (opset ≥ 14) or with its running-statistics outputs (opset < 14) —
    it normalizes by each batch's own statistics, so an image's output depends on the
    others in its batch — and a ``Dropout`` given a ``training_mode`` input that is not a
    constant false (an initializer or a ``Constant`` node)."""
    opset = next((o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS), 20)
    flags = {node.input[2] for node in proto.graph.node
             if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]}
    constants = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer
                 if t.name in flags}
    constants.update({node.output[0]: numpy_helper.to_array(a.t) for node in proto.graph.node
                      if node.op_type == "Constant" and node.output[0] in flags
                      for a in node.attribute if a.name == "value"})

    def trains(node: onnx.NodeProto) -> bool:
        if node.op_type == "BatchNormalization":
            return (any(a.name == "training_mode" and a.i for a in node.attribute) or
                    (opset < 14 and len([o for o in node.output if o]) > 1))
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            flag = node.input[2]
            return not (flag in constants and not constants[flag].any())
        return False

    return [node.name or node.output[0] for node in proto.graph.node if trains(node)]


def refuse_training_mode(proto: onnx.ModelProto, where: str) -> None:
    """A ``ConfigError`` naming the training-mode nodes of ``proto`` (``where``: its file),
    if it has any."""
    nodes = training_mode_nodes(proto)
    if not nodes:
        return
    kinds = {n.op_type for n in proto.graph.node if (n.name or n.output[0]) in nodes}
    why = "; ".join(part for kind, part in (
        ("BatchNormalization", "its BatchNorm would normalize each batch by the batch's own "
                               "statistics, so an image's output would depend on its batch"),
        ("Dropout", "its Dropout would drop units at random")) if kind in kinds)
    raise ConfigError(f"{where} is exported in training mode ({', '.join(nodes[:3])}"
                      f"{' …' * (len(nodes) > 3)}): {why}; export the model in inference mode "
                      "(in PyTorch: model.eval() and training=TrainingMode.EVAL)")


def run_bounded(session, outputs: list[str], feed: dict[str, np.ndarray],
                where: str) -> list[np.ndarray]:
    """``session.run(outputs, feed)`` in a worker thread: a ``KeyboardInterrupt`` or any
    other exception raised in the calling thread while it waits (SIGTERM's, in the CLI)
    terminates the run and is raised again; a run longer than ``limits.INFERENCE_SECONDS``
    is terminated and a ``ConfigError`` naming ``where``."""
    import onnxruntime

    options = onnxruntime.RunOptions()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["value"] = session.run(outputs, feed, options)
        except Exception as err:
            outcome["error"] = err

    worker = threading.Thread(target=work, name="onnxruntime", daemon=True)
    seconds = INFERENCE_SECONDS.value
    worker.start()
    try:
        worker.join(seconds)
    except BaseException:
        options.terminate = True
        worker.join(5)
        raise
    if worker.is_alive():
        options.terminate = True
        worker.join(5)
        raise LimitExceeded(
            f"{where}: onnxruntime ran for more than {seconds:,} s on "
            f"{len(next(iter(feed.values())))} images and was stopped; if you trust the model, "
            f"raise the limit with {INFERENCE_SECONDS.variable}={4 * seconds}")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def checked_rows(rows: np.ndarray, images: int, what: str) -> np.ndarray:
    """``rows`` as float64 ``(images, classes)`` class scores; another shape, or a NaN or
    infinite score, is a ``ConfigError`` starting with ``what`` (the file and output)."""
    rows = np.asarray(rows, np.float64)
    if rows.ndim != 2 or rows.shape[0] != images:
        raise ConfigError(f"{what} is {rows.shape} for {images} images, not one row of class "
                          "scores per image")
    if not np.isfinite(rows).all():
        raise ConfigError(f"{what} is not a number (NaN or infinite) for "
                          f"{int((~np.isfinite(rows).all(axis=1)).sum())} of {images} images; "
                          "the model is broken for these inputs")
    return rows
