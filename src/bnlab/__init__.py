"""bnlab: run, understand and compare Batch Normalization experiments.

The public API (``bnlab.api``, documented in ``docs/api.md``) and the building blocks a
notebook uses, importable from here. Names load on first use, so ``import bnlab`` is quick
and changes no global state: no Matplotlib backend, no JAX flag (``configure_jax`` sets
those, when called).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

try:
    __version__ = importlib.metadata.version("bnlab")
except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "unknown"

_EXPORTS = {
    # the workflows (bnlab.api): what every bnlab command runs
    **dict.fromkeys(("configure_jax", "load_fashion_mnist", "check_data", "model", "summary",
                     "summaries", "fit", "Fitted", "run", "sweep", "probe", "Probed",
                     "recalibrate", "export_model", "predict", "Predictions", "list_runs",
                     "load_run", "show", "compare", "plot_curves", "write_report", "Report"),
                    "bnlab.api"),
    "Recalibration": "bnlab.store.recalibrations", "Exported": "bnlab.export.exporter",
    "Observer": "bnlab.experiments.observer", "Overview": "bnlab.report.overview",
    # runs, experiments and data
    "Run": "bnlab.store.runs",
    "Damage": "bnlab.store.runs", "Divergence": "bnlab.train.history",
    "ExperimentConfig": "bnlab.config.experiment", "VariantConfig": "bnlab.config.experiment",
    "OptimizerConfig": "bnlab.config.optimizer", "load_experiment": "bnlab.config.files",
    "Splits": "bnlab.data.datasets", "History": "bnlab.train.history",
    "PairedComparison": "bnlab.analysis.stats", "ModelSummary": "bnlab.nn.summary",
    "cache_folder": "bnlab.io",
    # layers and models
    "Sequential": "bnlab.nn.model", "BatchNorm": "bnlab.nn.batchnorm",
    "Dense": "bnlab.nn.layers", "Flatten": "bnlab.nn.layers", "Activation": "bnlab.nn.layers",
    "LeakyReLU": "bnlab.nn.layers", "Dropout": "bnlab.nn.layers",
    "NoisyBatchNorm": "bnlab.nn.norms", "BatchRenorm": "bnlab.nn.norms",
    "GhostBatchNorm": "bnlab.nn.norms", "LayerNorm": "bnlab.nn.norms",
    "GroupNorm": "bnlab.nn.norms",
    # errors
    "BnlabError": "bnlab.errors", "ConfigError": "bnlab.errors", "DataError": "bnlab.errors",
    "BnlabWarning": "bnlab.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bnlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
