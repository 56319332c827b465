"""Seconds per model-epoch of the notebook's three models, every engine side by side in one run.

Each engine is a script in benchmarks/engines/ run by its own interpreter (protocol.py there
gives the command line and the one-line JSON result). This script writes the data once, as
bnlab's own loader finds, verifies and splits it (Fashion-MNIST's 60,000 training images: the
first 5,000 are validation), then for each repeat
measures the NumPy floors (floors.py) and runs every (model, engine) pair, the engines in a
rotated order, so that the machine's slow phases hit all engines alike. An engine's figure is
the median over repeats of its median epoch (epochs 2+; epoch 1 includes compilation and is
reported separately), with the spread of the repeats, per model: bnlab×N trains N seeds in one
program (--bnlab-seeds), "keras P×1thr" / "torch P×1thr" run P one-thread processes of the peer
at once, one per CPU (--side-by-side P); both count their epoch ÷ N (÷ P).

    .venv/bin/python benchmarks/epoch_speed.py --engines bnlab,keras,torch --epochs 4 \\
        --repeats 3 --threads 2 --torch-threads 1,2 --out bench-out

`--device gpu` runs the engines that have a GPU path (bnlab on JAX's CUDA backend, PyTorch on
CUDA) on the machine's first GPU instead; the floors are CPU floors and are then not measured.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bnlab.data.datasets import load_dataset
from bnlab.errors import BnlabError
from bnlab.io import cache_folder

REPO = Path(__file__).resolve().parents[1]
MODELS = ("baseline", "bn_after", "bn_before")
ENGINES = {  # name -> (interpreter, script), relative to the repository root
    "bnlab": (".venv/bin/python", "benchmarks/engines/bnlab_engine.py"),
    "keras": (".venv-keras/bin/python", "benchmarks/engines/keras_notebook.py"),
    "torch": (".venv-torch/bin/python", "benchmarks/engines/torch_eager.py"),
}
# OpenBLAS picks its kernels by CPU model; one it does not know (AMD family 26, Zen 5) falls back
# to "Haswell" (AVX2), half the AVX-512 rate XLA reaches. The floors then force its SkylakeX
# kernels, which need these flags.
SKYLAKEX_FLAGS = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
LOW_ACCURACY = 0.6  # after 2+ epochs every correct engine is above 0.75


@dataclasses.dataclass(frozen=True)
class Column:
    """One engine at one thread count, training ``seeds`` models per run: a column.

    ``processes > 1``: that many one-thread runs at once, each pinned to its own CPU and with
    its own seed (what a user of a framework without seed batching can do with the cores);
    ``threads`` is then their total and ``seeds`` equals ``processes``."""
    engine: str
    threads: int
    label: str
    seeds: int = 1
    processes: int = 1


# ---- data and machine ----------------------------------------------------------------------

def write_data(data_dir: Path | None, path: Path) -> None:
    """The notebook's split as the engines' npz: uint8 images, int32 labels, the first 5,000
    training images as validation, as `load_dataset` finds, verifies and splits them (in
    `data_dir` only when given, else the user cache, Debian's folder, then a download).
    A loading problem ends the script with its one-line message."""
    try:
        splits = load_dataset("fashion_mnist", data_dir=data_dir,
                              cache_dir=cache_folder() / "datasets")
    except BnlabError as err:
        flags = {"data_dir": "--data-dir"}  # the options this script has, as its flags
        raise SystemExit("error: " + err.render(
            lambda name, value: flags.get(name, name) + ("" if value is None else f" {value}")
        )) from None
    np.savez(path, x_train=splits.x_train, y_train=splits.y_train, x_val=splits.x_val,
             y_val=splits.y_val)


def gpu_names() -> str:
    """The machine's NVIDIA GPUs and driver, as nvidia-smi names them ("" without one)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return "; ".join(line.strip() for line in out.splitlines() if line.strip())


def machine_facts(device: str) -> dict:
    """The CPU, kernel, Python, load and device of this sitting, for results.json."""
    cpu: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            cpu.setdefault(key.strip(), value.strip())
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu.get("model name", platform.processor() or "unknown"),
        "cpu_family_model_stepping": "/".join(
            cpu.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "avx512f": "avx512f" in cpu.get("flags", "").split(),
        "skylakex_kernels_ok": SKYLAKEX_FLAGS.issubset(cpu.get("flags", "").split()),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg()[0],
        "device": device,
        "gpu": gpu_names() if device == "gpu" else "",
    }


# ---- running engines and floors -----------------------------------------------------------

def thread_env(threads: int, extra: dict[str, str]) -> dict[str, str]:
    """This environment with every BLAS / OpenMP thread count set to `threads`, plus `extra`."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env | extra


def pin(threads: int) -> Callable[[], None] | None:
    """Confine a child to `threads` CPUs when fewer than all, whatever its own thread settings.

    Engines' thread knobs are not all honoured (XLA sizes its CPU pool from the affinity mask,
    not from flags), so the mask is what makes "1 thread" mean one core for every engine.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if threads >= len(cpus):
        return None
    keep = set(cpus[-threads:])
    return lambda: os.sched_setaffinity(0, keep)


