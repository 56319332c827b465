"""bnlab against Keras at a high learning rate, step by step from identical weights and batches.

The question (issue "Tried as a new user would", point 8): at SGD 0.1–1.0 bnlab's BN models
come out a little better and less spread across seeds than Keras's. Is a convention
different, or is the training chaotic, so that float rounding alone sends two faithful
implementations apart? For each of the notebook's models this script

1. initialises bnlab's model (seed ``--seed``), writes it as a `.keras` file
   (``export.keras_format.write_keras``) and draws one batch order of the 55,000 training
   images (batch 32, pixels / 255 in float32, the same arrays for everyone);
2. trains from those weights on those batches with plain SGD at ``--learning-rate``:
   - ``bnlab``: bnlab's training step (``train.engine.masked_loss``, optax SGD);
   - ``bnlab ±1e-7``: the same from the initial weights times ``1 + 1e-7·ε`` (ε = ±1 per
     weight): how far float32 rounding alone moves the trajectory;
   - ``bnlab clipped``: bnlab with Keras's cross-entropy of *probabilities* as its JAX
     backend computes it (``p / Σp`` clipped to [1e-7, 1 − 1e-7], then −log p_y: no
     gradient from a row whose p_y is clipped), against bnlab's cross-entropy of logits;
   - ``keras-jax`` / ``keras-tf``: Keras 3 itself, ``model.compile(SGD, "sparse_categorical_
     crossentropy")`` and ``train_on_batch`` batch after batch (``engines/keras_steps.py``),
     on its JAX backend (this environment) and on TensorFlow, the notebook's (``--tf-python``,
     ``.venv-keras`` from ``make bench-envs``);
3. prints, at checkpoints, each trajectory's distance from bnlab's, ‖θ − θ_bnlab‖ / ‖θ_bnlab‖
   over the trainable weights and over the moving statistics, each one's batch loss, the
   number of batch rows so far whose p_y fell below 1e-7 in bnlab (where the clipped loss
   gives no gradient), and the validation accuracy at the end.

    .venv/bin/python benchmarks/keras_fidelity.py --learning-rate 1.0 --steps 1718 \
        --tf-python .venv-keras/bin/python --out bench-out/keras-fidelity.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
ENGINE = REPO / "benchmarks" / "engines" / "keras_steps.py"
MODELS = ("baseline", "bn_after", "bn_before")
CLIP = 1e-7  # keras.backend.epsilon()


def keras_probability_loss(logits, y):
    """Keras 3's ``sparse_categorical_crossentropy(from_logits=False)`` on its JAX backend,
    given the softmax of ``logits``: ``p / Σp`` clipped to [1e-7, 1 − 1e-7], −log p_y."""
    import jax
    import jax.numpy as jnp

    p = jax.nn.softmax(logits, axis=-1)
    p = jnp.clip(p / jnp.sum(p, axis=-1, keepdims=True), CLIP, 1.0 - CLIP)
    return -jnp.take_along_axis(jnp.log(p), y[:, None], axis=-1)[:, 0]


def bnlab_trajectory(model, optimizer, params, bn_state, x, y, checkpoints, *,
                     clipped: bool = False):
    """Train from ``(params, bn_state)`` on the batches ``x, y``; returns each step's batch
    loss, the state before each checkpoint step, and the count of rows whose p_y < 1e-7."""
    import jax
    import jax.numpy as jnp
    import optax

    from bnlab.nn.fused import apply_training

    def loss(params, bn_state, xb, yb):
        logits, new_state = apply_training(model, params, bn_state, xb, mask=None, key=None)
        per_row = (keras_probability_loss(logits, yb) if clipped
                   else optax.softmax_cross_entropy_with_integer_labels(logits, yb))
        p_y = jnp.take_along_axis(jax.nn.softmax(logits), yb[:, None], axis=-1)[:, 0]
        return per_row.mean(), (new_state, jnp.sum(p_y < CLIP))

    @jax.jit
    def step(params, bn_state, opt_state, xb, yb):
        (value, (new_state, tiny)), grads = jax.value_and_grad(loss, has_aux=True)(
            params, bn_state, xb, yb)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, value, tiny

    opt_state = optimizer.init(params)
    losses, saved, tiny_rows = [], {}, 0
    for k in range(len(x)):
        if k in checkpoints:
            saved[k] = (params, bn_state, tiny_rows)
        params, bn_state, opt_state, value, tiny = step(params, bn_state, opt_state,
                                                        x[k], y[k])
        losses.append(float(value))
        tiny_rows += int(tiny)
    saved[len(x)] = (params, bn_state, tiny_rows)
    return np.asarray(losses), saved


def flat(tree) -> np.ndarray:
    import jax

    leaves = jax.tree_util.tree_leaves(tree)
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in leaves]) \
        if leaves else np.zeros(0)


def distance(a, b) -> float:
    """‖a − b‖ / ‖b‖ over every leaf (NaN where either is not finite)."""
    fa, fb = flat(a), flat(b)
    if fa.size == 0:
        return float("nan")
    return float(np.linalg.norm(fa - fb) / np.linalg.norm(fb))


def keras_trajectory(python: str, backend: str, model_file: Path, batches: Path, lr: float,
                     checkpoints: list[int], work: Path) -> tuple[np.ndarray, dict] | None:
    """``engines/keras_steps.py`` under ``python`` on ``backend``: its losses and the
    checkpoints read back by bnlab; ``None`` (with a note) when that Keras cannot run."""
    from bnlab.export.keras_format import read_keras

    out = work / f"{model_file.stem}-keras-{backend}"
    out.mkdir()
    env = os.environ | {"KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([python, str(ENGINE), str(model_file), str(batches), str(lr),
                             str(out), ",".join(map(str, checkpoints))],
                            env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"NOTE: keras-{backend} did not run ({python}): "
              f"{result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    versions = json.loads(result.stdout.strip().splitlines()[-1])
    states = {}
    for k in checkpoints:
        read = read_keras(out / f"step-{k}.keras")
        states[k] = (read.params, read.bn_state)
    return np.load(out / "losses.npy"), {"versions": versions, "states": states}


def accuracy(model, params, bn_state, x_val, y_val) -> float:
    import jax.numpy as jnp

    logits, _ = model.apply(params, bn_state, jnp.asarray(x_val), train=False)
    return float(np.mean(np.argmax(np.asarray(logits), axis=-1) == y_val))


def compare(name: str, args: argparse.Namespace, splits, work: Path) -> list[str]:
    import jax

    from bnlab.config.files import load_experiment
    from bnlab.export.keras_format import write_keras

    (point,) = [p for p in load_experiment("seed").points if p.name == name]
    model = point.build((28, 28))
    optimizer = point.optimizer.build(learning_rate=args.learning_rate)
    params, bn_state = model.init(jax.random.key(args.seed))
    order = np.random.default_rng(args.seed).permutation(len(splits.y_train))
    rows = order[: args.steps * 32].reshape(args.steps, 32)
    x = (splits.x_train[rows].astype(np.float32) / np.float32(255.0))
    y = splits.y_train[rows].astype(np.int32)
    x_val = splits.x_val.astype(np.float32) / np.float32(255.0)
    batches = work / f"{name}-batches.npz"
    np.savez(batches, x=x, y=y)
    model_file = work / f"{name}.keras"
    write_keras(model_file, model, params, bn_state)
    checkpoints = sorted({k for k in args.checkpoints if k < args.steps} | {args.steps})

    runs: dict[str, tuple[np.ndarray, dict]] = {}
    losses, saved = bnlab_trajectory(model, optimizer, params, bn_state, x, y, checkpoints)
    runs["bnlab"] = (losses, {k: v[:2] for k, v in saved.items()})
    tiny = {k: v[2] for k, v in saved.items()}
    sign = np.random.default_rng(args.seed + 1)
    nudged = jax.tree_util.tree_map(
        lambda a: np.asarray(a) * (1 + 1e-7 * sign.choice([-1.0, 1.0], np.shape(a))).astype(
            np.float32), params)
    losses, saved = bnlab_trajectory(model, optimizer, nudged, bn_state, x, y, checkpoints)
    runs["bnlab ±1e-7"] = (losses, {k: v[:2] for k, v in saved.items()})
    losses, saved = bnlab_trajectory(model, optimizer, params, bn_state, x, y, checkpoints,
                                     clipped=True)
    runs["bnlab clipped"] = (losses, {k: v[:2] for k, v in saved.items()})
    versions = {}
    for backend, python in (("jax", sys.executable), ("tensorflow", args.tf_python)):
        if python is None:
            continue
        got = keras_trajectory(python, backend, model_file, batches, args.learning_rate,
                               checkpoints, work)
        if got is not None:
            label = "keras-jax" if backend == "jax" else "keras-tf"
            runs[label] = (got[0], got[1]["states"])
            versions[label] = got[1]["versions"]

    pairs = [(label, "bnlab") for label in runs if label != "bnlab"] + [
        (label, "bnlab clipped") for label in ("keras-jax", "keras-tf") if label in runs]
    lines = [f"### {name}: SGD {args.learning_rate}, seed {args.seed}, {args.steps} steps "
             f"of batch 32 ({json.dumps(versions)})", "",
             "Distance between two trajectories, ‖θ_a − θ_b‖ / ‖θ_b‖ over the trainable "
             "weights (over the moving statistics in brackets, where the model has BN); the "
             "last column counts the batch rows so far whose p_y fell below 1e-7 in bnlab's "
             "trajectory.", "",
             "| before step | " + " | ".join(f"{a} − {b}" for a, b in pairs)
             + " | rows p_y < 1e-7 |",
             "|---|" + "---|" * len(pairs) + "---|"]
    for k in checkpoints:
        cells = []
        for a, b in pairs:
            mine, theirs = runs[a][1][k], runs[b][1][k]
            text = f"{distance(mine[0], theirs[0]):.2e}"
            if flat(theirs[1]).size:
                text += f" ({distance(mine[1], theirs[1]):.2e})"
            cells.append(text)
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {tiny[k]} |")
    lines += ["", "| trajectory | first step whose loss differs from bnlab's by > 1e-4 "
              "relative | mean batch loss, last 100 steps | validation accuracy at the end |",
              "|---|---|---|---|"]
    for label, (losses, states) in runs.items():
        apart = np.nonzero(~np.isclose(losses, runs["bnlab"][0], rtol=1e-4, atol=0))[0]
        final = states[args.steps]
        lines.append(f"| {label} | {apart[0] if apart.size else '—'} | "
                     f"{np.mean(losses[-100:]):.4f} | "
                     f"{accuracy(model, final[0], final[1], x_val, splits.y_val):.4f} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--learning-rate", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=1718,
                        help="full batches of 32 (1,718 in the 55,000 training images)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--checkpoints", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000])
    parser.add_argument("--tf-python", default=None,
                        help="an interpreter with TensorFlow and Keras 3 (make bench-envs: "
                             ".venv-keras/bin/python)")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()

    from bnlab.api import configure_jax

    configure_jax(cpu_devices=None)
    from bnlab.data.datasets import load_dataset
    from bnlab.io import cache_folder

    splits = load_dataset("fashion_mnist", cache_dir=cache_folder() / "datasets")
    lines, printed = [], 0
    with tempfile.TemporaryDirectory(prefix="bnlab-keras-fidelity-") as folder:
        for name in args.models.split(","):
            lines += compare(name, args, splits, Path(folder))
            print("\n".join(lines[printed:]), flush=True)
            printed = len(lines)
    text = "\n".join(lines)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
