"""Where does a training epoch's time go? XLA's own per-operation timings, grouped.

Compiles the training epoch that `bnlab run` uses (one `jax.jit`-compiled `lax.scan`, seeds
`vmap`-ped when --seeds > 1) with XLA's per-thunk trace events switched on
(`xla_cpu_enable_xprof_traceme`), runs one epoch after a warm-up under `jax.profiler.trace`,
reads the trace back with `jax.profiler.ProfileData`, and sums each compiled operation's time.
Every operation is put in one group by what the optimized HLO says it computes:

  matrix products  a `dot` (alone or inside a fusion), labelled by its shape, e.g.
                   `(32,784)·(784,300)`, and as forward / weight-grad / input-grad
  parameter update an elementwise fusion whose output has a parameter's shape (SGD's w − η·g)
  batch gather     the fusion that gathers a batch's rows and scales the pixels
  shuffle          the epoch's permutation (sort)
  copies           buffer copies XLA inserts inside the loop (e.g. a weight it cannot update
                   in place)
  other            BN statistics, activations, loss, masking, bookkeeping

and the table shows each group's µs per step and share of the summed operation time, with the
operations that cost most. The per-op times are measured with tracing on, which adds a little
to each event; the shares are what to read.

    .venv/bin/python benchmarks/profile_epoch.py --models baseline,bn_after --seeds 1
    .venv/bin/python benchmarks/profile_epoch.py --sweep lr-robustness   # a sweep's programs
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from jax.profiler import ProfileData
from rich.console import Console
from rich.table import Table

from bnlab.data.datasets import load_dataset
from bnlab.nn.zoo import get_model
from bnlab.train.engine import RunKeys, compiler_options, fixed, init_train_states, make_train_epoch
from bnlab.train.seeds import over_seeds

INSTRUCTION = re.compile(  # name, shape (an array or a tuple of arrays), op, the rest
    r"^\s*(?:ROOT )?%([\w.-]+) = (\([^)]*\)|\S+?\[[^\]]*\])\S* (\w[\w-]*)\((.*)$")
COMPUTATION = re.compile(r"^%?([\w.-]+) .*\{$")
TRACE = {"xla_cpu_enable_xprof_traceme": True}  # per-operation trace events


def parse_hlo(text: str) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """``({instruction: {shape, op, rest, computation}}, {computation: [instruction lines]})``
    from an optimized HLO module's text."""
    instructions, computations, current = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        if (match := COMPUTATION.match(line)) and "=" not in line.split("{")[0]:
            current = match.group(1)
            continue
        if match := INSTRUCTION.match(line):
            name, shape, op, rest = match.groups()
            instructions[name] = {"shape": shape, "op": op, "rest": rest, "computation": current}
            computations[current].append(line)
    return instructions, computations


def dot_label(line: str, shapes: dict[str, str], parameter_shapes: set[str]) -> str:
    """``"forward (32,784)·(784,300)"``: the product's role and operand shapes. A product whose
    result has a kernel's shape is a weight gradient; one with a kernel operand is a forward
    product when its result has the kernel's last (units) dimension, else an input gradient."""
    match = INSTRUCTION.match(line)
    operand_shapes = [shapes.get(o, "?") for o in re.findall(r"%([\w.-]+)", match.group(4))[:2]]
    dims = [tuple(re.findall(r"\d+", s.partition("[")[2])) for s in
            (*operand_shapes, match.group(2))]
    kernels = [d for d, s in zip(dims, operand_shapes, strict=False) if s in parameter_shapes]
    if match.group(2) in parameter_shapes:
        role = "weight-grad"
    elif kernels and dims[2][-1:] == kernels[0][-1:]:
        role = "forward"
    else:
        role = "input-grad"
    return f"{role} {'·'.join('(' + ','.join(d) + ')' for d in dims[:2])}"


def classify(name: str, instructions: dict[str, dict], computations: dict[str, list[str]],
             parameter_shapes: set[str]) -> tuple[str, str]:
    """``(group, label)`` of a traced operation ``name`` (see the module docstring)."""
    info = instructions.get(name)
    if info is None:
        return "other", name
    called = re.search(r"calls=%([\w.-]+)", info["rest"])
    body = computations.get(called.group(1), []) if called else []
    dots = [line for line in body if " dot(" in line]
    shapes = {key: value["shape"] for key, value in instructions.items()}
    if info["op"] == "dot":
        return "matrix products", dot_label(f"%{name} = {info['shape']} dot({info['rest']}",
                                            shapes, parameter_shapes)
    if dots:  # a fusion: the dot's operands are the fused computation's own instructions
        local = {m.group(1): m.group(2) for line in body if (m := INSTRUCTION.match(line))}
        return "matrix products", dot_label(dots[0], shapes | local, parameter_shapes)
    if info["op"] == "copy":
        return "copies", f"{name} {info['shape']}"
    if info["op"] == "sort" or any(" sort(" in line for line in body):
        return "shuffle", name
    if any(" gather(" in line for line in body):
        return "batch gather", f"{name} {info['shape']}"
    if info["shape"] in parameter_shapes and any(" multiply(" in line for line in body) \
            and not any(" reduce(" in line for line in body):
        return "parameter update", f"{name} {info['shape']}"
    return "other", name