def run_json(cmd: list[str], threads: int, timeout: float, verbose: bool,
             extra_env: dict[str, str] | None = None) -> tuple[dict, str]:
    """Run a command, return (its last stdout line as JSON, stderr tail); raise on failure."""
    proc = subprocess.run(cmd, cwd=REPO, env=thread_env(threads, extra_env or {}),
                          preexec_fn=pin(threads), timeout=timeout, text=True,
                          stdout=subprocess.PIPE, stderr=None if verbose else subprocess.PIPE)
    return parse_output(proc.returncode, proc.stdout, proc.stderr)


def parse_output(returncode: int, stdout: str, stderr: str | None) -> tuple[dict, str]:
    """A finished engine's (last stdout line as JSON, stderr tail); raise on failure."""
    tail = "\n".join((stderr or "").strip().splitlines()[-8:])
    lines = stdout.strip().splitlines()
    if returncode != 0 or not lines:
        raise RuntimeError(f"exit status {returncode}\n{tail}")
    return json.loads(lines[-1]), tail


def run_json_side_by_side(cmds: list[list[str]], column: Column, model: str, epochs: int,
                          device: str, timeout: float, verbose: bool) -> tuple[dict, str]:
    """Run one-thread commands at once, the i-th pinned to the i-th CPU, each checked as a
    one-seed run; return one result whose epoch seconds are the runs' mean per epoch, with one
    history value per run. The runs start together but are not synchronised: with similar
    speeds their epochs 2+ overlap."""
    cpus = sorted(os.sched_getaffinity(0))
    procs = [subprocess.Popen(cmd, cwd=REPO, env=thread_env(1, {}), text=True,
                              preexec_fn=lambda cpu=cpu: os.sched_setaffinity(0, {cpu}),
                              stdout=subprocess.PIPE,
                              stderr=None if verbose else subprocess.PIPE)
             for cmd, cpu in zip(cmds, cpus, strict=False)]
    try:  # read every pipe at once, so that no run stalls on a full one
        with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
            outputs = list(pool.map(lambda p: p.communicate(timeout=timeout), procs))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    results, tails = [], []
    single = dataclasses.replace(column, threads=1, seeds=1, processes=1)
    for proc, (out, err) in zip(procs, outputs, strict=True):
        result, tail = parse_output(proc.returncode, out, err)
        check_result(result, single, model, epochs, device)
        results.append(result)
        tails.append(tail)
    merged = dict(results[0], seeds=len(results), threads=len(results))
    merged["epoch_seconds"] = np.mean([r["epoch_seconds"] for r in results], axis=0).tolist()
    merged["first_epoch_seconds"] = float(np.mean([r["first_epoch_seconds"] for r in results]))
    merged["history"] = {key: [list(values) for values in zip(
        *(r["history"][key] for r in results), strict=True)] for key in results[0]["history"]}
    return merged, "\n".join(tails)


