"""What bnlab prints: Keras-style epoch lines, result tables and verdicts (Rich)."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bnlab.analysis.gap import final_gaps
from bnlab.analysis.stats import PairedComparison
from bnlab.errors import (
    OptionRenderer,
    printable,
    python_option,
    render_options,
    some_of,
)
from bnlab.report.sweep_lines import (
    best_lines,
    gap_summary,
    sweep_table,
    sweep_text,
    sweep_verdict_lines,
)
from bnlab.report.tables import Column, FittedTable
from bnlab.store.lock import holder_alive, lock_holder
from bnlab.store.recalibrations import Recalibration, read_recalibrations
from bnlab.store.runs import REPAIR, Run

if TYPE_CHECKING:
    from bnlab.train.loop import EpochRecord


def epoch_line(record: EpochRecord) -> str:
    """Keras ``verbose=2`` line; with several seeds, metrics are means ± sd over the seeds
    that have not diverged (``(k/n seeds)`` when some have)."""
    parts = [f"{record.steps}/{record.steps}", f"{record.seconds:.2f}s/epoch",
             f"{1000 * record.seconds / record.steps:.2f}ms/step"]
    for metric, values in record.metrics.items():
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            parts.append(f"{metric}: nan")
            continue
        text = f"{metric}: {finite.mean():.4f}"
        if finite.size > 1:
            text += f" ±{finite.std(ddof=1):.4f}"
        if finite.size < values.size:
            text += f" ({finite.size}/{values.size} seeds)"
        parts.append(text)
    return " - ".join(parts)


def divergence_lines(name: str, record: EpochRecord) -> list[str]:
    """One plain line per seed of model ``name`` that diverged in ``record``'s epoch, saying
    whether any of its seeds still trains."""
    finite = np.isfinite(next(iter(record.metrics.values()))) if record.metrics else None
    training = finite is not None and bool(finite.any())
    rest = ("the other seeds train on" if training
            else f"no seed of {name} is left training")
    return [f"{name}: seed {record.seeds[member]} diverged at epoch {record.epoch}, step "
            f"{step} (the training loss is not finite); it stops there, {rest}"
            for member, step in record.diverged.items()]


def layer_text(layer: object) -> str:
    """A layer with every resolved option, e.g. ``BatchNorm(momentum=0.99, epsilon=0.001,
    momentum_on=old, …)``: two variants that differ in any option read differently (an
    option left at ``None``, one that does not apply, is not shown)."""
    if not dataclasses.is_dataclass(layer):
        return type(layer).__name__
    options = ", ".join(f"{f.name}={getattr(layer, f.name)}" for f in dataclasses.fields(layer)
                        if f.name != "axis_name" and getattr(layer, f.name) is not None)
    return f"{type(layer).__name__}({options})"


def variant_layers(run: Run) -> list[tuple[str, str, list[str]]]:
    """``(variant, origin, [layer_text of each layer])`` for every variant of ``run``."""
    config = run.config
    return [(v.name, f"preset {v.model}" if v.model else "layers",
             [layer_text(layer) for layer in v.build(config.input_shape()).layers])
            for v in config.variants]


def seeds_cell(values: np.ndarray) -> str:
    """``mean_sd`` over the seeds that did not diverge, saying how many those are."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "diverged"
    text = mean_sd(finite)
    return text if finite.size == values.size else f"{text} ({finite.size}/{values.size} seeds)"


def results_table(run: Run, *, title: str | None = None,
                  epochs: bool = False) -> FittedTable:
    """Final validation and test metrics per variant (mean ± sd over the seeds that did not
    diverge), seconds per epoch and compile seconds, and each variant's status; with
    ``epochs`` (always for a run that is not complete) the epochs each variant finished."""
    seeds = run.config.seeds
    if title is None:
        title = "Results after training" + (f" (mean ± sd over {seeds} seeds)"
                                            if seeds > 1 else "")
    if not run.complete:
        title, epochs = f"{title} — {run.status} run", True
    # The model's name is typed next (--variant) and never broken; a mean ± sd may wrap at
    # its spaces, a status too.
    table = FittedTable(title, [
        Column("model", "left"), Column("status", "left", whole=False),
        *([Column("epochs")] if epochs else []),
        *(Column(metric, whole=False)
          for metric in ("val accuracy", "val loss", "test accuracy", "test loss")),
        Column("s/epoch"), Column("compile s")])
    for variant in run.config.points:
        history = run.histories.get(variant.name)
        summary = (run.summary or {}).get(variant.name)
        status = run.variant_status(variant.name)
        style = {"complete": "green", "damaged": "red"}.get(status, "yellow")
        done = [str(history.epochs if history else 0)] if epochs else []
        if history is None:
            reason = "damaged" if status == "damaged" else "not started"
            table.add_row(escape(variant.name), f"[{style}]{status}[/]", *done,
                          *[reason] * 4, "—", "—")
            continue
        tests = ([seeds_cell(summary.test_accuracy), seeds_cell(summary.test_loss),
                  f"{summary.seconds_per_epoch:.2f}", f"{summary.compile_seconds:.1f}"]
                 if summary is not None else ["unfinished", "unfinished", "—", "—"])
        table.add_row(escape(variant.name), f"[{style}]{escape(status)}[/]", *done,
                      seeds_cell(history.final("val_accuracy")),
                      seeds_cell(history.final("val_loss")), *tests)
    return table


