"""A trained classifier from wherever it is: a run's member (run by bnlab), an ONNX file (run
by onnxruntime; any image classifier, ``export.onnx.load_classifier``) or a Keras 3 file
(read as data, ``export.keras_format``, run by bnlab). What ``bnlab predict`` and
``bnlab.predict`` run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnlab.config.experiment import ExperimentConfig
from bnlab.data.datasets import DATASETS
from bnlab.errors import ConfigError
from bnlab.export.exporter import onnx_module
from bnlab.export.trained import TrainedMember, trained_member

SUFFIXES = (".onnx", ".keras")


@dataclass(frozen=True)
class Classifier:
    """``probabilities``: images ``(n, 28, 28)`` float32 in [0, 1] → ``(n, classes)``; the
    names of its classes, the dataset it was trained on (``None``: unknown), how to name it
    (``label``) and, for a file bnlab did not write, how it was read (``note``)."""

    probabilities: Callable[[np.ndarray], np.ndarray]
    class_names: Sequence[str]
    dataset: str | None
    label: str
    note: str | None = None


def model_file_classifier(source: Path) -> Classifier:
    """The classifier in an ``.onnx`` or ``.keras`` file; any other file is a
    ``ConfigError``."""
    if source.suffix not in SUFFIXES:
        raise ConfigError(f"{source}: give a run folder, a .onnx or a .keras file"
                          + (" (a PyTorch export runs in PyTorch, by the .py beside it)"
                             if source.suffix == ".safetensors" else ""))
    default_names = list(DATASETS["fashion_mnist"].class_names)
    if source.suffix == ".onnx":
        loaded = onnx_module().load_classifier(source)
        note = (f"not written by bnlab; read as {loaded.note}" if loaded.note else None)
        return Classifier(loaded.probabilities, loaded.class_names or default_names, None,
                          source.name, note)
    from bnlab.export.keras_format import h5py_module, read_keras

    h5py_module()  # the extra is there, before the file is read (as data: nothing in it runs)
    ported = read_keras(source)
    return Classifier(_softmax(ported.model, ported.params, ported.bn_state), default_names,
                      None, source.name)


def run_classifier(run_dir: Path, config: ExperimentConfig, variant: str | None = None,
                   seed: int | None = None) -> Classifier:
    """A run's trained member (``export.trained``) as a classifier."""
    member: TrainedMember = trained_member(run_dir, config, variant, seed)
    return Classifier(_softmax(member.model, member.params, member.bn_state),
                      list(DATASETS[config.dataset].class_names), config.dataset,
                      f"{run_dir.name} {member.variant} seed {member.seed}")


def _softmax(model, params, bn_state) -> Callable[[np.ndarray], np.ndarray]:
    import jax

    return jax.jit(lambda x: jax.nn.softmax(model.apply(params, bn_state, x, train=False)[0]))
