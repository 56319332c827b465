"""Seconds per model-epoch of the notebook's three models, every engine side by side in one run.

Each engine is a script in benchmarks/engines/ run by its own interpreter (protocol.py there
gives the command line and the one-line JSON result). This script writes the data once
(Fashion-MNIST's 60,000 training images: the first 5,000 are validation), then for each repeat
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
import gzip
import hashlib
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

REPO = Path(__file__).resolve().parents[1]
MODELS = ("baseline", "bn_after", "bn_before")
ENGINES = {  # name -> (interpreter, script), relative to the repository root
    "bnlab": (".venv/bin/python", "benchmarks/engines/bnlab_engine.py"),
    "keras": (".venv-keras/bin/python", "benchmarks/engines/keras_notebook.py"),
    "torch": (".venv-torch/bin/python", "benchmarks/engines/torch_eager.py"),
}
DATA_DIR = "/usr/share/datasets/fashion-mnist"
IDX_SHA256 = {  # of the decompressed files (FACTS.md)
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
}
N_VAL = 5_000
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

def read_idx(path: Path) -> np.ndarray:
    """Decompress an IDX file, check its SHA-256 and return its uint8 array."""
    raw = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != IDX_SHA256[path.name.removesuffix(".gz")]:
        raise SystemExit(f"{path}: SHA-256 {digest} is not Fashion-MNIST's (see FACTS.md)")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_data(data_dir: Path, path: Path) -> None:
    """The notebook's split as the engines' npz: first 5,000 images are validation."""
    x = read_idx(data_dir / "train-images-idx3-ubyte.gz")
    y = read_idx(data_dir / "train-labels-idx1-ubyte.gz").astype(np.int32)
    np.savez(path, x_train=x[N_VAL:], y_train=y[N_VAL:], x_val=x[:N_VAL], y_val=y[:N_VAL])


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
    last = result["history"]["val_accuracy"][-1]
    return float(np.mean(last))  # several seeds: their mean


def steady_epoch(result: dict) -> float:
    """Median seconds of epochs 2+ (the first includes compilation)."""
    return statistics.median(result["epoch_seconds"][1:])


# ---- summary ------------------------------------------------------------------------------

def fmt(x: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if x is None else f"{x:.{digits}f}{suffix}"


def bnlab_columns(columns: list[Column], threads: int) -> list[Column]:
    """The bnlab columns at the main thread count: the table's "÷ bnlab…" ratios."""
    return [c for c in columns if c.engine == "bnlab" and c.threads == threads]


def header(columns: list[Column], threads: int) -> list[str]:
    return ["model", "engine", "thr", "s/model-epoch", "min–max", "epoch 1", "val_acc", "n",
            *(f"÷ {c.label}" for c in bnlab_columns(columns, threads)), "÷ F_shape", "÷ F_peak"]


