"""The ``bnlab`` command: parse arguments, call the library, print with Rich.

User mistakes (``BnlabError``) are printed as one line on stderr with exit status 2, never
as a traceback. This is the only module that reads environment variables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from bnlab.errors import BnlabError

_WIDTH = None if sys.stdout.isatty() else 120  # logs and pipes: wide enough for the tables
console = Console(highlight=False, soft_wrap=True, width=_WIDTH)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except BnlabError as err:
        error_console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        return 2
    except OSError as err:  # a path the user gave cannot be written or read
        where = f" ({err.filename})" if err.filename else ""
        error_console.print(f"[bold red]error:[/] {escape(str(err.strerror or err) + where)}; "
                            "check the path and its permissions", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        error_console.print("interrupted; files written so far are complete (atomic writes)")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnlab", description="Run, understand and compare Batch Normalization experiments."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    data_options = argparse.ArgumentParser(add_help=False)
    data_options.add_argument(
        "--data-dir", type=Path, default=_env_path("BNLAB_DATA_DIR"),
        help="folder holding the four Fashion-MNIST .gz files (env BNLAB_DATA_DIR); "
             "default: user cache, then /usr/share/datasets, then download")
    data_options.add_argument(
        "--cache-dir", type=Path, default=_env_path("BNLAB_CACHE_DIR"),
        help="bnlab's cache (downloads, compiled programs); env BNLAB_CACHE_DIR")
    data_options.add_argument("--no-download", action="store_true",
                              help="never download; fail if the files are not on disk")

    p = sub.add_parser("data", parents=[data_options],
                       help="find and verify the dataset files; show where each came from")
    p.set_defaults(handler=cmd_data)

    p = sub.add_parser("summary", help="Keras-style summary of a model preset")
    p.add_argument("model", help="baseline, bn_after or bn_before")
    p.set_defaults(handler=cmd_summary)

    run_options = argparse.ArgumentParser(add_help=False, parents=[data_options])
    run_options.add_argument("--seeds", type=int, help="number of seeds (overrides the file)")
    run_options.add_argument("--epochs", type=int, help="epochs (overrides the file)")
    run_options.add_argument("--runs-dir", type=Path, default=Path("runs"),
                             help="where run folders are written (default ./runs)")
    run_options.add_argument("--resume", action="store_true",
                             help="continue the newest unfinished run of this experiment")

    p = sub.add_parser("seed", parents=[run_options],
                       help="reproduce the notebook: baseline, bn_after, bn_before")
    p.set_defaults(handler=cmd_run, experiment="seed")

    p = sub.add_parser("run", parents=[run_options], help="run an experiment file or preset")
    p.add_argument("experiment", help="path to a TOML experiment file, or a preset name")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("runs", help="list the runs under the runs directory")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("show", help="print one run: config, results, verdicts")
    p.add_argument("run", type=Path, help="a run folder (as listed by `bnlab runs`)")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("report", help="write a self-contained HTML report of one or more runs")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run folders (as listed by `bnlab runs`)")
    p.add_argument("--out", type=Path,
                   help="the HTML file (default RUN/report.html for one run, "
                        "./report.html for several)")
    p.set_defaults(handler=cmd_report)
    return parser


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _cache_dir(args: argparse.Namespace) -> Path:
    if args.cache_dir is not None:
        return args.cache_dir
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("bnlab"))


class _DownloadBars:
    """A progress bar per file being downloaded (``sources.Progress``), shown only once a
    download starts; use as a context manager."""

    def __init__(self) -> None:
        self.progress = None
        self.tasks: dict[str, Any] = {}

    def __call__(self, name: str, done: int, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        if self.progress is None:
            self.progress = Progress(TextColumn("downloading {task.description}"), BarColumn(),
                                     DownloadColumn(), TransferSpeedColumn(), console=console,
                                     transient=True)
            self.progress.start()
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(escape(name), total=total)
        self.progress.update(self.tasks[name], completed=done)

    def __enter__(self) -> _DownloadBars:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _load_splits(args: argparse.Namespace, dataset: str = "fashion_mnist"):
    from bnlab.data.datasets import load_dataset

    with _DownloadBars() as bars:
        return load_dataset(dataset, data_dir=args.data_dir,
                            cache_dir=_cache_dir(args) / "datasets",
                            download=not args.no_download, on_progress=bars)


def cmd_data(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bnlab.data.datasets import get_spec
    from bnlab.data.sources import check_files

    spec = get_spec("fashion_mnist")
    with _DownloadBars() as bars:
        checked = check_files(spec, data_dir=args.data_dir,
                              cache_dir=_cache_dir(args) / "datasets",
                              download=not args.no_download, on_progress=bars)
    table = Table(title="Fashion-MNIST files, each verified (the SHA-256 of its decompressed "
                        "bytes is the registry's)", title_justify="left")
    table.add_column("role", no_wrap=True)
    table.add_column("found in", no_wrap=True)
    table.add_column("path", overflow="fold")
    table.add_column("sha256", no_wrap=True)
    bad = {role: str(r) for role, r in checked.items() if isinstance(r, BnlabError)}
    for role, result in checked.items():
        if role in bad:
            table.add_row(role, "[red]unusable[/]", "(below)", "—")
        else:
            table.add_row(role, result.origin, escape(str(result.path)),
                          result.sha256[:12] + "…")
    console.print(table)
    for role, message in bad.items():
        console.print(f"[red]{role}[/]: {escape(message)}", soft_wrap=True)
    if bad:
        raise BnlabError(f"{len(bad)} of {len(checked)} files are unusable ({', '.join(bad)}); "
                         "each is listed above with its fix")
    # Verified files hold exactly the registry's arrays, so their shapes give the split sizes.
    files, validation = spec.files(), spec.validation_size
    console.print(f"train {files['train_images'].shape[0] - validation:,} · validation "
                  f"{validation:,} (first rows of the training file) · test "
                  f"{files['test_images'].shape[0]:,}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from bnlab.nn.zoo import get_model
    from bnlab.report.console import summary_table, variables_table

    model = get_model(args.model)
    console.print(summary_table(model))
    variables = variables_table(model)
    if variables is not None:
        console.print(variables)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _configure_jax(_cache_dir(args))  # before anything runs JAX (config validation does)
    from bnlab.experiments.config import load_experiment, with_overrides

    config = with_overrides(load_experiment(args.experiment), seeds=args.seeds,
                            epochs=args.epochs)
    splits = _load_splits(args, config.dataset)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bnlab.experiments.runner import devices_label, run_experiment
    from bnlab.report.console import epoch_line, results_table
    from bnlab.report.plots import plot_learning_curves
    from bnlab.store import find_resumable, new_run_dir

    if args.resume:
        run_dir = find_resumable(args.runs_dir, config.to_dict())
    else:
        run_dir = new_run_dir(args.runs_dir, config.name)
    seeds = ", ".join(map(str, config.seed_list))
    console.print(f"[bold]{config.name}[/]: {len(config.variants)} models × {config.seeds} "
                  f"seed(s) ({seeds}) × {config.epochs} epochs → {escape(str(run_dir))}"
                  + (" (resuming)" if args.resume else "") + f" on {escape(devices_label())}")
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("training", total=len(config.variants) * config.epochs)

        def on_compiled(name: str, seconds: float) -> None:
            progress.update(task, description=f"training {name}")
            progress.console.print(f"[bold]{name}[/]: compiling… {seconds:.1f} s")

        def on_epoch(log) -> None:
            progress.console.print(f"Epoch {log.epoch}/{log.epochs}\n{epoch_line(log)}")
            progress.advance(task)

        def on_resume(changes: list[str]) -> None:
            for change in changes:
                progress.console.print(f"[yellow]note:[/] resuming with {escape(change)}; the "
                                       "finished epochs were trained in the other environment "
                                       "(environment.json records both)")

        results = run_experiment(config, splits, run_dir, resume=args.resume,
                                 on_compiled=on_compiled, on_epoch=on_epoch,
                                 on_resume=on_resume)
    plot_learning_curves({r.name: r.history for r in results},
                         [run_dir / "curves.png", run_dir / "curves.svg"],
                         title=f"{config.name} ({run_dir.name})")
    console.print(results_table(results))
    _print_verdicts({r.name: r.history for r in results}, config.epochs)
    console.print(f"total {time.perf_counter() - started:.1f} s")
    _print_saved(run_dir, [r.name for r in results], config.seed_list)
    return 0


def _print_saved(run_dir: Path, variants: Sequence[str], seeds: Sequence[int]) -> None:
    """The files a run wrote, relative to its folder (layout: ``bnlab.store``)."""
    console.print(f"saved in {run_dir}/ (show it: bnlab show {run_dir}; report: bnlab report "
                  f"{run_dir}; tensorboard --logdir {run_dir / 'tensorboard'})", markup=False)
    console.print("  config.json  environment.json  summary.json  curves.png  curves.svg  "
                  "tensorboard/", markup=False)
    seed_part = f"seed-{seeds[0]}" if len(seeds) == 1 else f"seed-{{{seeds[0]}..{seeds[-1]}}}"
    for name in variants:
        console.print(f"  {name}/{seed_part}/history.csv (Keras CSVLogger)  "
                      f"{name}/statistics.csv  {name}/checkpoint.safetensors", markup=False)


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bnlab.store import list_runs

    runs, damaged = list_runs(args.runs_dir)
    for message in damaged:
        error_console.print(f"[yellow]skipped:[/] {escape(message)}")
    if not runs:
        console.print(f"no runs under {args.runs_dir}", markup=False)
        return 0
    table = Table(title=f"Runs under {escape(str(args.runs_dir))}", title_justify="left")
    for column in ("run", "experiment", "variants", "seeds", "epochs", "status"):
        table.add_column(column)
    for run in runs:
        config = run.config
        done = run.epochs_per_variant
        epochs = (f"{done[0]}/{config['epochs']}" if len(set(done)) == 1
                  else f"{', '.join(map(str, done))} of {config['epochs']}")
        table.add_row(run.path.name, config["name"],
                      ", ".join(v["name"] for v in config["variants"]),
                      str(config["seeds"]), epochs,
                      "complete" if run.complete else "[yellow]unfinished[/] (--resume)")
    console.print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.table import Table

    from bnlab.report.console import mean_sd
    from bnlab.store import load_run

    run = load_run(args.run)
    config, env = run.config, run.environment
    console.print(f"[bold]{escape(str(run.path))}[/]: experiment {config['name']!r} — "
                  f"{escape(config.get('description', ''))}")
    console.print(f"optimizer {config['optimizer']['name']} lr "
                  f"{config['optimizer']['learning_rate']:g}, batch {config['batch_size']}, "
                  f"{config['epochs']} epochs, seeds {env.get('seeds')}; {env.get('device')}, "
                  f"jax {env.get('packages', {}).get('jax')}"
                  + (f"; resumed {len(env['resumes'])}× (environment.json)"
                     if env.get("resumes") else ""))
    table = Table(title="Final metrics (mean ± sd over seeds)", title_justify="left")
    for column in ("variant", "epochs", "val_accuracy", "val_loss", "test_accuracy"):
        table.add_column(column)
    for name, history in run.histories.items():
        test = run.summary[name]["test_accuracy"] if run.summary else None
        table.add_row(name, str(history["loss"].shape[1]),
                      mean_sd(history["val_accuracy"][:, -1]),
                      mean_sd(history["val_loss"][:, -1]),
                      mean_sd(np.asarray(test)) if test is not None else "unfinished")
    console.print(table)
    if run.complete:
        _print_verdicts(run.histories, config["epochs"])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bnlab.report.html import write_report
    from bnlab.store import load_run

    runs = [load_run(path) for path in args.runs]
    out = args.out or (args.runs[0] / "report.html" if len(runs) == 1 else Path("report.html"))
    console.print(str(write_report(runs, out)), markup=False)
    return 0


def _print_verdicts(histories: dict, epochs: int) -> None:
    from bnlab.analysis.stats import compare_final_accuracy

    if len(histories) < 2:
        return
    comparisons = compare_final_accuracy(histories, epochs)
    if comparisons[0].n == 1:
        differences = ", ".join(f"{c.name_a} − {c.name_b} {100 * c.mean_difference:+.2f}"
                                for c in comparisons)
        console.print(f"One seed: no verdict (a seed-paired test needs ≥ 2 seeds; try --seeds "
                      f"5). Differences in final validation accuracy, points: {differences}")
        return
    console.print("[bold]Verdicts[/] (seed-paired t-tests on final validation accuracy):")
    for comparison in comparisons:
        console.print(f"  • {comparison.verdict}")


def _configure_jax(cache_dir: Path) -> None:
    """Before JAX starts: one CPU device per core this process may use (unless
    ``JAX_NUM_CPU_DEVICES`` or ``XLA_FLAGS`` chose a count), so that a run's seeds train side
    by side on every core; and JAX's persistent compilation cache under the user cache, so that
    reruns skip compilation."""
    import jax

    from bnlab.train.seeds import one_cpu_device_per_core

    one_cpu_device_per_core()
    jax.config.update("jax_compilation_cache_dir", str(cache_dir / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


if __name__ == "__main__":
    sys.exit(main())
