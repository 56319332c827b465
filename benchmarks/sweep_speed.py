"""Seconds per member-epoch of the lr-robustness sweep, side by side in one invocation.

A member is one (model, learning rate, seed) of the preset: 3 models × 7 learning rates × 5
seeds = 105. Each repeat round times, one after another (so that a drift of the VM's speed
hits every row alike):

- **sweep**: bnlab as `bnlab sweep lr-robustness` trains it — one program per model, its 35
  members (7 learning rates as data × 5 seeds) in it; one epoch (training + validation)
  after compilation, ÷ 35;
- **separate**: a sample of the same members as separate one-seed bnlab programs, each with
  its learning rate as a constant (what a sweep tool that treats every member as its own
  trial runs); one epoch each;
- **keras**: a sample of members with the notebook's own Keras code, one after another
  (`engines/keras_notebook.py --learning-rate`, needs `.venv-keras`: `make bench-envs`);
- **F_shape**, **F_peak**: the NumPy floors of `floors.py` for one member-epoch: a batch-32
  step's matrix products timed alone × 1,719 (+ validation), and the epoch's matrix FLOPs at
  the rate of one 2048³ product.

The sweep and separate rows run in child processes of this script, so each reports its own
peak RSS (`ru_maxrss`). Prints a Markdown table and writes `results.json` to `--out`.

    .venv/bin/python benchmarks/sweep_speed.py --repeats 3 --out bench-out/sweep
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from epoch_speed import (  # this folder's module, found through the path set above
    REPO,
    machine_facts,
    run_json,
    write_data,
)

MODELS = ("baseline", "bn_after", "bn_before")


def time_sweep(model: str) -> dict:
    """One program of lr-robustness (``model``'s 35 members): compile, one epoch timed."""
    from bnlab.api import configure_jax

    configure_jax()
    from bnlab.config.files import load_experiment
    from bnlab.data.datasets import load_dataset
    from bnlab.experiments.sweep import programs
    from bnlab.io import cache_folder

    config = load_experiment("lr-robustness")
    (program,) = [p for p in programs(config) if p.points[0].variant == model]
    splits = load_dataset("fashion_mnist", cache_dir=cache_folder() / "datasets")
    trainer = program.trainer(splits)
    state = trainer.init_state()
    compile_seconds = trainer.compile(state)
    start = time.perf_counter()
    state, *_ = trainer.train_epoch(state, 0)
    trainer.evaluate(state, "val")  # blocks until the epoch is done
    seconds = time.perf_counter() - start
    return {"members": len(program.members), "epoch_seconds": seconds,
            "member_epoch_seconds": seconds / len(program.members),
            "compile_seconds": compile_seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def time_separate(model: str, learning_rates: list[float], seed: int) -> dict:
    """One-seed bnlab programs of ``model`` at each learning rate (a constant): one epoch each."""
    from bnlab.api import configure_jax

    configure_jax()
    import optax

    from bnlab.data.datasets import load_dataset
    from bnlab.io import cache_folder
    from bnlab.nn.zoo import get_model
    from bnlab.train.trainer import SeedBatchTrainer

    splits = load_dataset("fashion_mnist", cache_dir=cache_folder() / "datasets")
    seconds = []
    for learning_rate in learning_rates:
        trainer = SeedBatchTrainer(get_model(model), optax.sgd(learning_rate), batch_size=32,
                                   x_train=splits.x_train, y_train=splits.y_train,
                                   seeds=(seed,), evaluation={"val": (splits.x_val,
                                                                      splits.y_val)})
        state = trainer.init_state()
        trainer.compile(state)
        start = time.perf_counter()
        state, *_ = trainer.train_epoch(state, 0)
        trainer.evaluate(state, "val")
        seconds.append(time.perf_counter() - start)
    return {"member_epoch_seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(part: str, model: str, extra: list[str]) -> dict:
    """Run this script's ``--part`` in a fresh process (its own RSS, its own JAX)."""
    proc = subprocess.run([sys.executable, __file__, "--part", part, "--model", model, *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{part} {model}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def floors(threads: int, rounds: int, facts: dict) -> dict:
    extra = {"OPENBLAS_CORETYPE": "SkylakeX"} if facts["skylakex_kernels_ok"] else {}
    result, _ = run_json([str(REPO / ".venv/bin/python"), "benchmarks/floors.py", "--threads",
                          str(threads), "--rounds", str(rounds)], threads, 1800, False, extra)
    return result


def keras(model: str, learning_rate: float, data: Path, threads: int) -> float | None:
    python = REPO / ".venv-keras/bin/python"
    if not python.exists():
        return None
    result, _ = run_json([str(python), "benchmarks/engines/keras_notebook.py", "--model", model,
                          "--epochs", "1", "--data", str(data), "--threads", str(threads),
                          "--learning-rate", str(learning_rate)], threads, 1800, False)
    return result["epoch_seconds"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--separate-rates", default="0.001,0.1",
                        help="learning rates of the separate one-seed sample, per model")
    parser.add_argument("--keras-rates", default="0.001",
                        help="learning rates of the Keras sample, per model (one epoch each)")
    parser.add_argument("--floor-rounds", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("bench-out/sweep"))
    parser.add_argument("--part", choices=("sweep", "separate"), help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--rates", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "sweep":
        print(json.dumps(time_sweep(args.model)))
        return
    if args.part == "separate":
        print(json.dumps(time_separate(args.model, [float(r) for r in args.rates.split(",")],
                                       42)))
        return

    threads = len(os.sched_getaffinity(0))
    facts = machine_facts("cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npz"
        write_data(None, data)
        for repeat in range(args.repeats):
            row: dict = {"floors": floors(threads, args.floor_rounds, facts)}
            for model in MODELS:
                print(f"repeat {repeat + 1}/{args.repeats}: {model}", file=sys.stderr)
                row[model] = {
                    "sweep": child("sweep", model, []),
                    "separate": child("separate", model, ["--rates", args.separate_rates]),
                    "keras": [keras(model, float(r), data, threads)
                              for r in args.keras_rates.split(",")],
                }
            rounds.append(row)
    table = summary_table(rounds)
    (args.out / "results.json").write_text(json.dumps(
        {"machine": facts, "threads": threads, "rounds": rounds, "table": table}, indent=1))
    print(f"\nlr-robustness, seconds per member-epoch (training + validation), median of "
          f"{args.repeats} rounds; {facts['cpu']} ({facts['cpu_family_model_stepping']}), "
          f"{threads} threads, {facts['date']}\n")
    print("\n".join(table))


def summary_table(rounds: list[dict]) -> list[str]:
    """Markdown rows: per model, each row's median and its ratio to F_peak; peak RSS."""
    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    head = ("| s/member-epoch | sweep (35 members, one program) | separate one-seed bnlab | "
            "notebook Keras | F_shape | F_peak | sweep ÷ F_peak | Keras ÷ sweep | "
            "sweep peak RSS |")
    rows = [head, "|" + "---|" * 9]
    for model in MODELS:
        sweep = median([r[model]["sweep"]["member_epoch_seconds"] for r in rounds])
        separate = median([s for r in rounds for s in r[model]["separate"]
                           ["member_epoch_seconds"]])
        keras_s = median([k for r in rounds for k in r[model]["keras"]])
        f_shape = median([r["floors"]["models"][model]["f_shape"] for r in rounds])
        f_peak = median([r["floors"]["models"][model]["f_peak"] for r in rounds])
        rss = max(r[model]["sweep"]["peak_rss_mb"] for r in rounds)

        def f(x, digits=3):
            return "—" if x is None else f"{x:.{digits}f}"

        rows.append(f"| {model} | {f(sweep)} | {f(separate)} | {f(keras_s)} | {f(f_shape)} | "
                    f"{f(f_peak)} | {f(sweep / f_peak, 2)}× | "
                    f"{'—' if keras_s is None else f(keras_s / sweep, 1) + '×'} | "
                    f"{rss:.0f} MB |")
    return rows


if __name__ == "__main__":
    main()
