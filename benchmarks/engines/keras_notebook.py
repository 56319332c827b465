"""Engine: the notebook's own tf.keras code (TensorFlow backend), timed epoch by epoch.

The three models are the notebook's cells 3, 8 and 22 verbatim except for two Keras 3 spellings:
`keras.Input(shape=[28, 28])` instead of `Flatten(input_shape=...)`, and `learning_rate=` instead
of the removed `lr=`. Training is the notebook's `model.fit` (batch 32, shuffled, validation on
the 5,000 held-out images, verbose=0); a callback times each epoch from `on_epoch_begin` to
`on_epoch_end`, which Keras calls after the validation pass, so the time includes validation.
Inputs are `x / 255.0` as in the notebook (float64 arrays, converted by Keras).
Run by epoch_speed.py with .venv-keras/bin/python; see protocol.py for the command line.
"""

from __future__ import annotations

import time

import numpy as np
import protocol
import tensorflow as tf

keras = tf.keras


def build(model: str) -> keras.Model:
    """The notebook's LAYERS, LAYERS_BN and LAYERS_BN_BIAS_FALSE."""
    if model == "baseline":
        layers = [
            keras.layers.Flatten(),
            keras.layers.Dense(300, kernel_initializer="he_normal"),
            keras.layers.LeakyReLU(),
            keras.layers.Dense(100, kernel_initializer="he_normal"),
            keras.layers.LeakyReLU(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    elif model == "bn_after":
        layers = [
            keras.layers.Flatten(),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    else:
        layers = [
            keras.layers.Flatten(),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(300, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Dense(100, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    return keras.models.Sequential([keras.Input(shape=[28, 28]), *layers])


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch, training plus the validation pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        logs = logs or {}
        protocol.log(f"keras epoch {epoch + 1}: {self.seconds[-1]:.2f} s  "
                     f"loss {logs.get('loss', float('nan')):.4f}  "
                     f"val_accuracy {logs.get('val_accuracy', float('nan')):.4f}")


def main() -> None:
    args = protocol.parse_args(__doc__.splitlines()[0])
    if args.seeds != 1:
        protocol.refuse("keras_notebook: trains one seed per process; run it once per seed "
                        "(--seeds 1).")
    if args.device != "cpu":
        protocol.refuse("keras_notebook: runs on the CPU only (its environment installs "
                        "tensorflow-cpu).")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    data = protocol.load_data(args.data)
    x_train, x_val = data["x_train"] / 255.0, data["x_val"] / 255.0
    y_train, y_val = data["y_train"], data["y_val"]

    # Seeds Python, NumPy and the backend (docs/reference.md#keras-defaults-that-matter-for-parity).
    keras.utils.set_random_seed(args.seed)
    model = build(args.model)
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=keras.optimizers.SGD(learning_rate=args.learning_rate),
                  metrics=["accuracy"])
    timer = EpochTimer()
    history = model.fit(x_train, y_train, epochs=args.epochs,
                        validation_data=(x_val, y_val), verbose=0, callbacks=[timer])
    protocol.emit(
        engine="keras", args=args, epoch_seconds=timer.seconds,
        history={key: [float(v) for v in history.history[key]]
                 for key in protocol.HISTORY_KEYS},
        versions={"tensorflow": tf.__version__, "keras": keras.__version__,
                  "numpy": np.__version__},
        device="cpu",
    )


if __name__ == "__main__":
    main()
