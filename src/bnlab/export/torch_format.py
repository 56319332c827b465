"""A bnlab model as a PyTorch ``nn.Sequential``: its ``state_dict`` saved as safetensors (no
pickle) and the Python that builds the module and loads it, written beside it.

    exported = write_torch(Path("model.safetensors"), model, params, bn_state)
    print(exported.code)          # nn.Sequential(...) and model.load_state_dict(...)

Layers: Flatten → ``nn.Flatten``; Dense → ``nn.Linear`` (weight = kernelᵀ) and its
activation's module (``nn.ReLU``, ``nn.Sigmoid``, ``nn.Tanh``, ``nn.ELU``, ``nn.SELU``,
``nn.GELU(approximate="tanh")`` as ``jax.nn.gelu``, ``nn.SiLU`` for swish; the last layer's
softmax is left out, as bnlab's ``apply`` does: the module returns logits, which
``nn.CrossEntropyLoss`` expects); BatchNorm → ``nn.BatchNorm1d``; LeakyReLU, Activation,
Dropout → their modules.

Conventions converted (``TorchFile.conversions`` says which applied): Keras's momentum m on
the old value is PyTorch's 1 − m on the new one; a cumulative average is ``momentum=None``
with its ``num_batches_tracked``; ε is kept. The stored variance is kept as it is (inference
uses it in both), but PyTorch's training updates it with the unbiased m/(m−1)·σ²_B, so a
biased (Keras) layer's moving variance trains differently from then on. A layer with only one
of γ, β gets the other as a constant (1 or 0) that PyTorch will train (``affine`` is both or
neither there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from bnlab.errors import BnlabError
from bnlab.io import atomic_write_bytes
from bnlab.nn.batchnorm import BatchNorm, affine_parameters
from bnlab.nn.layers import Activation, Dense, Dropout, Flatten, LeakyReLU
from bnlab.nn.model import Sequential

MODULES = {"relu": "nn.ReLU()", "sigmoid": "nn.Sigmoid()", "tanh": "nn.Tanh()",
           "elu": "nn.ELU()", "selu": "nn.SELU()", "gelu": 'nn.GELU(approximate="tanh")',
           "swish": "nn.SiLU()", "softmax": "nn.Softmax(dim=-1)"}


class TorchExportError(BnlabError):
    """A layer PyTorch export has no module for."""


@dataclass(frozen=True)
class TorchFile:
    """What ``write_torch`` wrote: the ``state_dict`` arrays by key, the ``code`` that loads
    them, and the conventions converted (``conversions``)."""

    state_dict: dict[str, np.ndarray]
    code: str
    conversions: tuple[str, ...]


def write_torch(path: Path, model: Sequential, params: tuple[dict, ...],
                bn_state: tuple[dict, ...]) -> TorchFile:
    """Write ``model`` with one member's ``params`` and ``bn_state`` as ``path`` (a
    safetensors ``state_dict``) and ``path`` with suffix ``.py`` (the code that builds the
    ``nn.Sequential`` and loads it); returns both and the conventions converted."""
    modules: list[str] = []
    state: dict[str, np.ndarray] = {}
    conversions: list[str] = []
    names = model.layer_names
    shapes = (model.input_shape, *model.output_shapes)
    last = len(model.layers) - 1
    for index, (layer, name) in enumerate(zip(model.layers, names, strict=True)):
        p = {k: np.asarray(v, np.float32) for k, v in params[index].items()}
        s = {k: np.asarray(v) for k, v in bn_state[index].items()}
        slot = str(len(modules))
        if type(layer) is Flatten:
            modules.append("nn.Flatten()")
        elif type(layer) is Dense:
            (features,) = shapes[index]
            modules.append(f"nn.Linear({features}, {layer.units}, bias={layer.use_bias})")
            state[f"{slot}.weight"] = np.ascontiguousarray(p["kernel"].T)
            if layer.use_bias:
                state[f"{slot}.bias"] = p["bias"]
            if layer.activation != "linear" and not (index == last
                                                     and layer.activation == "softmax"):
                modules.append(MODULES[layer.activation])
        elif type(layer) is Activation:
            modules.append(MODULES[layer.name])
        elif type(layer) is LeakyReLU:
            modules.append(f"nn.LeakyReLU({layer.negative_slope!r})")
        elif type(layer) is Dropout:
            modules.append(f"nn.Dropout({layer.rate!r})")
        elif type(layer) is BatchNorm:
            modules.append(_batchnorm(layer, name, s, slot, state, conversions, p))
        else:
            raise TorchExportError(f"{name} ({type(layer).__name__}) has no PyTorch module "
                                   "here; export a model of Flatten, Dense, BatchNorm, "
                                   "Activation, LeakyReLU and Dropout")
    code = "\n".join([
        "from pathlib import Path",
        "",
        "import torch",
        "from safetensors.torch import load_file",
        "from torch import nn",
        "",
        "# the weights lie beside this file (or in the working folder, for pasted code)",
        "HERE = Path(__file__).parent if \"__file__\" in globals() else Path.cwd()",
        "model = nn.Sequential(",
        *(f"    {module}," for module in modules),
        ")",
        f"model.load_state_dict(load_file(HERE / {str(Path(path).name)!r}))",
        "model.eval()  # inference: the moving statistics; model.train() for batch statistics",
        ""])
    atomic_write_bytes(Path(path), save(state))
    atomic_write_bytes(Path(path).with_suffix(".py"), code.encode())
    return TorchFile(state, code, tuple(conversions))


def _batchnorm(layer: BatchNorm, name: str, s: dict, slot: str, state: dict,
               conversions: list[str], p: dict) -> str:
    features = s["moving_mean"].shape[0]
    gamma, beta = affine_parameters(p, {k: v.astype(np.float32) for k, v in s.items()})
    affine = gamma is not None or beta is not None
    if (gamma is None) != (beta is None):
        conversions.append(f"{name}: PyTorch has γ and β or neither; the missing one is "
                           "written as a constant PyTorch will train")
    if affine:
        state[f"{slot}.weight"] = np.ones(features, np.float32) if gamma is None else gamma
        state[f"{slot}.bias"] = np.zeros(features, np.float32) if beta is None else beta
    state[f"{slot}.running_mean"] = s["moving_mean"].astype(np.float32)
    state[f"{slot}.running_var"] = s["moving_variance"].astype(np.float32)
    state[f"{slot}.num_batches_tracked"] = np.asarray(s.get("num_batches_tracked", 0),
                                                      np.int64)
    if layer.moving_average == "cumulative":
        momentum = "None"
    else:
        momentum = repr(round(1.0 - layer.decay, 12))
        if layer.momentum_on == "old":
            conversions.append(f"{name}: momentum {layer.momentum:g} on the old value (Keras) "
                               f"is PyTorch's {momentum} on the new one")
    if layer.stored_variance == "biased":
        conversions.append(f"{name}: the stored biased variance is kept as it is (inference "
                           "uses it in both); PyTorch's training will update it with the "
                           "unbiased batch variance")
    return (f"nn.BatchNorm1d({features}, eps={layer.epsilon!r}, momentum={momentum}"
            f"{'' if affine else ', affine=False'})")