def damage_lines(run: Run, option: OptionRenderer = python_option) -> list[str]:
    """The damaged files of ``run``, one line each, and how to repair them (Rich markup)."""
    if not run.damage:
        return []
    command = resume_command(run)
    fix = (f"repair: {escape(command)} (retrains only the damaged variants)" if command
           else escape(render_options(REPAIR, option)))
    return [f"[bold red]Damaged[/] ({len(run.damage)} file{'s' * (len(run.damage) > 1)}):",
            *(f"  • {escape(str(d))}" for d in run.damage), f"  {fix}"]


def resume_command(run: Run) -> str | None:
    """The shell command that resumes ``run`` (its recorded start command plus
    ``--resume``), or ``None`` when the run did not record one."""
    command = run.environment.get("command")
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        return None
    return shlex.join([*command, *([] if "--resume" in command else ["--resume"])])


def run_overview(run: Run, option: OptionRenderer = python_option) -> Group:
    """What ``bnlab show`` prints: the run and its recipe, any damaged files, the final
    metrics and status of every variant, each variant's layers, and the verdicts."""
    config, env = run.config, run.environment
    data = env.get("data")
    rows = (f"; {data['train']:,} / {data['val']:,} / {data['test']:,} rows (train / val / test)"
            if isinstance(data, dict) and {"train", "val", "test"} <= set(data) else "")
    swept = {axis.key for axis in config.sweep}
    lr = ("swept" if "optimizer.learning_rate" in swept
          else f"{config.optimizer.learning_rate:g}")
    batch = "swept" if "batch_size" in swept else config.batch_size
    recipe = (f"optimizer {config.optimizer.name} lr {lr}"
              + "".join(f", {k}={'swept' if f'optimizer.{k}' in swept else v}"
                        for k, v in config.optimizer.args.items())
              + schedule_text(config.optimizer.schedule, "optimizer.schedule" in swept)
              + f", batch {batch}, {config.epochs} epochs, seeds "
              f"{list(config.seed_list)}{rows}; {env.get('device')}, jax "
              f"{(env.get('packages') or {}).get('jax')}"
              + (f"; resumed {len(env['resumes'])}× (environment.json)"
                 if env.get("resumes") else "")
              + (f"; sweep {sweep_text(config)}" if config.sweep else ""))
    style = {"complete": "green", "damaged": "bold red"}.get(run.status, "yellow")
    header = Text.assemble((printable(str(run.path)), "bold"), f": experiment {config.name!r}"
                           + (f" — {printable(config.description)}" if config.description else "")
                           + " ", (f"[{run.status}]", style))
    layers = Table(title="Layers (every option as resolved)", title_justify="left",
                   show_header=False, box=None)
    layers.add_column("model", no_wrap=True)
    layers.add_column("layers", overflow="fold")
    for name, origin, texts in variant_layers(run):
        layers.add_row(f"{escape(name)} ({origin})", escape(" → ".join(texts)))
    sweep = ([sweep_table(run), *(Text.from_markup(line) for line in best_lines(run))]
             if config.sweep else [])
    return Group(header, Text(recipe),
                 *(Text.from_markup(line) for line in damage_lines(run, option)),
                 results_table(run, title="Final metrics (mean ± sd over seeds)", epochs=True),
                 *sweep, layers,
                 *(Text.from_markup(line) for line in verdict_lines(run, option)),
                 *(Text(line) for line in gap_lines(run)))


