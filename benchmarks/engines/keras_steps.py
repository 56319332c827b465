"""Engine: Keras 3 trains a given `.keras` model step by step on given batches (for
benchmarks/keras_fidelity.py).

    KERAS_BACKEND=jax|tensorflow <python> benchmarks/engines/keras_steps.py MODEL.keras
        BATCHES.npz LEARNING_RATE OUT_DIR CHECKPOINTS

Loads MODEL.keras in safe mode, compiles it as the notebook does (`SGD(learning_rate)`,
`loss="sparse_categorical_crossentropy"`) and calls `train_on_batch` on each batch of
BATCHES.npz (float32 `x (steps, batch, 28, 28)` in [0, 1], int32 `y (steps, batch)`), in
order. Writes OUT_DIR/losses.npy (each step's batch loss, before its update) and, before the
steps named in CHECKPOINTS (comma-separated, 0-based; the number of steps for the end), the
model as OUT_DIR/step-<k>.keras. Prints one JSON line: the backend and versions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np


def main(model_file: str, batches_file: str, learning_rate: str, out: str,
         checkpoints: str) -> None:
    model = keras.saving.load_model(model_file, compile=False, safe_mode=True)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=float(learning_rate)),
                  loss="sparse_categorical_crossentropy")
    batches = np.load(batches_file)
    x, y = batches["x"], batches["y"]
    saves = {int(step) for step in checkpoints.split(",")}
    out_dir = Path(out)
    losses = []
    for step in range(len(x)):
        if step in saves:
            model.save(out_dir / f"step-{step}.keras")
        losses.append(float(model.train_on_batch(x[step], y[step])))
    if len(x) in saves:
        model.save(out_dir / f"step-{len(x)}.keras")
    np.save(out_dir / "losses.npy", np.asarray(losses))
    print(json.dumps({"backend": keras.backend.backend(), "keras": keras.__version__}))


if __name__ == "__main__":
    main(*sys.argv[1:])
