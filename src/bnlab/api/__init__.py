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
so. docs/api.md documents every function.
"""

from bnlab.api.deploy import Predictions, export_model, predict, recalibrate
from bnlab.api.models import Fitted, fit, model, summaries, summary
from bnlab.api.runs import Probed, probe, run, sweep
from bnlab.api.setup import check_data, configure_jax, load_fashion_mnist
from bnlab.api.stored import Report, compare, list_runs, load_run, plot_curves, show, write_report
from bnlab.io import cache_folder

__all__ = ["Fitted", "Predictions", "Probed", "Report", "cache_folder", "check_data", "compare",
           "configure_jax", "export_model", "fit", "list_runs", "load_fashion_mnist",
           "load_run", "model", "plot_curves", "predict", "probe", "recalibrate", "run",
           "show", "summaries", "summary", "sweep", "write_report"]
