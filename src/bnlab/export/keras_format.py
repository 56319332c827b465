"""Keras 3 ``.keras`` files read and written as the zip they are: ``config.json`` (the
architecture as JSON), ``metadata.json`` and ``model.weights.h5`` (HDF5 arrays under
``layers/<name>/vars/<i>``). Nothing is deserialized by Keras and no code runs: the config
is read as data, only the layer classes below are accepted (a ``Lambda`` or custom layer is
refused), and the arrays are read with h5py.

    Sequential of: InputLayer, Flatten, Dense, BatchNormalization, Activation, LeakyReLU,
    Dropout  ⇄  bnlab's Flatten, Dense, BatchNorm, Activation, LeakyReLU, Dropout

Keras's BatchNormalization *is* bnlab's default convention (momentum on the old value, ε,
biased stored variance), so its numbers carry over unchanged. Writing a bnlab BatchNorm of
another convention converts what Keras can express and says what it cannot
(``KerasFile.conversions``): PyTorch's momentum m on the new value is Keras's 1 − m; a
cumulative average has no Keras form (its momentum is written as 0.99); an unbiased stored
variance is kept as it is (inference uses the stored value in both), but Keras's training
updates it with the biased σ²_B from then on.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from bnlab.errors import BnlabError, ConfigError
from bnlab.io import parse_json, read_regular
from bnlab.limits import MODEL_BYTES, PARAMETERS
from bnlab.nn.batchnorm import BatchNorm, affine_parameters
from bnlab.nn.layers import Activation, Dense, Dropout, Flatten, LeakyReLU
from bnlab.nn.model import KERAS_TYPE_NAMES, Sequential

KERAS_VERSION = "3.6.0"  # the oldest Keras 3 the test extra allows; written in metadata.json
_LAYOUTS_HERE = {0, 1, 2}  # HDF5's H5D_COMPACT, H5D_CONTIGUOUS, H5D_CHUNKED (not H5D_VIRTUAL)
_BUILT_IN_FILTERS = {1, 2, 3, 5, 6}  # H5Z_FILTER_DEFLATE, SHUFFLE, FLETCHER32, NBIT, SCALEOFFSET


def h5py_module():
    """``h5py``, which reads and writes a ``.keras`` file's weights, or a ``ConfigError``
    saying how to install the ``keras`` extra."""
    try:
        import h5py
    except ImportError:
        raise ConfigError(".keras files need the keras extra (h5py is missing): pip install "
                          "'bnlab[keras]'") from None
    return h5py


class KerasFileError(BnlabError):
    """A ``.keras`` file bnlab cannot read, and why (one line)."""


@dataclass(frozen=True)
class KerasFile:
    """A Sequential read from (or written to) a ``.keras`` file: the bnlab ``model``, its
    ``params`` and ``bn_state`` (``None`` when read without weights), and one sentence per
    convention converted or not expressible (``conversions``)."""

    model: Sequential
    params: tuple[dict, ...] | None
    bn_state: tuple[dict, ...] | None
    conversions: tuple[str, ...] = ()


def read_keras(path: Path, *, weights: bool = True) -> KerasFile:
    """The Sequential in the ``.keras`` file at ``path`` as a bnlab model, with its weights
    unless not ``weights``; anything else is a one-line ``KerasFileError`` (or another
    ``BnlabError`` for the file itself). The file is data (module docstring), and no size
    in it is trusted: the file and each member it unzips are within ``limits.MODEL_BYTES``,
    the model within ``limits.PARAMETERS``, and each weight array's declared shape is
    checked before it is read (``_layer_vars``)."""
    path = Path(path)
    try:
        data = read_regular(path, limit=MODEL_BYTES)
    except FileNotFoundError:
        raise KerasFileError(f"{path}: no such file") from None
    except OSError as err:
        raise KerasFileError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            config = parse_json(_member(archive, "config.json", path).decode("utf-8"))
            weight_bytes = _member(archive, "model.weights.h5", path) if weights else None
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError) as err:
        raise KerasFileError(f"{path}: not a Keras 3 .keras file ({err})") from None
    model, layers_config = _model_of(path, config)
    if weight_bytes is None:
        return KerasFile(model, None, None)
    PARAMETERS.check(model.weight_bound, f"{path}: its model")
    params, bn_state = model.init(jax.random.key(0))
    params, bn_state = [dict(p) for p in params], [dict(s) for s in bn_state]
    h5py = h5py_module()
    try:
        with h5py.File(io.BytesIO(weight_bytes), "r") as weights_file:
            for index, (layer, name) in enumerate(zip(model.layers,
                                                      _weight_names(layers_config),
                                                      strict=True)):
                slots = [(params, "kernel"), (params, "bias")] if isinstance(layer, Dense) \
                    else [(params, "gamma"), (params, "beta"), (bn_state, "moving_mean"),
                          (bn_state, "moving_variance")] if isinstance(layer, BatchNorm) else []
                slots = [(tree, key) for tree, key in slots if key in tree[index]]
                stored = _layer_vars(path, weights_file, name,
                                     [tree[index][key].shape for tree, key in slots])
                for (tree, key), values in zip(slots, stored, strict=True):
                    tree[index][key] = values.astype(np.float32)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise KerasFileError(f"{path}: its model.weights.h5 cannot be read ({err})") from None
    return KerasFile(model, tuple(params), tuple(bn_state))


def _member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    """The member ``name`` of ``archive``, unzipped only when its declared size is within
    ``limits.MODEL_BYTES`` (``zipfile`` never unzips more than it declares)."""
    MODEL_BYTES.check(archive.getinfo(name).file_size, f"{path}: its {name}, unzipped,")
    return archive.read(name)


def _model_of(path: Path, config: object) -> tuple[Sequential, list[dict]]:
    """The bnlab Sequential a ``.keras`` file's ``config.json`` describes, and its list of
    layer entries; a config of any other form is a ``KerasFileError``."""
    if not isinstance(config, dict) or config.get("class_name") != "Sequential":
        found = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise KerasFileError(f"{path}: only a Keras Sequential model can be read, got "
                             f"{str(found)[:80]!r}")
    body = config.get("config")
    layers_config = body.get("layers") if isinstance(body, dict) else None
    if not isinstance(layers_config, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("config", {}), dict)
            for entry in layers_config):
        raise KerasFileError(f"{path}: its config.json lists no layers (a list of objects)")
    input_shape, layers = None, []
    for entry in layers_config:
        kind, options = entry.get("class_name"), entry.get("config") or {}
        if kind == "InputLayer":
            input_shape = _shape(options.get("batch_shape") or
                                 options.get("batch_input_shape"))
            continue
        layers.append(_bnlab_layer(path, str(kind), options))
    if not input_shape:
        built = layers_config[0].get("build_config") if layers_config else None
        input_shape = _shape(built.get("input_shape") if isinstance(built, dict) else None)
    if not input_shape:
        raise KerasFileError(f"{path}: its input shape is unknown (no InputLayer)")
    name = body.get("name", "sequential")
    try:
        return Sequential(tuple(layers), input_shape=input_shape,
                          name=name if isinstance(name, str) else "sequential"), layers_config
    except (BnlabError, ValueError, TypeError, OverflowError) as err:
        if isinstance(err, KerasFileError):
            raise
        raise KerasFileError(f"{path}: its layers do not fit together ({err})") from None


def _shape(batch_shape: object) -> tuple[int, ...] | None:
    """``(None, 28, 28)`` → ``(28, 28)``; anything but a list of a batch and positive whole
    numbers → ``None``."""
    if not isinstance(batch_shape, list) or len(batch_shape) < 2:
        return None
    dims = batch_shape[1:]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        return None
    return tuple(dims)


def _weight_names(layers_config: list) -> list[str]:
    """Where a Sequential's weights file keeps each layer's (``layers/<name>/vars``): Keras
    names them by class within the model (``dense``, ``dense_1``, ``batch_normalization``), not
    by the layers' own names, which count every layer the session made before."""
    seen: dict[str, int] = {}
    names = []
    for entry in layers_config:
        if entry.get("class_name") == "InputLayer":
            continue
        base = _snake_case(str(entry.get("class_name")))
        names.append(base if base not in seen else f"{base}_{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return names


def _snake_case(name: str) -> str:
    """Keras's ``to_snake_case``: ``BatchNormalization`` → ``batch_normalization``,
    ``LeakyReLU`` → ``leaky_re_lu``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_vars(path: Path, weights_file, name: str,
                shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """The arrays at ``layers/<name>/vars/0, 1, …``, each read only after its declared shape
    is found to be the one in ``shapes`` and it is found to be numbers stored in the file
    itself (``_stored_here``); a mismatch is a ``KerasFileError``."""
    group = weights_file
    for part in ("layers", name, "vars"):
        group = _stored_here(path, group, part) if group is not None else None
    keys = sorted(group, key=int) if group is not None else []
    if len(keys) != len(shapes):
        raise KerasFileError(f"{path}: layer {name} holds {len(keys)} weight arrays, its "
                             f"config needs {len(shapes)}")
    arrays = []
    for key, shape in zip(keys, shapes, strict=True):
        dataset = _stored_here(path, group, key)
        if dataset.shape != shape or dataset.dtype.kind not in "fiu":
            raise KerasFileError(f"{path}: layer {name} weight {key} is {dataset.shape} "
                                 f"{dataset.dtype}, its config needs {shape} numbers")
        arrays.append(np.asarray(dataset))
    return arrays


def _stored_here(path: Path, group, key: str):
    """``group[key]`` when it is a hard link (not a soft or external link to another place
    or file), and, for a dataset, stored in this file: contiguous, chunked or compact, not
    in external raw files or a virtual view of other files, with none but HDF5's built-in
    filters (a plug-in filter is code from elsewhere); ``None`` when absent; else a
    ``KerasFileError``."""
    h5py = h5py_module()
    link = group.get(key, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise KerasFileError(f"{path}: {group.name}/{key} is a {type(link).__name__}; bnlab "
                             "reads only what is stored in the file itself")
    item = group[key]
    if isinstance(item, h5py.Group):
        return item
    if not isinstance(item, h5py.Dataset):
        raise KerasFileError(f"{path}: {item.name} is not an array")
    plist = item.id.get_create_plist()
    filters = {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}
    if (item.external or plist.get_layout() not in _LAYOUTS_HERE
            or not filters <= _BUILT_IN_FILTERS):
        raise KerasFileError(f"{path}: {item.name} is stored outside the file (external "
                             "storage, a virtual dataset or a plug-in filter); bnlab reads "
                             "only arrays stored in the file itself")
    return item


def _bnlab_layer(path: Path, kind: str, options: dict):
    """The bnlab layer for one Keras layer's config; a class bnlab does not take (a Lambda,
    a custom layer) or an option it cannot honour is a ``KerasFileError``."""
    try:
        if kind == "Flatten":
            return Flatten()
        if kind == "Dense":
            return Dense(int(options["units"]), activation=options.get("activation", "linear"),
                         use_bias=bool(options.get("use_bias", True)))
        if kind == "BatchNormalization":
            if options.get("axis", -1) not in (-1, [-1], 1, [1]) or options.get("renorm"):
                raise KerasFileError(f"{path}: BatchNormalization {options.get('name')} "
                                     "normalizes another axis or uses renorm; bnlab reads the "
                                     "last axis without renorm")
            return BatchNorm(momentum=float(options.get("momentum", 0.99)),
                             epsilon=float(options.get("epsilon", 1e-3)),
                             center=bool(options.get("center", True)),
                             scale=bool(options.get("scale", True)))
        if kind == "Activation":
            return Activation(options["activation"])
        if kind == "LeakyReLU":
            return LeakyReLU(float(options.get("negative_slope", options.get("alpha", 0.3))))
        if kind == "Dropout":
            return Dropout(float(options["rate"]))
    except (KeyError, TypeError, ValueError, OverflowError, BnlabError) as err:
        if isinstance(err, KerasFileError):
            raise
        raise KerasFileError(f"{path}: layer {options.get('name')} ({kind}): {err}") from None
    raise KerasFileError(f"{path}: layer {options.get('name')} is a {kind}; bnlab reads "
                         "Flatten, Dense, BatchNormalization, Activation, LeakyReLU and Dropout "
                         "(no Lambda or custom layers: nothing in a file is run)")


def write_keras(path: Path, model: Sequential, params: tuple[dict, ...],
                bn_state: tuple[dict, ...]) -> KerasFile:
    """Write ``model`` with one member's ``params`` and ``bn_state`` as a Keras 3 ``.keras``
    file; returns what was written with the conventions converted (module docstring). A layer
    Keras has no class for (noisy BN, renorm, ghost BN, LayerNorm…) is a ``KerasFileError``."""
    names = model.layer_names
    layers = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
               "config": {"batch_shape": [None, *model.input_shape], "dtype": "float32",
                          "name": "input_layer"}}]
    conversions: list[str] = []
    weights: dict[str, list[np.ndarray]] = {}
    for layer, name, p, s in zip(model.layers, names, params, bn_state, strict=True):
        config, arrays = _keras_layer(layer, name, {k: np.asarray(v) for k, v in p.items()},
                                      {k: np.asarray(v) for k, v in s.items()}, conversions)
        layers.append({"module": "keras.layers", "class_name": KERAS_TYPE_NAMES[type(layer)][0],
                       "registered_name": None, "config": {"name": name, "trainable": True,
                                                           "dtype": "float32", **config}})
        weights[name] = arrays
    document = {"module": "keras", "class_name": "Sequential", "registered_name": None,
                "config": {"name": model.name, "trainable": True, "dtype": "float32",
                           "layers": layers}}
    buffer = io.BytesIO()
    with h5py_module().File(buffer, "w") as weights_file:
        weights_file.create_group("vars")
        for name, arrays in weights.items():
            group = weights_file.create_group(f"layers/{name}/vars")
            for i, values in enumerate(arrays):
                group.create_dataset(str(i), data=np.asarray(values, np.float32))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": KERAS_VERSION,
                                                      "date_saved": "bnlab"}))
        archive.writestr("config.json", json.dumps(document))
        archive.writestr("model.weights.h5", buffer.getvalue())
    from bnlab.io import atomic_write_bytes

    atomic_write_bytes(Path(path), out.getvalue())
    return KerasFile(model, params, bn_state, tuple(conversions))


def _keras_layer(layer, name: str, p: dict, s: dict, conversions: list[str]
                 ) -> tuple[dict, list[np.ndarray]]:
    if type(layer) is Flatten:
        return {"data_format": "channels_last"}, []
    if type(layer) is Dense:
        return ({"units": layer.units, "activation": layer.activation,
                 "use_bias": layer.use_bias},
                [p["kernel"]] + ([p["bias"]] if layer.use_bias else []))
    if type(layer) is Activation:
        return {"activation": layer.name}, []
    if type(layer) is LeakyReLU:
        return {"negative_slope": layer.negative_slope}, []
    if type(layer) is Dropout:
        return {"rate": layer.rate}, []
    if type(layer) is BatchNorm:
        momentum = layer.decay
        if layer.moving_average == "cumulative":
            momentum = 0.99
            conversions.append(f"{name}: a cumulative average has no Keras form; written with "
                               "momentum 0.99")
        elif layer.momentum_on == "new":
            conversions.append(f"{name}: momentum {layer.momentum:g} on the new value "
                               f"(PyTorch) is Keras's {momentum:g} on the old one")
        if layer.stored_variance == "unbiased":
            conversions.append(f"{name}: the stored unbiased variance is kept as it is "
                               "(inference uses it in both); Keras's training will update it "
                               "with the biased batch variance")
        gamma, beta = affine_parameters(p, s)
        arrays = ([gamma] if layer.scale else []) + ([beta] if layer.center else []) + [
            s["moving_mean"], s["moving_variance"]]
        return ({"axis": -1, "momentum": float(momentum), "epsilon": float(layer.epsilon),
                 "center": layer.center, "scale": layer.scale}, arrays)
    raise KerasFileError(f"{name} ({type(layer).__name__}) has no Keras layer; write a model "
                         "of Flatten, Dense, BatchNorm, Activation, LeakyReLU and Dropout")
