"""ONNX export (``export.onnx``) checked by ``onnx.checker`` and run by onnxruntime against
bnlab's own inference: the notebook's three models, folded and not, on the 10,000 real test
images, and random layer stacks with every exported layer type.

Tolerance: onnxruntime and XLA sum float32 products in different orders; on logits ≲ 30 the
difference is ≲ 1e-5, and on probabilities (in [0, 1]) ≲ 1e-6. A wrong layer (a missing ε,
a transposed kernel, γ and β swapped) is off by O(0.1) or more.
"""

from __future__ import annotations

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
