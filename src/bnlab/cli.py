"""The ``bnlab`` command: parse arguments, call the library, print with Rich.

User mistakes (``BnlabError``) are printed as one line on stderr with exit status 2, never
as a traceback, with the options they name shown as this command's flags (``cli_option``).
An operating-system error is one line naming the file and what the error means. SIGINT and
SIGTERM stop a run cleanly (exit 130 and 143) with the command that resumes it. Commands the
output suggests are spelled as this command was invoked (``program``), so they paste as they
are. Apart from JAX's own device flags (``api.configure_jax``), this is the only module that
reads environment variables (``BNLAB_DATA_DIR``, ``BNLAB_CACHE_DIR``).
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape

from bnlab import __version__
from bnlab.errors import BnlabError
from bnlab.report.console import new_console

console = new_console()
error_console = new_console(stderr=True)


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as SIGINT raises ``KeyboardInterrupt``."""


@dataclass
class _Session:
    """What a stop message needs: the arguments, and the run being trained (if any)."""

    argv: list[str] = field(default_factory=list)
    run_dir: Path | None = None


_session = _Session()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    _session.argv = list(sys.argv[1:] if argv is None else argv)
    _session.run_dir = None
    args = parser.parse_args(_session.argv)

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return args.handler(args)
    except BnlabError as err:
        error_console.print(f"[bold red]error:[/] {escape(err.render(cli_option))}",
                            soft_wrap=True)
        return 2
    except OSError as err:
        error_console.print(f"[bold red]error:[/] {escape(os_error_text(err))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt as err:
        name = "SIGTERM" if isinstance(err, Stopped) else "SIGINT"
        error_console.print(f"stopped by {name}; {stop_advice()}", soft_wrap=True,
                            markup=False)
        return 143 if isinstance(err, Stopped) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_advice() -> str:
    """What the user can do after a stop: the run's state and the command that resumes it."""
    if _session.run_dir is None:
        return "nothing was being trained"
    return (f"every finished epoch is saved in {_session.run_dir} (files are written "
            f"atomically); resume with: {resume_command()}")


def resume_command() -> str:
    """This invocation with ``--resume`` (the newest unfinished run of the same experiment
    and overrides is the one it resumes)."""
    return shlex.join([*program(), *_without_resume(_session.argv), "--resume"])


def _without_resume(argv: Sequence[str]) -> list[str]:
    return [a for a in argv if a not in ("--resume", "--retry-diverged")]


def program() -> list[str]:
    """How this command was invoked, to print commands that paste as they are: ``bnlab``
    when that is what the shell finds, else the path it was run by (``.venv/bin/bnlab``),
    or ``python -m bnlab``."""
    argv0 = sys.argv[0] if sys.argv else ""
    name = Path(argv0).name
    if name in ("__main__.py", "cli.py", "-m", "-c"):
        return [sys.executable, "-m", "bnlab"]
    if name != "bnlab":  # called in-process (a test, a notebook): the installed command
        return ["bnlab"]
    found = shutil.which("bnlab")
    if found and Path(found).resolve() == Path(argv0).resolve():
        return ["bnlab"]
    return [argv0]


# What an OSError means for the user, and what to do about it.
_OS_ERRORS = {
    errno.ENOSPC: "the disk is full; free some space (or give another --runs-dir) and run "
                  "again",
    errno.EDQUOT: "the disk quota is exhausted; free some space and run again",
    errno.EROFS: "the file system is read-only; give a writable folder",
    errno.EACCES: "permission denied; check the permissions of that path",
    errno.EPERM: "the operation is not permitted there; check that path",
    errno.ENOENT: "it does not exist; check the path",
    errno.ENOTDIR: "a part of that path is a file, not a folder; check the path",
    errno.EISDIR: "it is a folder where a file was expected; check the path",
    errno.EIO: "the disk reported an input/output error; check the disk",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and run again",
    errno.EFBIG: "the file would exceed the file size limit (ulimit -f); raise it and run "
                 "again",
    errno.ENAMETOOLONG: "the path is too long; use a shorter one",
}


def os_error_text(err: OSError) -> str:
    """One line for an ``OSError``: the file, the system's message, what it means."""
    where = f"{err.filename}: " if err.filename else ""
    meaning = _OS_ERRORS.get(err.errno, "check the path")
    text = f"{where}{err.strerror or err} — {meaning}"
    if _session.run_dir is not None:
        text += f"; then resume with: {resume_command()}"
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnlab", description="Run, understand and compare Batch Normalization experiments."
    )
    parser.add_argument("--version", action="version", version=f"bnlab {__version__}")
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

    p = sub.add_parser("summary", help="Keras-style summary of a model preset, or of every "
                                       "variant of an experiment file or preset")
    p.add_argument("model", help="baseline, bn_after or bn_before; or an experiment file or "
                                 "preset (e.g. seed)")
    p.set_defaults(handler=cmd_summary)

    run_options = argparse.ArgumentParser(add_help=False, parents=[data_options])
    run_options.add_argument("--seeds", type=int, help="number of seeds (overrides the file)")
    run_options.add_argument("--epochs", type=int, help="epochs (overrides the file)")
    run_options.add_argument("--runs-dir", type=Path, default=Path("runs"),
                             help="where run folders are written (default ./runs)")
    run_options.add_argument("--resume", action="store_true",
                             help="continue (or repair) the newest unfinished or damaged run "
                                  "of this experiment; retrains only what is unfinished or "
                                  "damaged")
    run_options.add_argument("--retry-diverged", action="store_true",
                             help="with --resume: retrain the variants that diverged too")
    run_options.add_argument("--set", action="append", dest="settings", default=[],
                             metavar="KEY=VALUE",
                             help="change the experiment for this run, as a TOML line: "
                                  "epochs=2, optimizer.learning_rate=0.1, "
                                  "'sweep.\"optimizer.learning_rate\"=[0.01, 0.1]' "
                                  "(repeatable; a resume needs the same)")

    p = sub.add_parser("seed", parents=[run_options],
                       help="reproduce the notebook: baseline, bn_after, bn_before")
    p.set_defaults(handler=cmd_run, experiment="seed")

    p = sub.add_parser("run", parents=[run_options], help="run an experiment file or preset "
                                                          "(with its [sweep], if it has one)")
    p.add_argument("experiment", help="path to a TOML experiment file, or a preset name")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("sweep", parents=[run_options],
                       help="run the [sweep] of an experiment file or preset (e.g. "
                            "lr-robustness): its points × seeds, one program per shape")
    p.add_argument("experiment", help="path to a TOML experiment file with a [sweep] table, or "
                                      "a preset name")
    p.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="train the programs as tasks on an existing Ray cluster (`ray start "
                        "--head`; ADDRESS as it printed, default auto); the runs folder must "
                        "be shared by its nodes (extra: pip install 'bnlab[ray]')")
    p.set_defaults(handler=cmd_run, needs_sweep=True)

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
         "resume": "--resume", "retry_diverged": "--retry-diverged", "seeds": "--seeds",
         "epochs": "--epochs", "runs_dir": "--runs-dir"}
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