def summarize(runs: list[dict], floors: dict[int, list[dict]], columns: list[Column],
              models: list[str], threads: int) -> list[list[str]]:
    """Rows of the table: per model, each engine column, then the floors at each thread count.
    Seconds are per model-epoch: a run of N seeds in one program counts its epoch ÷ N."""
    rows = []
    references = bnlab_columns(columns, threads)
    for model in models:
        stats = {}
        for col in columns:
            ok = [r["result"] for r in runs
                  if r["label"] == col.label and r["model"] == model and "result" in r]
            if ok:
                epochs = [steady_epoch(r) / col.seeds for r in ok]
                stats[col] = (statistics.median(epochs), min(epochs), max(epochs),
                              statistics.median(r["first_epoch_seconds"] for r in ok) / col.seeds,
                              statistics.median(final_val_accuracy(r) for r in ok), len(ok))
        floor = {t: {key: statistics.median(f["models"][model][key] for f in fl)
                     for key in ("f_shape", "f_peak")} for t, fl in floors.items() if fl}
        for col in columns:
            if col not in stats:
                rows.append([model, col.label, str(col.threads), "no result", *["—"] * 3, "0",
                             *["—"] * (len(references) + 2)])
                continue
            med, lo, hi, first, acc, n = stats[col]
            fl = floor.get(col.threads, {})
            ratios = [fmt(med / stats[ref][0] if ref in stats else None, 2, "×")
                      for ref in references]
            rows.append([model, col.label, str(col.threads), fmt(med), f"{lo:.2f}–{hi:.2f}",
                         fmt(first, 1), f"{acc:.4f}", str(n), *ratios,
                         fmt(med / fl["f_shape"] if fl else None, 2, "×"),
                         fmt(med / fl["f_peak"] if fl else None, 2, "×")])
        for t, fl in sorted(floors.items()):
            for key, name in (("f_shape", "F_shape"), ("f_peak", "F_peak")):
                values = [f["models"][model][key] for f in fl]
                if values:
                    rows.append([model, name, str(t), fmt(statistics.median(values)),
                                 f"{min(values):.2f}–{max(values):.2f}", "", "", str(len(values)),
                                 *[""] * (len(references) + 2)])
    return rows


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(head: list[str], rows: list[list[str]], title: str) -> None:
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


# ---- main ---------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
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
    parser.add_argument("--data-dir", type=Path, default=Path(DATA_DIR))
    parser.add_argument("--python", action="append", default=[], metavar="ENGINE=PATH",
                        help="use another interpreter for an engine")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per engine run")
    parser.add_argument("--out", type=Path, help="write results.json and table.md here")
    parser.add_argument("--verbose", action="store_true", help="show the engines' stderr")
    args = parser.parse_args()
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