def verdict_lines(run: Run, option: OptionRenderer = python_option) -> list[str]:
    """What ``bnlab run`` and ``bnlab show`` print after the table (Rich markup): the
    seed-paired verdicts, or why there are none (unfinished, damaged, one seed), and every
    variant left out of them (diverged)."""
    if len(run.config.points) < 2:
        return []
    problem = run.verdict_problem()
    if problem:
        return [f"[yellow]No verdicts:[/] {escape(render_options(problem, option))}"]
    comparisons = run.comparisons()
    left_out = [f"  • no verdict for {escape(name)} ({escape(why)})"
                for name, why in run.left_out.items()]
    if not comparisons:
        return ["[bold]Verdicts:[/] none (fewer than two variants without a diverged seed)",
                *left_out]
    if comparisons[0].n == 1:
        return [render_options(one_seed_differences(comparisons), option), *left_out]
    family = (f", Holm-adjusted over the {len(comparisons)} pairs of the variants that did "
              "not diverge" if left_out else "")
    if run.config.sweep:
        family = (f", Holm-adjusted over {len(comparisons)} pairs: variants at equal values of "
                  "the other axes, summarised per pair of variants, then each variant at its "
                  "best point; bnlab report lists each")
        lines = sweep_verdict_lines(run, comparisons)
    else:
        lines = [c.verdict for c in comparisons]
    return [f"[bold]Verdicts[/] (seed-paired t-tests on final validation accuracy{family}):",
            *(f"  • {escape(line)}" for line in lines), *left_out]


def gap_lines(run: Run) -> list[str]:
    """BatchNorm's train/inference gap of each variant that measured it (``analysis.gap``):
    a heading and one computed sentence per variant; ``[]`` when none did, or while the run
    is unfinished or damaged (as its verdicts: ``Run.verdict_problem``)."""
    if run.verdict_problem():
        return []
    histories = {n: h.per_seed for n, h in run.histories.items()}
    gaps = final_gaps(histories, epochs=max((h.epochs for h in run.histories.values()),
                                            default=None))
    if not gaps:
        return []
    heading = ("Training vs inference (final validation accuracy, moving vs batch statistics, "
               "paired by seed")
    if not run.config.sweep:
        return [heading + "):", *(f"  • {g.sentence}" for g in gaps)]
    return [heading + f", Holm-adjusted over {len(gaps)} points; bnlab report lists each):",
            *(f"  • {line}" for line in gap_summary(run, gaps))]


def recalibration_table(results: Sequence[Recalibration]) -> FittedTable:
    """Per point and seed: validation accuracy with the moving statistics (before) and with
    the recomputed ones (after), and the change in points."""
    batches = results[0].batches if results else 0
    table = FittedTable(
        f"BatchNorm statistics recomputed over {batches} training batches (inference mode, "
        "validation set)",
        [Column("model", "left"), Column("seed"), Column("val accuracy before"),
         Column("after"), Column("change (points)"), Column("test accuracy before"),
         Column("after")])
    for result in results:
        for i, seed in enumerate(result.seeds):
            before, after = result.before["val_accuracy"][i], result.after["val_accuracy"][i]
            table.add_row(escape(result.point), str(seed), f"{before:.4f}", f"{after:.4f}",
                          f"{100 * (after - before):+.2f}",
                          f"{result.before['test_accuracy'][i]:.4f}",
                          f"{result.after['test_accuracy'][i]:.4f}")
    return table


def recalibration_outcome(run: Run, results: Sequence[Recalibration], *,
                          variants_asked: bool) -> list[str]:
    """What ``bnlab recalibrate`` says after its table: the points it skipped, one line per
    reason (``some_of``: a sweep's dozen points do not fill the screen), and where it saved
    the recalibrated checkpoints."""
    from bnlab.experiments.recalibrate import recalibrable  # builds models: JAX

    done = {result.point for result in results}
    with_bn = {p.name for program in recalibrable(run.config) for p in program.points}
    skipped: dict[str, list[str]] = {}
    for point in run.config.points:
        if point.name not in done:
            why = ("not asked for (--variant)" if variants_asked and point.name in with_bn
                   else "no BatchNorm layer, nothing to recalibrate")
            skipped.setdefault(why, []).append(point.name)
    lines = [f"skipped {some_of(names)}: {why}" for why, names in skipped.items()]
    if len(results) == 1:
        lines.append(f"saved {run.path / results[0].point / 'recalibrated.safetensors'}")
    elif results:
        lines.append(f"saved recalibrated.safetensors beside the checkpoint of each of "
                     f"{len(results)} points in {run.path}")
    return lines


def recalibration_parts(run: Run) -> tuple[FittedTable | None, list[str]]:
    """What ``bnlab run`` and ``bnlab show`` print of a run's recalibrations
    (``experiments.recalibrate``): their table (``None`` without any) and a line for each
    damaged one."""
    found, problems = read_recalibrations(run.path, run.config)
    return (recalibration_table(found) if found else None), problems


