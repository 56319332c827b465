"""What recording costs: a training epoch with a probe plan ÷ the same epoch without, side by
side in one process.

For each model and seed count, three trainers of the same members are compiled: no probes
(``ProbePlan(every=0)``), the default plan (activation statistics every 500 steps on 256
validation rows), and the ``why`` preset's plan (the same plus Santurkar et al.'s measures
every 500 steps). Each round times one epoch of each, in turn, so a drift of the VM's
speed hits all three alike; the table gives each plan's median seconds per epoch and its
ratio to no probes (median of the rounds' own ratios, and their range). Issue 14's goal: the
default settings cost ≤ 10% of an epoch.

    .venv/bin/python benchmarks/probe_cost.py --seeds 1,5 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import optax

from bnlab.api import configure_jax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="baseline,bn_after,bn_before")
    parser.add_argument("--seeds", default="1,5", help="seed counts, each one program")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    configure_jax()
    from bnlab.config.files import load_experiment
    from bnlab.data.datasets import load_dataset
    from bnlab.io import cache_folder
    from bnlab.nn.zoo import get_model
    from bnlab.train.probes import ProbePlan
    from bnlab.train.trainer import SeedBatchTrainer

    splits = load_dataset("fashion_mnist", cache_dir=cache_folder() / "datasets")
    plans = {"none": ProbePlan(every=0), "default": ProbePlan(),
             "why": load_experiment("why").probe}
    print(f"plans: default {plans['default']}; why {plans['why']}")
    print("| model | seeds | s/epoch, no probes | default plan | ratio (range) | why plan | "
          "ratio (range) |")
    print("|---|---|---|---|---|---|---|")
    for model_name in args.models.split(","):
        for seeds in (int(s) for s in args.seeds.split(",")):
            trainers, states = {}, {}
            for name, plan in plans.items():
                trainer = SeedBatchTrainer(
                    get_model(model_name), optax.sgd(1e-3), batch_size=32,
                    x_train=splits.x_train, y_train=splits.y_train,
                    seeds=range(42, 42 + seeds), probe=plan,
                    probe_images=splits.x_val[:plan.rows] if plan.every else None)
                state = trainer.init_state()
                trainer.compile(state)
                states[name], *_ = trainer.train_epoch(state, 0)  # warm-up
                trainers[name] = trainer
            seconds: dict[str, list[float]] = {name: [] for name in plans}
            for repeat in range(args.repeats):
                for name, trainer in trainers.items():
                    start = time.perf_counter()
                    states[name], loss, *_ = trainer.train_epoch(states[name], repeat + 1)
                    float(loss[0])  # waits for the epoch
                    seconds[name].append(time.perf_counter() - start)
            ratios = {name: [s / n for s, n in zip(seconds[name], seconds["none"], strict=True)]
                      for name in ("default", "why")}

            def cell(name, ratios=ratios):
                values = ratios[name]
                return (f"{statistics.median(values):.3f} "
                        f"({min(values):.3f}–{max(values):.3f})")

            print(f"| {model_name} | {seeds} | {statistics.median(seconds['none']):.3f} | "
                  f"{statistics.median(seconds['default']):.3f} | {cell('default')} | "
                  f"{statistics.median(seconds['why']):.3f} | {cell('why')} |", flush=True)


if __name__ == "__main__":
    main()
