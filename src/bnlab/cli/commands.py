"""``bnlab data``, ``summary``, ``runs``, ``show`` and ``report``: read, check and print."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from bnlab.cli.session import cache_dir, cli_option, console, error_console
from bnlab.errors import BnlabError


def cmd_data(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bnlab.data.datasets import get_spec
    from bnlab.data.sources import check_files
    from bnlab.report.progress import DownloadBars

    spec = get_spec("fashion_mnist")
    with DownloadBars(console) as bars:
        checked = check_files(spec, data_dir=args.data_dir,
                              cache_dir=cache_dir(args) / "datasets",
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
    for role, result in checked.items():
        for note in () if role in bad else result.notes:
            console.print(f"[yellow]{role}[/]: {escape(note)}", soft_wrap=True)
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
    from bnlab.nn.zoo import MODELS, get_model

    if args.model in MODELS:
        console.print(summarize(get_model(args.model)))
        return 0
    from bnlab.config.experiment import load_experiment

    config = load_experiment(args.model)
    console.print(f"[bold]{escape(config.name)}[/]: {len(config.variants)} variant(s)")
    for variant in config.variants:
        origin = f"preset {variant.model}" if variant.model else "layers"
        console.print(f"\n[bold]{escape(variant.name)}[/] ({origin})")
        console.print(summarize(variant.build(config.input_shape())))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from bnlab.report.console import runs_table
    from bnlab.store.reader import list_runs

    if not args.runs_dir.is_dir():
        raise BnlabError(f"{args.runs_dir} does not exist or is not a folder; give the folder "
                         "runs were written to ({runs_dir=DIR})")
    runs, unreadable = list_runs(args.runs_dir)
    if not runs and not unreadable:
        console.print(f"no runs under {args.runs_dir}", markup=False)
        return 0
    table = runs_table(runs, unreadable, args.runs_dir, cli_option)
    console.print(table)
    for run in runs:  # below the table, whole: a path never folds across lines
        for damage in run.damage:
            console.print(f"{run.path.name}: {damage}", markup=False)
    for folder, message in unreadable:
        console.print(f"{folder.name}: {message}", markup=False)
    return 0


def run_folder(path: Path, runs_dir: Path) -> Path:
    """``path`` as given, or the run of that name under ``runs_dir`` (as `bnlab runs` lists
    them) when ``path`` is not a folder."""
    return runs_dir / path if not path.exists() and (runs_dir / path).is_dir() else path


def cmd_show(args: argparse.Namespace) -> int:
    from bnlab.cli.session import print_recalibrations
    from bnlab.report.console import run_overview
    from bnlab.store.reader import load_run

    run = load_run(run_folder(args.run, args.runs_dir))
    console.print(run_overview(run, cli_option))
    print_recalibrations(run)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Report every readable run; a run that cannot be read is named (in the report and on
    stderr) and the exit status is 1, while the others are reported."""
    from bnlab.report.html import write_report
    from bnlab.store.reader import load_run

    paths = [run_folder(path, args.runs_dir) for path in args.runs]
    runs, unreadable = [], []
    for path in paths:
        try:
            runs.append(load_run(path))
        except BnlabError as err:
            if len(paths) == 1:
                raise
            unreadable.append((path, err.render(cli_option)))
            error_console.print(f"[yellow]skipped:[/] {escape(err.render(cli_option))}",
                                soft_wrap=True)
    if not runs:
        raise BnlabError("none of the runs could be read (each is named above); give run "
                         "folders that `bnlab runs` lists")
    out = args.out or (paths[0] / "report.html" if len(paths) == 1 else Path("report.html"))
    console.print(str(write_report(runs, out, unreadable=unreadable)), markup=False)
    return 1 if unreadable else 0


def print_verdicts(run) -> None:
    from bnlab.report.console import verdict_lines

    for line in verdict_lines(run, cli_option):
        console.print(line)