def check_result(result: dict, column: Column, model: str, epochs: int, device: str) -> None:
    """Raise RuntimeError unless `result` is the run that was asked of the engine."""
    keys = {"engine", "model", "threads", "seeds", "device", "epoch_seconds",
            "first_epoch_seconds", "history", "versions"}
    if missing := keys - result.keys():
        raise RuntimeError(f"result lacks {sorted(missing)}")
    if result["model"] != model or len(result["epoch_seconds"]) != epochs:
        raise RuntimeError(f"result is for {result['model']} with "
                           f"{len(result['epoch_seconds'])} epochs, asked {model} × {epochs}")
    if int(result["seeds"]) != column.seeds:
        raise RuntimeError(f"engine trained {result['seeds']} seeds, asked {column.seeds}")
    if int(result["threads"]) != column.threads:
        raise RuntimeError(f"engine ran {result['threads']} threads, asked {column.threads}")
    if result["device"].partition(":")[0] != device:
        raise RuntimeError(f"engine ran on {result['device']}, asked {device}")


def final_val_accuracy(result: dict) -> float:
    """Validation accuracy after the last epoch (several seeds: their mean)."""
    last = result["history"]["val_accuracy"][-1]
    return float(np.mean(last))


def steady_epoch(result: dict) -> float:
    """Median seconds of epochs 2+ (the first includes compilation)."""
    return statistics.median(result["epoch_seconds"][1:])


# ---- summary ------------------------------------------------------------------------------

def fmt(x: float | None, digits: int = 2, suffix: str = "") -> str:
    """`x` with `digits` decimals and `suffix`; "—" for None."""
    return "—" if x is None else f"{x:.{digits}f}{suffix}"


def bnlab_columns(columns: list[Column], threads: int) -> list[Column]:
    """The bnlab columns at the main thread count: the table's "÷ bnlab…" ratios."""
    return [c for c in columns if c.engine == "bnlab" and c.threads == threads]


def header(columns: list[Column], threads: int) -> list[str]:
    """The table's column names."""
    return ["model", "engine", "thr", "s/model-epoch", "min–max", "epoch 1", "val_acc", "n",
            *(f"÷ {c.label}" for c in bnlab_columns(columns, threads)), "÷ F_shape", "÷ F_peak"]


def column_stats(runs: list[dict], col: Column, model: str) -> tuple | None:
    """(median, min, max s/model-epoch, median epoch 1, median val_accuracy, n) of the column's
    successful runs of `model`; None when it has none. A run of N seeds counts its epoch ÷ N."""
    ok = [r["result"] for r in runs
          if r["label"] == col.label and r["model"] == model and "result" in r]
    if not ok:
        return None
    epochs = [steady_epoch(r) / col.seeds for r in ok]
    return (statistics.median(epochs), min(epochs), max(epochs),
            statistics.median(r["first_epoch_seconds"] for r in ok) / col.seeds,
            statistics.median(final_val_accuracy(r) for r in ok), len(ok))


def column_row(model: str, col: Column, stats: dict[Column, tuple], references: list[Column],
               floor: dict[str, float]) -> list[str]:
    """One column's row: its figures, then its ratios to the bnlab columns and the floors."""
    if col not in stats:
        return [model, col.label, str(col.threads), "no result", *["—"] * 3, "0",
                *["—"] * (len(references) + 2)]
    med, lo, hi, first, acc, n = stats[col]
    ratios = [fmt(med / stats[ref][0] if ref in stats else None, 2, "×") for ref in references]
    return [model, col.label, str(col.threads), fmt(med), f"{lo:.2f}–{hi:.2f}", fmt(first, 1),
            f"{acc:.4f}", str(n), *ratios,
            fmt(med / floor["f_shape"] if floor else None, 2, "×"),
            fmt(med / floor["f_peak"] if floor else None, 2, "×")]


def floor_rows(model: str, floors: dict[int, list[dict]], n_references: int) -> list[list[str]]:
    """The rows of `model`'s floors, F_shape then F_peak at each thread count."""
    rows = []
    for t, fl in sorted(floors.items()):
        for key, name in (("f_shape", "F_shape"), ("f_peak", "F_peak")):
            values = [f["models"][model][key] for f in fl]
            if values:
                rows.append([model, name, str(t), fmt(statistics.median(values)),
                             f"{min(values):.2f}–{max(values):.2f}", "", "", str(len(values)),
                             *[""] * (n_references + 2)])
    return rows


