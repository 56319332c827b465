"""bnlab from Python: every workflow the ``bnlab`` command runs, as a function that returns
data (the command parses its arguments, calls one of these and renders the result).

    import bnlab
    bnlab.configure_jax()                       # optional: every CPU core, compilation cache
    data = bnlab.load_fashion_mnist()           # the real data, verified (Splits)
    model = bnlab.model("bn_after")             # or bnlab.Sequential([...]) of any layers
    bnlab.summary(model)                        # Keras's summary, as data; HTML in Jupyter
    history = bnlab.fit(model, data.x_train, data.y_train, epochs=10,
                        validation_data=(data.x_val, data.y_val))
    history.history["val_accuracy"]             # Keras's History.history
    run = bnlab.run("seed", seeds=5)            # a whole experiment into the run store
    bnlab.show(run)                             # what `bnlab show` prints, as data
    bnlab.compare(run)                          # the seed-paired verdicts, as data
    bnlab.export_model(run, fold=True)          # ONNX, checked by onnxruntime
    bnlab.predict(run, ["shoe.jpg"])            # top-3 classes of any image

Progress and events reach the caller through one ``Observer`` (``experiments.observer``):
by default the bars and lines ``report.progress`` draws (``verbose``); pass your own to
record them. Only ``configure_jax`` changes global state (JAX's configuration), and says
so. Names load on first use: reading runs (``list_runs``, ``load_run``, ``show``) never
imports JAX. docs/api.md documents every function.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "bnlab.api.setup": ("check_data", "configure_jax", "load_fashion_mnist"),
    "bnlab.api.models": ("Fitted", "fit"),
    "bnlab.api.model_info": ("model", "summaries", "summary"),
    "bnlab.api.runs": ("Probed", "probe", "run", "sweep"),
    "bnlab.api.deploy": ("Predictions", "export_model", "predict", "recalibrate"),
    "bnlab.api.stored": ("list_runs", "load_run", "show"),
    "bnlab.api.results": ("Report", "compare", "plot_curves", "write_report"),
    "bnlab.io": ("cache_folder",),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bnlab.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