def cmd_run(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)  # before anything runs JAX (validation does)
    from bnlab.config.experiment import load_experiment, small_batch_warnings, with_overrides

    if args.retry_diverged and not args.resume:
        raise BnlabError("--retry-diverged retrains the diverged variants of a run being "
                         "resumed; add --resume")
    config = with_overrides(load_experiment(args.experiment, args.settings), seeds=args.seeds,
                            epochs=args.epochs)
    if getattr(args, "needs_sweep", False) and not config.sweep:
        raise BnlabError(f"{args.experiment} has no [sweep] table; add one (docs/sweeps.md), "
                         "give axes with --set 'sweep.\"optimizer.learning_rate\"=[0.01, 0.1]', "
                         "or train it with `bnlab run`")
    splits = _load_splits(args, config.dataset)
    for line in small_batch_warnings(config, len(splits.y_train)):
        error_console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bnlab.experiments.runner import run_experiment
    from bnlab.experiments.sweep import programs
    from bnlab.report.console import divergence_lines, epoch_line, results_table
    from bnlab.report.plots import run_figures
    from bnlab.report.progress import SweepTiming
    from bnlab.store.provenance import devices_label
    from bnlab.store.runs import find_resumable, load_run, new_run_dir
    from bnlab.store.summary import sweep_points

    if args.resume:
        run_dir = find_resumable(args.runs_dir, config, splits,
                                 retry_diverged=args.retry_diverged)
    else:
        run_dir = new_run_dir(args.runs_dir, config.name)
    _session.run_dir = run_dir
    seeds = ", ".join(map(str, config.seed_list))
    plan = programs(config)
    what = (f"{len(config.points)} points" if config.sweep else
            f"{len(config.variants)} models")
    console.print(f"[bold]{config.name}[/]: {what} × {config.seeds} "
                  f"seed(s) ({seeds}) × {config.epochs} epochs → {escape(str(run_dir))}"
                  + (" (resuming)" if args.resume else "") + f" on {escape(devices_label())}")
    if config.sweep:
        console.print(f"{len(plan)} program{'s' * (len(plan) != 1)}, "
                      f"{sum(len(p.members) for p in plan)} members:", markup=False)
        for number, program_ in enumerate(plan, 1):
            console.print(f"  program {number}: {program_.describe()}", markup=False)
    timing = SweepTiming(plan, config.epochs) if config.sweep else None
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("training", total=len(config.points) * config.epochs)

        def on_compiled(name: str, seconds: float) -> None:
            progress.update(task, description=f"training {name}")
            progress.console.print(f"[bold]{escape(name)}[/]: compiling… {seconds:.1f} s")

        def on_epoch(name: str, record) -> None:
            if timing is None:
                progress.console.print(f"Epoch {record.epoch}/{record.epochs}\n"
                                       f"{epoch_line(record)}")
            else:
                progress.console.print(f"{name} epoch {record.epoch}/{record.epochs}: "
                                       f"{epoch_line(record)}", markup=False)
                if estimate := timing.after_epoch(name, record):
                    progress.console.print(estimate, markup=False, style="bold")
            for line in divergence_lines(name, record):
                progress.console.print(line, markup=False, style="bold red")
            progress.advance(task)

        def on_plan(plans, repaired: list[str]) -> None:
            for line in repaired:
                progress.console.print(f"repair: {escape(line)}")
            for name, plan in plans.items():
                progress.console.print(f"{escape(name)}: {escape(plan.reason)}", markup=False)
                if plan.action == "keep":
                    progress.advance(task, config.epochs)
                elif plan.action == "continue":
                    progress.advance(task, plan.from_epoch)

        def on_resume(changes: list[str]) -> None:
            for change in changes:
                progress.console.print(f"[yellow]note:[/] resuming with {escape(change)}; the "
                                       "finished epochs were trained in the other environment "
                                       "(environment.json records both)")

        executor = None
        if getattr(args, "ray", None):
            from bnlab.experiments.ray_cluster import ray_executor

            def on_done(program_, results) -> None:
                progress.console.print(f"done on the Ray cluster: {program_.describe()}",
                                       markup=False)
                progress.advance(task, len(results) * config.epochs)

            executor = ray_executor(args.ray, on_done=on_done)
            progress.console.print(f"sending {len(plan)} programs to the Ray cluster at "
                                   f"{args.ray}", markup=False)
        run_experiment(config, splits, run_dir, resume=args.resume, executor=executor,
                       retry_diverged=args.retry_diverged, on_compiled=on_compiled,
                       on_epoch=on_epoch, on_resume=on_resume, on_plan=on_plan,
                       figures=run_figures(config.name, sweep_points(config)),
                       command=[*program(), *_without_resume(_session.argv)])
    run = load_run(run_dir)
    console.print(results_table(run))
    if config.sweep:
        from bnlab.report.console import best_lines, sweep_table

        console.print(sweep_table(run))
        for line in best_lines(run):
            console.print(line)
    _print_verdicts(run)
    console.print(f"total {time.perf_counter() - started:.1f} s")
    from bnlab.report.console import saved_lines

    for line in saved_lines(run_dir, [p.name for p in config.points], config.seed_list,
                            shlex.join(program()), sweep=bool(config.sweep)):
        console.print(line, markup=False)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from bnlab.report.console import runs_table
    from bnlab.store.runs import list_runs

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
    """Report every readable run; a run that cannot be read is named (in the report and on
    stderr) and the exit status is 1, while the others are reported."""
    from bnlab.report.html import write_report
    from bnlab.store.runs import load_run

    paths = [_run_folder(path, args.runs_dir) for path in args.runs]
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


def _print_verdicts(run) -> None:
    from bnlab.report.console import verdict_lines

    for line in verdict_lines(run, cli_option):
        console.print(line)


if __name__ == "__main__":
    sys.exit(main())