def group_trace(trace_dir: Path, hlo_text: str, parameter_shapes: set[str]) -> dict:
    """Sum each traced operation of ``trace_dir``'s one epoch into its group (``classify``
    against the compiled program's optimized HLO ``hlo_text``): ``{"total_ns", "groups",
    "labels"}``."""
    [xplane] = trace_dir.rglob("*.xplane.pb")
    instructions, computations = parse_hlo(hlo_text)
    per_op: collections.Counter = collections.Counter()
    total_ns = 0
    for plane in ProfileData.from_file(str(xplane)).planes:
        for line in plane.lines:
            for event in line.events:
                if event.name.startswith("ThunkExecutor::Execute (wait"):
                    total_ns = max(total_ns, event.duration_ns)
                elif "Eigen" in line.name and not event.name.startswith(("ThunkExecutor",
                                                                          "Slinky", "while")):
                    per_op[event.name] += event.duration_ns
    groups: collections.Counter = collections.Counter()
    labels: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, ns in per_op.items():
        group, label = classify(name, instructions, computations, parameter_shapes)
        groups[group] += ns
        labels[group][label] += ns
    return {"total_ns": total_ns, "groups": groups, "labels": labels}


def shapes_of(params) -> set[str]:
    """HLO shape strings of ``params``' leaves, with and without their leading member axis
    (one member runs without it)."""
    return {f"f32[{','.join(map(str, shape))}]" for leaf in jax.tree_util.tree_leaves(params)
            for shape in (leaf.shape, leaf.shape[1:])}


def profile(model_name: str, seeds: int, x: jax.Array, y: jax.Array, workdir: Path) -> dict:
    """One epoch of ``seeds`` seeds of ``model_name`` in one program, traced and grouped."""
    model, optimizer = get_model(model_name), optax.sgd(1e-3)
    keys = RunKeys.for_seeds(range(seeds))
    state = init_train_states(fixed(model, optimizer), keys)
    shuffle, dropout = keys.epoch(0)
    epoch = over_seeds(make_train_epoch(fixed(model, optimizer), len(y), 32),
                       (0, None, None, None, None, 0, 0), seeds)
    compiled = jax.jit(epoch).lower(state, {}, True, x, y, shuffle, dropout).compile(
        compiler_options() | TRACE)
    jax.block_until_ready(compiled(state, {}, True, x, y, shuffle, dropout))  # warm-up
    trace_dir = workdir / f"{model_name}-{seeds}"
    with jax.profiler.trace(str(trace_dir)):
        jax.block_until_ready(compiled(state, {}, True, x, y, shuffle, dropout))
    result = group_trace(trace_dir, compiled.as_text(), shapes_of(state.params))
    return result | {"member_steps": seeds * -(-len(y) // 32),
                     "title": f"{model_name}, {seeds} seed(s)"}


def profile_program(preset: str, model_name: str, splits, workdir: Path) -> dict:
    """One epoch of the sweep ``preset``'s program of ``model_name`` (every member of it),
    as ``bnlab sweep`` trains it, traced and grouped."""
    from bnlab.config.files import load_experiment
    from bnlab.experiments.sweep import programs

    [program, *_] = [p for p in programs(load_experiment(preset))
                     if p.points[0].variant == model_name]
    trainer = program.trainer(splits, compiler_options=compiler_options() | TRACE)
    state = trainer.init_state()
    trainer.compile(state)
    state, *_ = trainer.train_epoch(state, 0)  # warm-up
    trace_dir = workdir / f"{preset}-{model_name}"
    with jax.profiler.trace(str(trace_dir)):
        state, *_ = trainer.train_epoch(state, 1)
    result = group_trace(trace_dir, trainer.epoch_program_text(), shapes_of(state.params))
    members = len(trainer.run_seeds)
    return result | {"member_steps": members * trainer.steps,
                     "title": f"{preset}, {model_name}: {program.describe()}, run as "
                              f"{members} members"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="baseline,bn_after,bn_before")
    parser.add_argument("--seeds", type=int, default=1, help="seeds in one program (vmap)")
    parser.add_argument("--sweep", metavar="PRESET",
                        help="profile this sweep preset's program of each model instead (every "
                             "member, spread over the CPU devices as bnlab sweep does)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/bnlab-bench-cache"))
    args = parser.parse_args()
    if args.sweep:
        from bnlab.api import configure_jax

        configure_jax()
    splits = load_dataset("fashion_mnist", cache_dir=args.cache_dir)
    x, y = jnp.asarray(splits.x_train), jnp.asarray(splits.y_train)
    console = Console(width=140)
    with tempfile.TemporaryDirectory() as workdir:
        for model_name in args.models.split(","):
            if args.sweep:
                result = profile_program(args.sweep, model_name, splits, Path(workdir))
            else:
                result = profile(model_name, args.seeds, x, y, Path(workdir))
            total, steps = result["total_ns"], result["member_steps"]
            busy = sum(result["groups"].values())
            table = Table(
                title=f"{result['title']}: one training epoch, {total / 1e9:.3f} s wall; "
                      f"operations {busy / 1e3 / steps:.0f} µs per member-step summed over "
                      "threads",
                caption="Independent operations run on both threads at once, so their sum can "
                        "exceed the wall time; shares are of the summed operation time.",
                title_justify="left", caption_justify="left")
            largest = "largest operations (µs/member-step)"
            for column in ("group", "µs/member-step", "share", largest):
                table.add_column(column, justify="left" if column in ("group", largest)
                                 else "right")
            for group, ns in result["groups"].most_common():
                top = "; ".join(f"{label} {value / 1e3 / steps:.1f}"
                                for label, value in result["labels"][group].most_common(4))
                table.add_row(group, f"{ns / 1e3 / steps:.1f}", f"{ns / busy:.0%}", top)
            console.print(table)


if __name__ == "__main__":
    main()
