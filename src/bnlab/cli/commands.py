"""``bnlab data``, ``summary``, ``runs``, ``show`` and ``report``: read, check and print."""

from __future__ import annotations

import argparse

from bnlab.cli.session import cli_option, console, data_options, error_console, escape
from bnlab.errors import BnlabError, printable


def cmd_data(args: argparse.Namespace) -> int:
    from bnlab.api import check_data
    from bnlab.data.datasets import get_spec
    from bnlab.report.progress import ProgressObserver
    from bnlab.report.tables import Column, FittedTable

    with ProgressObserver(verbose=1, console=console) as observer:
        checked = check_data(**data_options(args), observer=observer)
    table = FittedTable("Fashion-MNIST files, each verified (the SHA-256 of its decompressed "
                        "bytes is the registry's)",
                        [Column("role", "left"), Column("found in", "left"),
                         Column("path", "left"), Column("sha256", "left")])
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
    spec = get_spec("fashion_mnist")
    files, validation = spec.files(), spec.validation_size
    console.print(f"train {files['train_images'].shape[0] - validation:,} · validation "
                  f"{validation:,} (first rows of the training file) · test "
                  f"{files['test_images'].shape[0]:,}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from bnlab.api import summaries, summary
    from bnlab.nn.zoo import MODELS

    if args.model in MODELS:
        console.print(summary(args.model))
        return 0
    from bnlab.config.files import load_experiment

    config = load_experiment(args.model)
    found = summaries(config)
    console.print(f"[bold]{escape(config.name)}[/]: {len(found)} variant(s)")
    for variant in config.variants:
        origin = f"preset {variant.model}" if variant.model else "layers"
        console.print(f"\n[bold]{escape(variant.name)}[/] ({origin})")
        console.print(found[variant.name])
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from bnlab.api import list_runs
    from bnlab.report.console import runs_table

    if not args.runs_dir.is_dir():
        raise BnlabError(f"{args.runs_dir} does not exist or is not a folder; give the folder "
                         "runs were written to ({runs_dir=DIR})")
    runs, unreadable = list_runs(args.runs_dir)
    if not runs and not unreadable:
        console.print(f"no runs under {args.runs_dir}", markup=False)
        return 0
    console.print(runs_table(runs, unreadable, args.runs_dir, cli_option))
    for run in runs:  # below the table, whole: a path never folds across lines
        for damage in run.damage:
            console.print(printable(f"{run.path.name}: {damage}"), markup=False)
    for folder, message in unreadable:
        console.print(printable(f"{folder.name}: {message}"), markup=False)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from bnlab.api import show

    overview = show(args.run, runs_dir=args.runs_dir)
    console.print(overview.render(cli_option))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Report every readable run; a run that cannot be read is named (in the report and on
    stderr) and the exit status is 1, while the others are reported."""
    from bnlab.api import write_report

    report = write_report(args.runs, args.out, runs_dir=args.runs_dir, force=args.force,
                          option=cli_option)
    for _, why in report.unreadable:
        error_console.print(f"[yellow]skipped:[/] {escape(why)}", soft_wrap=True)
    console.print(str(report.path), markup=False)
    return 1 if report.unreadable else 0
