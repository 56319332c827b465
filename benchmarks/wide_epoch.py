"""The wide first-layer product inside a real sweep epoch: members one by one vs per seed.

An experiment kept for the record (issue 13, point 3): `SeedBatchTrainer(share_batches=True)`
runs each seed's points of a sweep program together, vmapped inside the step, with the first
Dense kernel side by side as `(784, points, 300)`, so that the points' forward and
weight-gradient products become one `(32, 784) @ (784, 300·points)` product per seed. This
times one epoch of lr-robustness's program of each model (35 members) both ways, in fresh
child processes, round after round, and sums XLA's per-operation times of a traced epoch into
the groups of `profile_epoch.py` (matrix products, other, copies, …) per member-step.

    .venv/bin/python benchmarks/wide_epoch.py --repeats 2
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = ("baseline", "bn_after", "bn_before")


def one(model: str, share: bool) -> dict:
    """Compile the program of ``model``, time one epoch, trace another, group its ops."""
    from bnlab.api import configure_jax

    configure_jax()
    import jax
    from jax.profiler import ProfileData
    from profile_epoch import classify, parse_hlo

    from bnlab.config.experiment import load_experiment
    from bnlab.data.datasets import load_dataset
    from bnlab.experiments.sweep import programs
    from bnlab.io import cache_folder
    from bnlab.train.engine import compiler_options
    from bnlab.train.trainer import SeedBatchTrainer

    (program,) = [p for p in programs(load_experiment("lr-robustness"))
                  if p.points[0].variant == model]
    splits = load_dataset("fashion_mnist", cache_dir=cache_folder() / "datasets")
    first, input_shape = program.points[0], splits.x_train.shape[1:]
    trainer = SeedBatchTrainer(
        first.build(input_shape), first.optimizer.build(), batch_size=first.batch_size,
        x_train=splits.x_train, y_train=splits.y_train,
        seeds=[seed for _, seed in program.members], scalars=program.scalars(),
        bind=functools.partial(program.bind, input_shape=input_shape), share_batches=share,
        compiler_options=compiler_options() | {"xla_cpu_enable_xprof_traceme": True})
    state = trainer.init_state()
    trainer.compile(state)
    start = time.perf_counter()
    state, loss, *_ = trainer.train_epoch(state, 0)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as trace:
        with jax.profiler.trace(trace):
            state, *_ = trainer.train_epoch(state, 1)
        [xplane] = Path(trace).rglob("*.xplane.pb")
        per_op: collections.Counter = collections.Counter()
        for plane in ProfileData.from_file(str(xplane)).planes:
            for line in plane.lines:
                for event in line.events:
                    if "Eigen" in line.name and not event.name.startswith(
                            ("ThunkExecutor", "Slinky", "while")):
                        per_op[event.name] += event.duration_ns
    instructions, computations = parse_hlo(trainer._epoch.as_text())
    shapes = {f"f32[{','.join(map(str, shape))}]" for leaf in
              jax.tree_util.tree_leaves(state.params) for shape in (leaf.shape, leaf.shape[1:])}
    groups: collections.Counter = collections.Counter()
    for name, ns in per_op.items():
        groups[classify(name, instructions, computations, shapes)[0]] += ns
    member_steps = len(trainer.run_seeds) * trainer.steps  # padding members included
    return {"members": len(program.members), "run_members": len(trainer.run_seeds),
            "epoch_seconds": seconds, "first_loss": float(loss[0]),
            "us_per_member_step": {g: ns / 1e3 / member_steps for g, ns in groups.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        model, share = args.part.split(":")
        print(json.dumps(one(model, share == "1")))
        return
    results: dict = collections.defaultdict(list)
    for repeat in range(args.repeats):
        for model in args.models.split(","):
            for share in ("0", "1"):
                print(f"round {repeat + 1}: {model}, share_batches={share}", file=sys.stderr)
                proc = subprocess.run([sys.executable, __file__, "--part", f"{model}:{share}"],
                                      capture_output=True, text=True, check=True)
                results[model, share].append(json.loads(proc.stdout.splitlines()[-1]))
    print("| model | layout | s/member-epoch (median) | run members | µs per run-member step: "
          "products / other / copies | first epoch loss, member 0 |")
    print("|---|---|---|---|---|---|")
    for (model, share), rounds in results.items():
        groups = rounds[-1]["us_per_member_step"]
        print(f"| {model} | {'per seed, points vmapped' if share == '1' else 'members one by one'}"
              f" | {statistics.median(r['epoch_seconds'] / r['members'] for r in rounds):.3f} | "
              f"{rounds[-1]['run_members']} | {groups.get('matrix products', 0):.1f} / "
              f"{groups.get('other', 0):.1f} / {groups.get('copies', 0):.1f} | "
              f"{rounds[-1]['first_loss']:.6f} |")


if __name__ == "__main__":
    main()