def summarize(runs: list[dict], floors: dict[int, list[dict]], columns: list[Column],
              models: list[str], threads: int) -> list[list[str]]:
    """Rows of the table: per model, each engine column, then the floors at each thread count.
    Seconds are per model-epoch: a run of N seeds in one program counts its epoch ÷ N."""
    rows = []
    references = bnlab_columns(columns, threads)
    for model in models:
        stats = {col: s for col in columns if (s := column_stats(runs, col, model)) is not None}
        floor = {t: {key: statistics.median(f["models"][model][key] for f in fl)
                     for key in ("f_shape", "f_peak")} for t, fl in floors.items() if fl}
        rows += [column_row(model, col, stats, references, floor.get(col.threads, {}))
                 for col in columns]
        rows += floor_rows(model, floors, len(references))
    return rows


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """The table as GitHub Markdown, for table.md (and the console without rich)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(head: list[str], rows: list[list[str]], title: str) -> None:
    """The table on the console, boxed by rich when installed, one section per model."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        print(markdown_table(head, rows))
        return
    table = Table(title=title)
    for i, name in enumerate(head):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
    for i, row in enumerate(rows):
        first = i == 0 or rows[i - 1][0] != row[0]
        last = i + 1 == len(rows) or rows[i + 1][0] != row[0]
        table.add_row(row[0] if first else "", *row[1:], end_section=last)
    console = Console()
    # At its natural width, never cut to fit (a terminal or file 80–120 columns wide cut the
    # ratio columns to "÷ bn…"); a narrower terminal wraps the lines instead.
    width = console.measure(table, options=console.options.update_width(10_000)).maximum
    Console(width=max(width, console.width)).print(table)