ONE_SEED = "No verdict (one seed)"


def one_seed_differences(comparisons: Sequence[PairedComparison]) -> str:
    """The one-seed sentence of the CLI and the report: no verdict, and the differences."""
    differences = ", ".join(f"{c.name_a} − {c.name_b} {100 * c.mean_difference:+.2f}"
                            for c in comparisons)
    return (f"{ONE_SEED}: a seed-paired test needs ≥ 2 seeds; try {{seeds=5}}. Differences "
            f"in final validation accuracy, points: {differences}")


def mean_sd(values: np.ndarray) -> str:
    """``0.8406`` for one value, ``0.8406 ± 0.0031`` (sample sd) for several."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def saved_lines(run_dir: Path, points: Sequence[str], seeds: Sequence[int], bnlab: str, *,
                sweep: bool, tensorboard: str = "tensorboard") -> list[str]:
    """The files a run wrote, relative to its folder (layout: ``bnlab.store.runs``), and the
    commands that show it, spelled with ``bnlab`` and ``tensorboard`` (as the shell calls
    them here); a sweep's points as one pattern."""
    folder = shlex.quote(str(run_dir))
    figures = sorted(p.name for p in run_dir.glob("*.png") if not p.name.startswith("sweep-"))
    figures = [f"{name.removesuffix('.png')}.{{png,svg}}" for name in figures]
    lines = [f"saved in {run_dir}/ (show it: {bnlab} show {folder}; report: {bnlab} report "
             f"{folder}; {tensorboard} --logdir {shlex.quote(str(run_dir / 'tensorboard'))})",
             "  " + "  ".join(["config.json", "environment.json", "summary.json", *figures,
                               "tensorboard/"])]
    seed_part = f"seed-{seeds[0]}" if len(seeds) == 1 else f"seed-{{{seeds[0]}..{seeds[-1]}}}"
    if sweep:
        return [*lines, f"  sweep-<axis>.png  and for each of the {len(points)} points "
                        f"({points[0]}, …): <point>/{seed_part}/history.csv  "
                        "<point>/statistics.csv  <point>/checkpoint.safetensors"]
    return [*lines, *(f"  {name}/{seed_part}/history.csv (Keras CSVLogger)  "
                      f"{name}/statistics.csv  {name}/checkpoint.safetensors"
                      for name in points)]


def runs_table(runs: Sequence[Run], unreadable: Sequence[tuple[Path, str]], runs_dir: Path,
               option: OptionRenderer = python_option) -> FittedTable:
    """What ``bnlab runs`` prints: per run its experiment, variants (and points), seeds,
    epochs done and status (training with the lock holder's PID, damaged, complete,
    unfinished; diverged variants), then a row per unreadable folder."""
    table = FittedTable(f"Runs under {escape(str(runs_dir))}", [
        Column("run", "left"), Column("experiment", "left"),
        Column("variants", "left", whole=False), Column("seeds"), Column("epochs"),
        Column("status", "left", whole=False)])
    resume = escape(render_options("{resume=True}", option))
    for run in runs:
        config = run.config
        done = run.epochs_per_variant
        epochs = (f"{done[0]}/{config.epochs}" if len(set(done)) == 1
                  else f"{', '.join(map(str, done))} of {config.epochs}")
        holder = lock_holder(run.path)
        if holder and holder_alive(holder):
            status = f"[cyan]training[/] (PID {holder.get('pid')})"
        elif run.damage:
            status = (f"[red]damaged[/] ({len(run.damage)} file"
                      f"{'s' * (len(run.damage) > 1)}, below; {resume} repairs it)")
        elif run.complete:
            status = "[green]complete[/]"
        else:
            status = f"[yellow]unfinished[/] ({resume})"
        for name, seeds in run.diverged.items():
            status += (f"; {escape(name)} diverged ({len(seeds)}/{config.seeds} seed"
                       f"{'s' * (config.seeds > 1)})")
        table.add_row(escape(printable(run.path.name)), escape(config.name),
                      escape(", ".join(v.name for v in config.variants)
                             + (f" ({len(config.points)} points)" if config.sweep else "")),
                      str(config.seeds), epochs, status)
    for folder, _ in unreadable:
        table.add_row(escape(printable(folder.name)), "?", "?", "?", "?",
                      "[red]unreadable[/] (below)")
    return table


def schedule_text(schedule: str, swept: bool = False) -> str:
    """``", cosine schedule"`` for a recipe line; ``""`` for a constant learning rate."""
    if swept:
        return ", schedule swept"
    return "" if schedule == "constant" else f", {schedule} schedule"