def main() -> None:
    # SIGTERM as an exception, so that subprocess.run kills the engine it is waiting for.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    notes: list[str] = []
    columns, pythons = make_columns(args, notes)
    for note in notes:
        print(f"NOTE: {note}", file=sys.stderr)
    machine = machine_facts(args.device)
    # One-thread floors always: on these VMs they are the stable anchor (FACTS.md). The floors
    # are CPU floors: a GPU sitting has none.
    thread_counts = sorted({1, args.threads} | {c.threads for c in columns})
    if args.device == "gpu":
        thread_counts = []
        notes.append("--device gpu: F_shape and F_peak are CPU floors and were not measured")
    # The floors are the machine's best case, so they use the AVX-512 kernels the engines' own
    # GEMMs use, even where the environment pins OpenBLAS to AVX2 ones (OPENBLAS_CORETYPE=Haswell
    # on this project's VMs) or OpenBLAS does not recognise the CPU. Only the floors see this.
    floor_env = {}
    if args.floor_coretype == "auto" and machine["skylakex_kernels_ok"]:
        floor_env["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif args.floor_coretype not in ("auto", "inherit"):
        floor_env["OPENBLAS_CORETYPE"] = args.floor_coretype
    if floor_env:
        notes.append(f"floors ran with OPENBLAS_CORETYPE={floor_env['OPENBLAS_CORETYPE']} "
                     f"(environment: {os.environ.get('OPENBLAS_CORETYPE', 'unset')}; "
                     "--floor-coretype inherit keeps the environment's)")
    runs: list[dict] = []
    floors: dict[int, list[dict]] = {t: [] for t in thread_counts}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "fashion_mnist_split.npz"
        write_data(args.data_dir, data)
        for rep in range(args.repeats):
            for t in thread_counts:
                cmd = [sys.executable, str(REPO / "benchmarks/floors.py"), "--threads", str(t),
                       "--models", ",".join(args.models), "--rounds", str(args.floor_rounds)]
                floors[t].append(run_json(cmd, t, args.timeout, args.verbose, floor_env)[0])
                print(f"[{rep + 1}/{args.repeats}] floors, {t} thread(s): peak "
                      f"{floors[t][-1]['peak_gflops']:.0f} GFLOP/s", file=sys.stderr)
            order = columns[rep % len(columns):] + columns[:rep % len(columns)] if columns else []
            for model in args.models:
                for col in order:
                    cmds = [[str(pythons[col.engine]), ENGINES[col.engine][1], "--model",
                             model, "--epochs", str(args.epochs), "--seed", str(args.seed + i),
                             "--data", str(data),
                             "--threads", str(col.threads // col.processes),
                             "--seeds", str(col.seeds // col.processes),
                             "--device", args.device] for i in range(col.processes)]
                    run = {"repeat": rep, "label": col.label, "engine": col.engine,
                           "threads": col.threads, "model": model,
                           "command": " & ".join(map(shlex.join, cmds))}
                    start = time.perf_counter()
                    try:
                        result, _ = (run_json(cmds[0], col.threads, args.timeout, args.verbose)
                                     if col.processes == 1 else
                                     run_json_side_by_side(cmds, col, model, args.epochs,
                                                           args.device, args.timeout,
                                                           args.verbose))
                        check_result(result, col, model, args.epochs, args.device)
                        run["result"] = result
                        acc = final_val_accuracy(result)
                        status = (f"{steady_epoch(result):.2f} s/epoch (epoch 1 "
                                  f"{result['first_epoch_seconds']:.1f} s), val_accuracy "
                                  f"{acc:.4f}")
                        if acc < LOW_ACCURACY:
                            notes.append(f"{col.label} {model} repeat {rep + 1}: val_accuracy "
                                         f"{acc:.4f} — this engine does not train correctly")
                    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as err:
                        run["error"] = str(err)
                        status = f"FAILED: {err}"
                        notes.append(f"{col.label} {model} repeat {rep + 1} failed: "
                                     f"{str(err).splitlines()[0]}")
                    run["wall_seconds"] = time.perf_counter() - start
                    runs.append(run)
                    print(f"[{rep + 1}/{args.repeats}] {col.label:9} {model:9} {status} "
                          f"[{run['wall_seconds']:.0f} s]", file=sys.stderr)
    machine["loadavg_end"] = os.getloadavg()[0]
    rows = summarize(runs, floors, columns, args.models, args.threads)
    head = header(columns, args.threads)
    versions = {}
    for run in runs:
        if "result" in run:
            versions.setdefault(run["engine"], run["result"]["versions"])
    for fl in floors.values():
        if fl:
            versions.setdefault("floors (NumPy)", fl[0]["versions"])
    peak = {t: statistics.median(f["peak_gflops"] for f in fl) for t, fl in floors.items() if fl}
    facts = [f"CPU: {machine['cpu']} (family/model/stepping {machine['cpu_family_model_stepping']},"
             f" AVX-512 {'yes' if machine['avx512f'] else 'no'}), {machine['cores']} cores; "
             f"load average {machine['loadavg_start']:.2f} → {machine['loadavg_end']:.2f}",
             *([f"GPU: {machine['gpu'] or 'nvidia-smi found none'}; engines ran on "
                + (", ".join(sorted({r["result"]["device"] for r in runs if "result" in r}))
                   or "nothing")] if args.device == "gpu" else []),
             *(["2048³ sgemm: " + ", ".join(f"{g:.0f} GFLOP/s on {t} thread(s)"
                                          for t, g in peak.items())] if peak else []),
             *[f"{name}: " + ", ".join(f"{k} {v}" for k, v in ver.items())
               for name, ver in versions.items()]]
    title = (f"s/model-epoch, median over {args.repeats} repeat(s) of the median of epochs "
             f"2–{args.epochs} (training + validation) on the {args.device.upper()}; ×N: N seeds "
             "in one program, seconds ÷ N; ÷ columns divide this row's s/model-epoch")
    print_table(head, rows, title)
    for line in facts:
        print(line)
    for note in notes:
        print(f"NOTE: {note}")
    if args.out:
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


if __name__ == "__main__":
    main()
