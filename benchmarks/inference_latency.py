"""Inference latency of a deployed model: bnlab's jitted inference against onnxruntime, each
with the model unfolded and with its BatchNorm folded (``nn.fold``), side by side in one
process.

The notebook's models with trained-like parameters (the shapes are what matter here), on real
test images: per image (batches of 1, the latency of one request) and per batch of 1,000
(throughput). Each round times every engine × form in turn, so a drift of the VM's speed hits
all alike; the table gives medians over the rounds, and each one's ratio to bnlab unfolded.
onnxruntime runs with its default threads (every core), as bnlab's XLA does.

    .venv/bin/python benchmarks/inference_latency.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bnlab.api import configure_jax


def timed(fn, rounds: int) -> float:
    """Seconds per call of ``fn`` over ``rounds`` calls, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="baseline,bn_after,bn_before")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--single", type=int, default=5000, help="batch-1 calls per timing")
    parser.add_argument("--batches", type=int, default=100, help="batch-1000 calls per timing")
    args = parser.parse_args()
    configure_jax()
    import jax
    import onnxruntime

    from bnlab.data.datasets import load_dataset
    from bnlab.export.onnx import to_onnx
    from bnlab.io import cache_folder
    from bnlab.nn.fold import fold_batchnorm
    from bnlab.nn.zoo import get_model

    splits = load_dataset("fashion_mnist", cache_dir=cache_folder() / "datasets")
    one = splits.x_test[:1].astype(np.float32) / 255.0
    thousand = splits.x_test[:1000].astype(np.float32) / 255.0
    print(f"jax {jax.__version__} on {jax.devices()}, onnxruntime {onnxruntime.__version__}")
    print("| model | engine | form | µs per image (batch 1) | ratio | ms per batch of 1,000 | "
          "ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = get_model(name)
        params, state = model.init(jax.random.key(0))
        folded = fold_batchnorm(model, params, state)
        forms = {"unfolded": (model, params, state),
                 "folded": (folded.model, folded.params, folded.bn_state)}
        calls = {}
        for form, (m, p, s) in forms.items():
            apply = jax.jit(lambda x, m=m, p=p, s=s: jax.nn.softmax(
                m.apply(p, s, x, train=False)[0]))
            calls["bnlab", form] = lambda x, apply=apply: apply(x).block_until_ready()
            session = onnxruntime.InferenceSession(to_onnx(m, p, s).SerializeToString(),
                                                   providers=["CPUExecutionProvider"])
            calls["onnxruntime", form] = lambda x, session=session: session.run(
                ["probabilities"], {"images": x})
        rounds = {key: ([], []) for key in calls}
        for _ in range(args.repeats):
            for key, call in calls.items():
                rounds[key][0].append(timed(lambda call=call: call(one), args.single))
                rounds[key][1].append(timed(lambda call=call: call(thousand), args.batches))
        base_single = statistics.median(rounds["bnlab", "unfolded"][0])
        base_batch = statistics.median(rounds["bnlab", "unfolded"][1])
        for (engine, form), (single, batch) in rounds.items():
            s, b = statistics.median(single), statistics.median(batch)
            print(f"| {name} | {engine} | {form} | {1e6 * s:.1f} | {s / base_single:.2f} | "
                  f"{1e3 * b:.2f} | {b / base_batch:.2f} |")


if __name__ == "__main__":
    main()
