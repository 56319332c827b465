"""The ``bnlab`` command: parse arguments, call the library, print with Rich.

User mistakes (``BnlabError``) are printed as one line on stderr with exit status 2, never
as a traceback, with the options they name shown as this command's flags (``cli_option``).
Apart from JAX's own device flags (``api.configure_jax``), this is the only module that reads
environment variables (``BNLAB_DATA_DIR``, ``BNLAB_CACHE_DIR``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape

from bnlab.errors import BnlabError
from bnlab.report.console import new_console

console = new_console()
error_console = new_console(stderr=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except BnlabError as err:
        error_console.print(f"[bold red]error:[/] {escape(err.render(cli_option))}",
                            soft_wrap=True)
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
    p.add_argument("run", type=Path, help="a run folder, or a run's name under --runs-dir "
                                          "(as `bnlab runs` lists them)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("report", help="write a self-contained HTML report of one or more runs")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run folders, or runs' names under --runs-dir (as `bnlab runs` lists "
                        "them)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--out", type=Path,
                   help="the HTML file (default RUN/report.html for one run, "
                        "./report.html for several)")
    p.set_defaults(handler=cmd_report)
    return parser


# A library option as this command spells it, and the environment variable that sets it too.
FLAGS = {"data_dir": "--data-dir", "cache_dir": "--cache-dir", "download": "--no-download",
         "resume": "--resume", "seeds": "--seeds", "epochs": "--epochs",
         "runs_dir": "--runs-dir"}
ENVIRONMENT = {"data_dir": "BNLAB_DATA_DIR", "cache_dir": "BNLAB_CACHE_DIR"}


def cli_option(name: str, value: str | None) -> str:
    """A message's option placeholder (``errors.render_options``) as a flag: ``{data_dir}``
    → ``--data-dir (and unset BNLAB_DATA_DIR)``, ``{data_dir=DIR}`` → ``--data-dir DIR``,
    ``{resume=True}`` → ``--resume``."""
    flag = FLAGS[name]
    if value is None:
        return f"{flag} (and unset {ENVIRONMENT[name]})" if name in ENVIRONMENT else flag
    return flag if value == "True" else f"{flag} {value}"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _cache_dir(args: argparse.Namespace) -> Path:
    from bnlab.io import cache_folder

    return cache_folder(args.cache_dir)


def _load_splits(args: argparse.Namespace, dataset: str = "fashion_mnist"):
    from bnlab.report.progress import load_showing_downloads

    return load_showing_downloads(dataset, data_dir=args.data_dir, cache_dir=args.cache_dir,
                                  download=not args.no_download, console=console)


def cmd_data(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bnlab.data.datasets import get_spec
    from bnlab.data.sources import check_files
    from bnlab.report.progress import DownloadBars

    spec = get_spec("fashion_mnist")
    with DownloadBars(console) as bars:
        checked = check_files(spec, data_dir=args.data_dir,
                              cache_dir=_cache_dir(args) / "datasets",
                              download=not args.no_download, on_progress=bars)
    table = Table(title="Fashion-MNIST files, each verified (the SHA-256 of its decompressed "
                        "bytes is the registry's)", title_justify="left")
    table.add_column("role", no_wrap=True)
    table.add_column("found in", no_wrap=True)
    table.add_column("path", overflow="fold")
    table.add_column("sha256", no_wrap=True)
    bad = {role: r.render(cli_option) for role, r in checked.items()
           if isinstance(r, BnlabError)}
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
    from bnlab.nn.summary import summarize
    from bnlab.nn.zoo import get_model

    console.print(summarize(get_model(args.model)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)  # before anything runs JAX (validation does)
    from bnlab.config.experiment import load_experiment, with_overrides

    config = with_overrides(load_experiment(args.experiment), seeds=args.seeds,
                            epochs=args.epochs)
    splits = _load_splits(args, config.dataset)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bnlab.experiments.runner import run_experiment
    from bnlab.report.console import epoch_line, results_table
    from bnlab.report.plots import learning_curves, save_figure
    from bnlab.store.provenance import devices_label
    from bnlab.store.runs import find_resumable, load_run, new_run_dir

    if args.resume:
        run_dir = find_resumable(args.runs_dir, config, splits)
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

        def on_epoch(name: str, record) -> None:
            progress.console.print(f"Epoch {record.epoch}/{record.epochs}\n"
                                   f"{epoch_line(record)}")
            progress.advance(task)

        def on_resume(changes: list[str]) -> None:
            for change in changes:
                progress.console.print(f"[yellow]note:[/] resuming with {escape(change)}; the "
                                       "finished epochs were trained in the other environment "
                                       "(environment.json records both)")

        run_experiment(config, splits, run_dir, resume=args.resume, on_compiled=on_compiled,
                       on_epoch=on_epoch, on_resume=on_resume)
    run = load_run(run_dir)
    figure = learning_curves({n: h.per_seed for n, h in run.histories.items()},
                             title=f"{config.name} ({run_dir.name})")
    save_figure(figure, [run_dir / "curves.png", run_dir / "curves.svg"])
    console.print(results_table(run))
    _print_verdicts(run)
    console.print(f"total {time.perf_counter() - started:.1f} s")
    _print_saved(run_dir, [v.name for v in config.variants], config.seed_list)
    return 0


def _print_saved(run_dir: Path, variants: Sequence[str], seeds: Sequence[int]) -> None:
    """The files a run wrote, relative to its folder (layout: ``bnlab.store.runs``)."""
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

    from bnlab.store.runs import list_runs

    runs, damaged = list_runs(args.runs_dir)
    for message in damaged:
        error_console.print(f"[yellow]skipped:[/] {escape(message)}")
    if not runs:
        missing = "" if args.runs_dir.is_dir() else " (it does not exist)"
        console.print(f"no runs under {args.runs_dir}{missing}", markup=False)
        return 0
    table = Table(title=f"Runs under {escape(str(args.runs_dir))}", title_justify="left")
    for column in ("run", "experiment", "variants", "seeds", "epochs", "status"):
        table.add_column(column)
    for run in runs:
        config = run.config
        done = run.epochs_per_variant
        epochs = (f"{done[0]}/{config.epochs}" if len(set(done)) == 1
                  else f"{', '.join(map(str, done))} of {config.epochs}")
        table.add_row(escape(run.path.name), escape(config.name),
                      escape(", ".join(v.name for v in config.variants)),
                      str(config.seeds), epochs,
                      "complete" if run.complete else "[yellow]unfinished[/] (--resume)")
    console.print(table)
    return 0


def _run_folder(path: Path, runs_dir: Path) -> Path:
    """``path`` as given, or the run of that name under ``runs_dir`` (as `bnlab runs` lists
    them) when ``path`` is not a folder."""
    return runs_dir / path if not path.exists() and (runs_dir / path).is_dir() else path


def cmd_show(args: argparse.Namespace) -> int:
    from bnlab.report.console import run_overview
    from bnlab.store.runs import load_run

    console.print(run_overview(load_run(_run_folder(args.run, args.runs_dir)), cli_option))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bnlab.report.html import write_report
    from bnlab.store.runs import load_run

    args.runs = [_run_folder(path, args.runs_dir) for path in args.runs]
    runs = [load_run(path) for path in args.runs]
    out = args.out or (args.runs[0] / "report.html" if len(runs) == 1 else Path("report.html"))
    console.print(str(write_report(runs, out)), markup=False)
    return 0


def _print_verdicts(run) -> None:
    from bnlab.report.console import verdict_lines

    for line in verdict_lines(run, cli_option):
        console.print(line)


if __name__ == "__main__":
    sys.exit(main())