# ---- command line -------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The command line; the options' order is the order of results.json's "args"."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="bnlab,keras,torch",
                        help=f"comma-separated, from {','.join(ENGINES)}")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=4, help="per run; at least 2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torch-threads", default=None,
                        help="e.g. 1,2: a torch column per thread count (default: --threads)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="where the engines train (gpu: engines with a CUDA path; no floors)")
    parser.add_argument("--bnlab-seeds", default="1,5,10",
                        help="a bnlab column per seed count: N seeds of a model in one program "
                             "(as `bnlab seed --seeds N` trains them), timed per model-epoch")
    parser.add_argument("--side-by-side", type=int, default=0, metavar="P",
                        help="also a column per peer engine running P one-thread processes at "
                             "once, one per CPU, each its own seed, timed per model-epoch "
                             "(a peer's way to use every core for independent seeds)")
    parser.add_argument("--floor-rounds", type=int, default=40)
    parser.add_argument("--floor-coretype", default="auto",
                        help="OPENBLAS_CORETYPE for the floors' NumPy; auto: SkylakeX (AVX-512) "
                             "where the CPU has it; inherit: this environment's setting")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="read Fashion-MNIST's .gz files from here only (default: bnlab's "
                             "search: the user cache, /usr/share/datasets/fashion-mnist, then "
                             "a verified download)")
    parser.add_argument("--python", action="append", default=[], metavar="ENGINE=PATH",
                        help="use another interpreter for an engine")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per engine run")
    parser.add_argument("--out", type=Path, help="write results.json and table.md here")
    parser.add_argument("--verbose", action="store_true", help="show the engines' stderr")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Split the list options and check them all; the first bad one ends the script."""
    args.engines = args.engines.split(",")
    args.models = args.models.split(",")
    if unknown := [e for e in args.engines if e not in ENGINES]:
        parser.error(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    if unknown := [m for m in args.models if m not in MODELS]:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: epoch 1 includes compilation")
    try:
        args.bnlab_seeds = sorted({int(n) for n in args.bnlab_seeds.split(",")})
    except ValueError:
        parser.error(f"--bnlab-seeds {args.bnlab_seeds!r}: give seed counts like 1,5")
    if min(args.bnlab_seeds) < 1:
        parser.error("--bnlab-seeds: every seed count must be at least 1")
    if args.side_by_side == 1 or args.side_by_side < 0:
        parser.error("--side-by-side P: P is at least 2 (0, the default, turns it off)")
    if args.side_by_side and args.device == "gpu":
        parser.error("--side-by-side pins one-thread runs to CPUs; it has no GPU form")
    if args.side_by_side > len(os.sched_getaffinity(0)):
        parser.error(f"--side-by-side {args.side_by_side}: this process may use only "
                     f"{len(os.sched_getaffinity(0))} CPUs")


def parse_args() -> argparse.Namespace:
    """The checked command line."""
    parser = build_parser()
    args = parser.parse_args()
    check_args(parser, args)
    return args


def make_columns(args: argparse.Namespace, notes: list[str]) -> tuple[list[Column], dict]:
    """The engine × thread-count columns that can run here, and their interpreters."""
    pythons = {name: REPO / py for name, (py, _) in ENGINES.items()}
    for item in args.python:
        name, _, path = item.partition("=")
        pythons[name] = Path(path)
    columns = []
    for name in args.engines:
        script = REPO / ENGINES[name][1]
        if not script.exists():
            notes.append(f"skipped {name}: {script.relative_to(REPO)} does not exist yet")
            continue
        if not pythons[name].exists():
            notes.append(f"skipped {name}: no interpreter {pythons[name]} "
                         "(run `make bench-envs`, or `make` for .venv)")
            continue
        counts = [args.threads]
        if name == "torch" and args.torch_threads:
            counts = [int(t) for t in args.torch_threads.split(",")]
        seed_counts = args.bnlab_seeds if name == "bnlab" else [1]
        for t in counts:
            for n in seed_counts:
                label = (name + ("" if t == args.threads else f"@{t}")
                         + ("" if n == 1 else f"×{n}"))
                columns.append(Column(name, t, label, n))
        if name != "bnlab" and args.side_by_side > 1:
            p = args.side_by_side
            columns.append(Column(name, p, f"{name} {p}×1thr", p, processes=p))
    return columns, pythons


# ---- one sitting --------------------------------------------------------------------------

def floor_thread_counts(args: argparse.Namespace, columns: list[Column],
                        notes: list[str]) -> list[int]:
    """The thread counts to measure the floors at: one thread always (on these VMs the stable
    anchor, see docs/reference.md), --threads and every column's. The floors are CPU floors:
    a GPU sitting has none, and says so in a note."""
    if args.device == "gpu":
        notes.append("--device gpu: F_shape and F_peak are CPU floors and were not measured")
        return []
    return sorted({1, args.threads} | {c.threads for c in columns})


def floor_environment(args: argparse.Namespace, machine: dict, notes: list[str]) -> dict:
    """The floors' extra environment (OPENBLAS_CORETYPE, noted when set).

    The floors are the machine's best case, so they use the AVX-512 kernels the engines' own
    GEMMs use, even where the environment pins OpenBLAS to AVX2 ones (OPENBLAS_CORETYPE=Haswell
    on this project's VMs) or OpenBLAS does not recognise the CPU. Only the floors see this.
    """
    floor_env = {}
    if args.floor_coretype == "auto" and machine["skylakex_kernels_ok"]:
        floor_env["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif args.floor_coretype not in ("auto", "inherit"):
        floor_env["OPENBLAS_CORETYPE"] = args.floor_coretype
    if floor_env:
        notes.append(f"floors ran with OPENBLAS_CORETYPE={floor_env['OPENBLAS_CORETYPE']} "
                     f"(environment: {os.environ.get('OPENBLAS_CORETYPE', 'unset')}; "
                     "--floor-coretype inherit keeps the environment's)")
    return floor_env


def measure_floors(threads: int, rep: int, args: argparse.Namespace, floor_env: dict) -> dict:
    """One run of floors.py on `threads` threads, and its status line."""
    cmd = [sys.executable, str(REPO / "benchmarks/floors.py"), "--threads", str(threads),
           "--models", ",".join(args.models), "--rounds", str(args.floor_rounds)]
    floor = run_json(cmd, threads, args.timeout, args.verbose, floor_env)[0]
    print(f"[{rep + 1}/{args.repeats}] floors, {threads} thread(s): peak "
          f"{floor['peak_gflops']:.0f} GFLOP/s", file=sys.stderr)
    return floor


def engine_commands(col: Column, model: str, args: argparse.Namespace, data: Path,
                    pythons: dict) -> list[list[str]]:
    """The command line of each of the column's processes for one run of `model`."""
    return [[str(pythons[col.engine]), ENGINES[col.engine][1], "--model", model,
             "--epochs", str(args.epochs), "--seed", str(args.seed + i), "--data", str(data),
             "--threads", str(col.threads // col.processes),
             "--seeds", str(col.seeds // col.processes), "--device", args.device]
            for i in range(col.processes)]


def run_engine(cmds: list[list[str]], col: Column, model: str,
               args: argparse.Namespace) -> dict:
    """Run the column's command(s) and return the checked result; raise on failure."""
    if col.processes == 1:
        result, _ = run_json(cmds[0], col.threads, args.timeout, args.verbose)
    else:
        result, _ = run_json_side_by_side(cmds, col, model, args.epochs, args.device,
                                          args.timeout, args.verbose)
    check_result(result, col, model, args.epochs, args.device)
    return result


def result_status(result: dict, col: Column, model: str, rep: int, notes: list[str]) -> str:
    """A finished run's status line; a note when it trained too poorly to be correct."""
    acc = final_val_accuracy(result)
    if acc < LOW_ACCURACY:
        notes.append(f"{col.label} {model} repeat {rep + 1}: val_accuracy "
                     f"{acc:.4f} — this engine does not train correctly")
    return (f"{steady_epoch(result):.2f} s/epoch (epoch 1 "
            f"{result['first_epoch_seconds']:.1f} s), val_accuracy {acc:.4f}")


def run_one(col: Column, model: str, rep: int, args: argparse.Namespace, data: Path,
            pythons: dict, notes: list[str]) -> dict:
    """One engine run of `model` for column `col`: its record for results.json (its result,
    or its error and a note), with its status line printed."""
    cmds = engine_commands(col, model, args, data, pythons)
    run = {"repeat": rep, "label": col.label, "engine": col.engine, "threads": col.threads,
           "model": model, "command": " & ".join(map(shlex.join, cmds))}
    start = time.perf_counter()
    try:
        run["result"] = run_engine(cmds, col, model, args)
        status = result_status(run["result"], col, model, rep, notes)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as err:
        run["error"] = str(err)
        status = f"FAILED: {err}"
        notes.append(f"{col.label} {model} repeat {rep + 1} failed: {str(err).splitlines()[0]}")
    run["wall_seconds"] = time.perf_counter() - start
    print(f"[{rep + 1}/{args.repeats}] {col.label:9} {model:9} {status} "
          f"[{run['wall_seconds']:.0f} s]", file=sys.stderr)
    return run


def rotated(columns: list[Column], rep: int) -> list[Column]:
    """The columns rotated left by `rep`, so that each repeat starts with another one."""
    if not columns:
        return []
    k = rep % len(columns)
    return columns[k:] + columns[:k]


def run_sitting(args: argparse.Namespace, columns: list[Column], pythons: dict,
                thread_counts: list[int], floor_env: dict,
                notes: list[str]) -> tuple[dict[int, list[dict]], list[dict]]:
    """Write the data, then per repeat measure the floors and run every (model, column) pair,
    the columns in rotated order. Returns (the floors by thread count, the runs)."""
    runs: list[dict] = []
    floors: dict[int, list[dict]] = {t: [] for t in thread_counts}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "fashion_mnist_split.npz"
        write_data(args.data_dir, data)
        for rep in range(args.repeats):
            for t in thread_counts:
                floors[t].append(measure_floors(t, rep, args, floor_env))
            for model in args.models:
                for col in rotated(columns, rep):
                    runs.append(run_one(col, model, rep, args, data, pythons, notes))
    return floors, runs


# ---- report -------------------------------------------------------------------------------

def engine_versions(runs: list[dict], floors: dict[int, list[dict]]) -> dict[str, dict]:
    """Each engine's versions, from its first result, then the floors' NumPy and BLAS."""
    versions = {}
    for run in runs:
        if "result" in run:
            versions.setdefault(run["engine"], run["result"]["versions"])
    for fl in floors.values():
        if fl:
            versions.setdefault("floors (NumPy)", fl[0]["versions"])
    return versions


def facts_lines(args: argparse.Namespace, machine: dict, floors: dict[int, list[dict]],
                runs: list[dict]) -> list[str]:
    """The lines under the table: CPU and load, GPU (a GPU sitting), sgemm peak, versions."""
    lines = [f"CPU: {machine['cpu']} (family/model/stepping "
             f"{machine['cpu_family_model_stepping']}, AVX-512 "
             f"{'yes' if machine['avx512f'] else 'no'}), {machine['cores']} cores; load average "
             f"{machine['loadavg_start']:.2f} → {machine['loadavg_end']:.2f}"]
    if args.device == "gpu":
        devices = ", ".join(sorted({r["result"]["device"] for r in runs if "result" in r}))
        lines.append(f"GPU: {machine['gpu'] or 'nvidia-smi found none'}; engines ran on "
                     + (devices or "nothing"))
    peak = {t: statistics.median(f["peak_gflops"] for f in fl) for t, fl in floors.items() if fl}
    if peak:
        lines.append("2048³ sgemm: " + ", ".join(f"{g:.0f} GFLOP/s on {t} thread(s)"
                                                for t, g in peak.items()))
    lines += [f"{name}: " + ", ".join(f"{k} {v}" for k, v in ver.items())
              for name, ver in engine_versions(runs, floors).items()]
    return lines


def table_title(args: argparse.Namespace) -> str:
    """The table's title: what its seconds are."""
    return (f"s/model-epoch, median over {args.repeats} repeat(s) of the median of epochs "
            f"2–{args.epochs} (training + validation) on the {args.device.upper()}; ×N: N seeds "
            "in one program, seconds ÷ N; ÷ columns divide this row's s/model-epoch")


def print_report(head: list[str], rows: list[list[str]], title: str, facts: list[str],
                 notes: list[str]) -> None:
    """The table, then the facts and the notes, on stdout."""
    print_table(head, rows, title)
    for line in facts:
        print(line)
    for note in notes:
        print(f"NOTE: {note}")


def write_outputs(args: argparse.Namespace, machine: dict, floors: dict[int, list[dict]],
                  runs: list[dict], notes: list[str], head: list[str], rows: list[list[str]],
                  title: str, facts: list[str]) -> None:
    """results.json (everything measured) and table.md (the report) in the --out folder."""
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    (args.out / "results.json").write_text(json.dumps(
        {"command": command, "args": {k: str(v) for k, v in vars(args).items()},
         "machine": machine, "floors": floors, "runs": runs, "notes": notes}, indent=1))
    md = [f"# Epoch speed, {machine['date']}", "", f"`{command}`", "",
          *[f"- {line}" for line in facts], "", title + ".", "", markdown_table(head, rows), "",
          *[f"- NOTE: {note}" for note in notes]]
    (args.out / "table.md").write_text("\n".join(md) + "\n")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'table.md'}")


# ---- main ---------------------------------------------------------------------------------

def main() -> None:
    """Measure the floors and every column over the repeats, then print and write the table."""
    # SIGTERM as an exception, so that subprocess.run kills the engine it is waiting for.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    notes: list[str] = []
    columns, pythons = make_columns(args, notes)
    for note in notes:
        print(f"NOTE: {note}", file=sys.stderr)
    machine = machine_facts(args.device)
    thread_counts = floor_thread_counts(args, columns, notes)
    floor_env = floor_environment(args, machine, notes)
    floors, runs = run_sitting(args, columns, pythons, thread_counts, floor_env, notes)
    machine["loadavg_end"] = os.getloadavg()[0]
    rows = summarize(runs, floors, columns, args.models, args.threads)
    head = header(columns, args.threads)
    title = table_title(args)
    facts = facts_lines(args, machine, floors, runs)
    print_report(head, rows, title, facts, notes)
    if args.out:
        write_outputs(args, machine, floors, runs, notes, head, rows, title, facts)


if __name__ == "__main__":
    main()
