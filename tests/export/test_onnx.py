"""ONNX export (``export.onnx``) checked by ``onnx.checker`` and run by onnxruntime against
bnlab's own inference: the notebook's three models, folded and not, on the 10,000 real test
images, and random layer stacks with every exported layer type.

Tolerance: onnxruntime and XLA sum float32 products in different orders; on logits ≲ 30 the
difference is ≲ 1e-5, and on probabilities (in [0, 1]) ≲ 1e-6. A wrong layer (a missing ε,
a transposed kernel, γ and β swapped) is off by O(0.1) or more.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import onnx
import onnxruntime
import pytest

from bnlab.export.onnx import to_onnx
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.fold import fold_batchnorm
from bnlab.nn.layers import Activation, Dense, Dropout, Flatten, LeakyReLU
from bnlab.nn.model import Sequential
from bnlab.nn.norms import BatchRenorm, GhostBatchNorm, GroupNorm, LayerNorm
from bnlab.nn.zoo import get_model
from tests.nn.test_fold import trained_like

TOL = 1e-5


def run_onnx(proto: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    onnx.checker.check_model(proto, full_check=True)
    session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(["logits", "probabilities"],
                                        {"images": np.asarray(x, np.float32)})
    return logits, probabilities


def bnlab_outputs(model, params, state, x):
    logits, _ = jax.jit(lambda p, s, x: model.apply(p, s, x, train=False))(params, state, x)
    return np.asarray(logits), np.asarray(jax.nn.softmax(logits))


@pytest.mark.realdata
@pytest.mark.parametrize("fold", [False, True], ids=["unfolded", "folded"])
@pytest.mark.parametrize("name", ["baseline", "bn_after", "bn_before"])
def test_onnxruntime_equals_bnlab_on_the_10000_test_images(fashion_mnist, name, fold):
    model = get_model(name)
    params, state = trained_like(model, 5)
    x = fashion_mnist.x_test.astype(np.float32) / 255.0
    want_logits, want = bnlab_outputs(model, params, state, x)
    if fold:
        folded = fold_batchnorm(model, params, state)
        model, params, state = folded.model, folded.params, folded.bn_state
    logits, probabilities = run_onnx(to_onnx(model, params, state), x)
    assert probabilities.shape == (10_000, 10)
    np.testing.assert_allclose(probabilities, want, rtol=0, atol=TOL)
    np.testing.assert_allclose(logits, want_logits, rtol=TOL, atol=TOL)
    assert (probabilities.argmax(1) == want.argmax(1)).mean() > 0.999


STACK_LAYERS = (
    lambda r: Dense(6, activation=str(r.choice(["linear", "relu", "sigmoid", "tanh", "elu",
                                                 "selu", "gelu", "swish"])),
                    use_bias=bool(r.integers(2))),
    lambda r: BatchNorm(epsilon=float(r.choice([1e-3, 1e-5])), center=bool(r.integers(2)),
                        scale=bool(r.integers(2))),
    lambda r: BatchRenorm(),
    lambda r: GhostBatchNorm(virtual_batch_size=4),
    lambda r: LayerNorm(center=bool(r.integers(2))),
    lambda r: GroupNorm(groups=int(r.choice([1, 2, 3]))),
    lambda r: Activation(str(r.choice(["relu", "gelu", "softmax"]))),
    lambda r: LeakyReLU(float(r.uniform(0.01, 0.4))),
    lambda r: Dropout(0.5),
)


@pytest.mark.parametrize("seed", range(30))
def test_random_stacks_export_with_every_layer_type(seed):
    rng = np.random.default_rng(seed)
    body = [Dense(6)] + [STACK_LAYERS[int(rng.integers(len(STACK_LAYERS)))](rng)
                         for _ in range(int(rng.integers(2, 7)))]
    model = Sequential((Flatten(), *body, Dense(5, activation="softmax")), input_shape=(3, 4))
    params, state = trained_like(model, seed)
    x = rng.normal(0.0, 2.0, (32, 3, 4)).astype(np.float32)
    want_logits, want = bnlab_outputs(model, params, state, x)
    logits, probabilities = run_onnx(to_onnx(model, params, state), x)
    np.testing.assert_allclose(probabilities, want, rtol=0, atol=TOL)
    np.testing.assert_allclose(logits, want_logits, rtol=TOL, atol=TOL)


def test_the_graph_is_standard_operators_and_a_folded_bn_model_has_no_batchnorm():
    model = get_model("bn_before")
    params, state = trained_like(model, 6)
    ops = [n.op_type for n in to_onnx(model, params, state).graph.node]
    assert ops.count("BatchNormalization") == 3 and ops.count("Gemm") == 3
    folded = fold_batchnorm(model, params, state)
    ops = [n.op_type for n in to_onnx(folded.model, folded.params, folded.bn_state).graph.node]
    assert ops == ["Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm", "Identity", "Softmax"]


def torch_onnx_file(torch, tmp_path, monkeypatch, mode_name: str, batch_axis: bool = True,
                    opset: int | None = None):
    """bn_after ported to PyTorch (``write_torch``) and exported by PyTorch's own ONNX
    exporter in training or inference mode, for any batch size or (without ``batch_axis``)
    for batches of 2 only, at ``opset`` (default: the exporter's): a file not written by
    bnlab."""
    from bnlab.export.torch_format import write_torch
    from tests.export.test_torch_format import loaded

    model = get_model("bn_after")
    params, state = trained_like(model, 8)
    exported = write_torch(tmp_path / "model.safetensors", model, params, state)
    module = loaded(monkeypatch, tmp_path, exported.code)
    path = tmp_path / f"{mode_name}.onnx"
    with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, 28, 28),), str(path), dynamo=False,
                          training=getattr(torch.onnx.TrainingMode, mode_name),
                          input_names=["pixels"], output_names=["scores"],
                          dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}}
                          if batch_axis else None, opset_version=opset)
    return path, model, params, state


# Opset 13 marks a training BatchNorm by its running-statistics outputs, 14 on by an attribute.
@pytest.mark.parametrize("opset", [13, None], ids=["opset13", "default-opset"])
def test_a_model_exported_in_training_mode_is_refused_for_its_batch_dependent_outputs(
        torch, tmp_path, monkeypatch, opset):
    from bnlab.errors import ConfigError
    from bnlab.export.onnx import load_classifier
    from bnlab.export.onnx_checks import training_mode_nodes

    path, *_ = torch_onnx_file(torch, tmp_path, monkeypatch, "TRAINING", opset=opset)
    proto = onnx.load(path)
    assert len(training_mode_nodes(proto)) == 3  # bn_after's three BatchNorms
    # and in inference mode at the same opset, none
    eval_path, *_ = torch_onnx_file(torch, tmp_path, monkeypatch, "EVAL", opset=opset)
    assert training_mode_nodes(onnx.load(eval_path)) == []
    # Why it is refused: in training mode an image's output depends on its batch.
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((32, 28, 28), dtype=np.float32)
    (in_batch,), (alone,) = session.run(None, {"pixels": x})[0][:1], session.run(
        None, {"pixels": x[:1]})[0]
    assert np.abs(in_batch - alone).max() > 0.1
    with pytest.raises(ConfigError, match=r"TRAINING.onnx is exported in training mode "
                                          r"\(/1/BatchNormalization, .*\): its BatchNorm "
                                          "would normalize each batch by the batch's own "
                                          "statistics"):
        load_classifier(path)
    with pytest.raises(ConfigError, match="exported in training mode"):
        from bnlab.export.onnx import verify

        verify(proto, get_model("bn_after"), *trained_like(get_model("bn_after"), 8), x)


@pytest.mark.parametrize("batch_axis", [True, False], ids=["any-batch", "batch-of-2"])
def test_a_pytorch_export_in_inference_mode_is_read_by_its_own_names(torch, tmp_path,
                                                                     monkeypatch, batch_axis):
    from bnlab.export.onnx import load_classifier

    path, model, params, state = torch_onnx_file(torch, tmp_path, monkeypatch, "EVAL",
                                                 batch_axis)
    classifier = load_classifier(path)
    batch = "'n'" if batch_axis else "2"
    assert classifier.note == f"input pixels [{batch}, 28, 28], output scores as logits"
    assert classifier.class_names is None
    x = np.random.default_rng(1).random((63, 28, 28), dtype=np.float32)  # odd: one padded
    _, want = bnlab_outputs(model, params, state, x)  # the module's logits, softmax applied
    np.testing.assert_allclose(classifier.probabilities(x), want, rtol=0, atol=TOL)


def foreign_file(tmp_path, *, input_shape, outputs=("out",), softmax=False, dropout=None,
                 dropout_node=False, flat=False):
    """A hand-built ONNX classifier: images reshaped to ``input_shape``, one Gemm to 10
    classes (a softmax on it if asked; flattened to one axis if ``flat``), optionally a
    Dropout whose ``training_mode`` is the constant ``dropout``, an initializer or (with
    ``dropout_node``) a ``Constant`` node."""
    rng = np.random.default_rng(2)
    weights = {"w": rng.normal(size=(784, 10)).astype(np.float32),
               "shape": np.array([-1, 784], np.int64)}
    nodes = [onnx.helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             onnx.helper.make_node("Gemm", ["flat", "w"], ["gemm"])]
    last = "gemm"
    if dropout is not None:
        weights["ratio"] = np.array(0.5, np.float32)
        if dropout_node:
            nodes.append(onnx.helper.make_node("Constant", [], ["training"], value=(
                onnx.numpy_helper.from_array(np.array(dropout), "training"))))
        else:
            weights["training"] = np.array(dropout)
        nodes.append(onnx.helper.make_node("Dropout", [last, "ratio", "training"], ["dropped"]))
        last = "dropped"
    if softmax:
        nodes.append(onnx.helper.make_node("Softmax", [last], ["soft"], axis=-1))
        last = "soft"
    if flat:
        weights["line"] = np.array([-1], np.int64)
        nodes.append(onnx.helper.make_node("Reshape", [last, "line"], ["line_out"]))
        last = "line_out"
    nodes += [onnx.helper.make_node("Identity", [last], [name]) for name in outputs]
    graph = onnx.helper.make_graph(
        nodes, "foreign",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", *input_shape])],
        [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                            ["m"] if flat else ["n", 10]) for name in outputs],
        [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "foreign.onnx"
    onnx.save(proto, path)
    x = (rng.integers(0, 128, (8, 28, 28)) / 255).astype(np.float32)  # 8-bit, dark border
    logits = x.reshape(8, 784) @ weights["w"]
    return path, x, np.exp(logits - logits.max(1, keepdims=True)) / np.exp(
        logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)


@pytest.mark.parametrize("input_shape, softmax", [((784,), False), ((1, 28, 28), True)])
def test_a_foreign_classifier_of_784_values_gives_probabilities_from_logits_or_its_softmax(
        tmp_path, input_shape, softmax):
    from bnlab.export.onnx import load_classifier

    path, x, want = foreign_file(tmp_path, input_shape=input_shape, softmax=softmax)
    np.testing.assert_allclose(load_classifier(path).probabilities(x), want, rtol=1e-4,
                               atol=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"input_shape": (32, 32)}, r"needs one input of 784 values per image \(it has x "
                                r"\['n', 32, 32\]\)"),
    ({"input_shape": (784,), "outputs": ("a", "b")}, r"which output is the classes\? It "
                                                     "has a, b"),
    ({"input_shape": (784,), "dropout": True},
     r"exported in training mode \(dropped\): its Dropout would drop units at random;"),
    ({"input_shape": (784,), "dropout": True, "dropout_node": True},
     r"exported in training mode \(dropped\)"),
    ({"input_shape": (784,), "flat": True}, r"its output out is \(20,\) for 2 images, not "
                                            "one row of class scores per image"),
])
def test_a_foreign_file_bnlab_cannot_run_is_one_line(tmp_path, options, message):
    from bnlab.errors import ConfigError
    from bnlab.export.onnx import load_classifier

    path, *_ = foreign_file(tmp_path, **options)
    with pytest.raises(ConfigError, match=message):
        load_classifier(path)


@pytest.mark.parametrize("dropout_node", [False, True], ids=["initializer", "constant-node"])
def test_a_dropout_given_a_constant_false_training_mode_is_inference(tmp_path, dropout_node):
    from bnlab.export.onnx import load_classifier
    from bnlab.export.onnx_checks import training_mode_nodes

    path, x, want = foreign_file(tmp_path, input_shape=(784,), dropout=False,
                                 dropout_node=dropout_node)
    assert training_mode_nodes(onnx.load(path)) == []
    np.testing.assert_allclose(load_classifier(path).probabilities(x), want, rtol=1e-4,
                               atol=1e-6)  # the Dropout is the identity
