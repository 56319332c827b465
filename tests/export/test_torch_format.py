"""PyTorch export (``export.torch_format``) against real PyTorch: the written code builds an
``nn.Sequential``, loads the safetensors ``state_dict`` strictly, and gives bnlab's logits;
one training step in each gives the same moving statistics (PyTorch's conventions in bnlab).

Tolerance 1e-5 (float32 in both, another summation order), as in ``tests/nn``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnlab.export.torch_format import TorchExportError, write_torch
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Activation, Dense, Dropout, Flatten, LeakyReLU
from bnlab.nn.model import Sequential
from bnlab.nn.norms import LayerNorm
from bnlab.nn.zoo import get_model
from tests.nn.test_fold import trained_like

TOL = 1e-5


def loaded(monkeypatch, exported_dir, code: str):
    """Run the written code (bnlab's own output, the thing under test) where its file lies,
    as a user runs it; the module it builds."""
    monkeypatch.chdir(exported_dir)
    namespace: dict = {}
    exec(compile(code, "model.py", "exec"), namespace)
    return namespace["model"]


def images(rows=32, seed=0):
    return np.array(jax.random.uniform(jax.random.key(seed), (rows, 28, 28)), np.float32)


@pytest.mark.parametrize("name", ["baseline", "bn_after", "bn_before"])
def test_the_written_module_gives_bnlabs_logits(torch, tmp_path, monkeypatch, name):
    model = get_model(name)
    params, state = trained_like(model, 8)
    exported = write_torch(tmp_path / "model.safetensors", model, params, state)
    assert (tmp_path / "model.py").read_text() == exported.code
    module = loaded(monkeypatch, tmp_path, exported.code)  # load_state_dict is strict
    x = images()
    with torch.no_grad():
        theirs = module(torch.from_numpy(x)).numpy()
    ours, _ = model.apply(params, state, jnp.asarray(x), train=False)
    np.testing.assert_allclose(theirs, ours, rtol=TOL, atol=TOL)
    if name != "baseline":
        assert any("0.99 on the old value (Keras) is PyTorch's 0.01" in c
                   for c in exported.conversions)


@pytest.mark.slow
def test_the_written_code_runs_as_a_script_from_any_folder(torch, tmp_path):
    import subprocess
    import sys

    model = get_model("bn_before")
    exported_dir = tmp_path / "exported"
    write_torch(exported_dir / "model.safetensors", model, *trained_like(model, 3))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Run by its path from another folder, as a user runs it: the weights are found beside it.
    done = subprocess.run([sys.executable, str(exported_dir / "model.py")], cwd=elsewhere,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_one_training_step_in_each_gives_the_same_moving_statistics(torch, tmp_path,
                                                                   monkeypatch):
    model = Sequential((Flatten(), BatchNorm.pytorch(), Dense(32, use_bias=False),
                        BatchNorm.pytorch(momentum=None), Activation("relu"), Dropout(0.0),
                        Dense(16, activation="gelu"), BatchNorm.pytorch(center=False,
                                                                        scale=False),
                        LeakyReLU(0.1), Dense(10, activation="softmax")), input_shape=(28, 28))
    params, state = trained_like(model, 9)
    exported = write_torch(tmp_path / "m.safetensors", model, params, state)
    assert exported.conversions == ()  # PyTorch's conventions throughout
    module = loaded(monkeypatch, tmp_path, exported.code)
    x = images(64, seed=1)
    module.train()
    with torch.no_grad():
        module(torch.from_numpy(x))
    _, new_state = model.apply(params, state, jnp.asarray(x), train=True, key=jax.random.key(0))
    torch_bns = [m for m in module if isinstance(m, torch.nn.BatchNorm1d)]
    ours = [s for layer, s in zip(model.layers, new_state, strict=True)
            if isinstance(layer, BatchNorm)]
    for theirs, mine in zip(torch_bns, ours, strict=True):
        np.testing.assert_allclose(theirs.running_mean.numpy(), mine["moving_mean"],
                                   rtol=TOL, atol=TOL)
        np.testing.assert_allclose(theirs.running_var.numpy(), mine["moving_variance"],
                                   rtol=TOL, atol=TOL)
    assert int(torch_bns[1].num_batches_tracked) == int(ours[1]["num_batches_tracked"])


def test_a_layer_without_a_module_is_one_line(tmp_path):
    model = Sequential((Flatten(), LayerNorm(), Dense(10)), input_shape=(28, 28))
    with pytest.raises(TorchExportError, match="has no PyTorch module here"):
        write_torch(tmp_path / "m.safetensors", model, *model.init(jax.random.key(0)))
