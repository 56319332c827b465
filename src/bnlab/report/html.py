"""The self-contained HTML report of one or more runs.

One file a reader can open anywhere, offline: the CSS is inline, the learning curves are
PNGs inlined as ``data:`` URLs, there is no script and nothing is fetched from the network.
Per run it shows the experiment (recipe, environment, folder), the final metrics over seeds
with their 95% t intervals, the seed-paired verdicts, the learning curves and a Keras-style
summary of every model. An unfinished run is reported with what it has so far.

Every string that comes from a run (names, descriptions, paths, versions) is escaped with
``html.escape``: a run folder is data, never markup.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bnlab.analysis.gap import final_gaps
from bnlab.analysis.stats import summarize_over_seeds
from bnlab.analysis.sweep import numeric_axes
from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.sweep import value_text
from bnlab.errors import BnlabError, render_options
from bnlab.io import atomic_write_bytes, read_regular
from bnlab.limits import RUN_FILE_BYTES
from bnlab.nn.summary import summarize
from bnlab.report.console import (
    layer_text,
    one_seed_differences,
    resume_command,
    schedule_text,
)
from bnlab.report.figures import sweep_figure_name
from bnlab.report.plots import figure_bytes, gap_figure, learning_curves, sweep_figure
from bnlab.report.style import CSS
from bnlab.report.sweep_lines import best_lines, ci_text, sweep_rows, sweep_text
from bnlab.report.why import why_part
from bnlab.store.runs import Run

CONFIDENCE = 0.95
RESULT_METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")


def write_report(runs: Sequence[Run], out: Path, *,
                 unreadable: Sequence[tuple[Path, str]] = ()) -> Path:
    """Write the report of ``runs`` to ``out`` atomically and return ``out``;
    ``unreadable``: run folders that could not be read, each with why, named in it."""
    atomic_write_bytes(out, render_report(runs, unreadable=unreadable).encode("utf-8"))
    return out


def render_report(runs: Sequence[Run], *,
                  unreadable: Sequence[tuple[Path, str]] = ()) -> str:
    """The report of ``runs`` as one HTML document (a string)."""
    if not runs:
        raise BnlabError("no runs to report; pass at least one run folder")
    title = ("bnlab report: " + runs[0].config.name if len(runs) == 1
             else f"bnlab report: {len(runs)} runs")
    contents = ""
    if len(runs) > 1:
        items = "".join(f'<li><a href="#run-{i}">{_e(run.config.name)}</a> '
                        f'<span class="muted">{_e(run.path.name)}</span></li>'
                        for i, run in enumerate(runs, 1))
        contents = f'<nav><h2>Runs</h2><ol>{items}</ol></nav>'
    sections = "\n".join(_run_section(run, f"run-{i}") for i, run in enumerate(runs, 1))
    if unreadable:
        items = "".join(f"<li><code>{_e(path)}</code>: {_e(why)}</li>" for path, why in unreadable)
        contents += (f'<section class="run"><h2>Not reported <span class="badge bad">'
                     f'unreadable</span></h2><ul>{items}</ul></section>')
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header><h1>{_e(title)}</h1>
<p class="muted">Generated {_e(generated)} by bnlab. Self-contained: no scripts, no network.
Values are mean ± sample sd over seeds; intervals are {CONFIDENCE:.0%} Student-t intervals of
the mean.</p></header>
{contents}
{sections}
</main>
</body>
</html>
"""


def _run_section(run: Run, anchor: str) -> str:
    config = run.config
    badge = {"complete": "ok", "damaged": "bad"}.get(run.status, "warn")
    status = f'<span class="badge {badge}">{_e(run.status)}</span>'
    description = (f'<p class="description">{_e(config.description)}</p>'
                   if config.description else "")
    return f"""<section class="run" id="{anchor}">
<h2>{_e(config.name)} {status}</h2>
{description}
{_damage(run)}
<h3>Experiment</h3>
{_experiment_table(run, config)}
<h3>Results</h3>
{_results_table(run, config)}
{_sweep(run, config)}
{_verdicts(run, config)}
<h3>Learning curves</h3>
{_curves(run)}
{_gap(run)}
{_why(run)}
<h3>Models</h3>
<div class="models">{"".join(_model_summary(v, config) for v in config.variants)}</div>
</section>"""


def _experiment_table(run: Run, config: ExperimentConfig) -> str:
    env = run.environment
    optimizer = f"{config.optimizer.name}, learning rate {config.optimizer.learning_rate:g}"
    if config.optimizer.args:
        optimizer += ", " + ", ".join(f"{k}={v!r}" for k, v in config.optimizer.args.items())
    optimizer += schedule_text(config.optimizer.schedule,
                               any(a.key == "optimizer.schedule" for a in config.sweep))
    packages = ", ".join(f"{name} {version or 'not installed'}"
                         for name, version in env.get("packages", {}).items())
    device = str(env.get("device", "unknown"))
    if env.get("device_count", 1) > 1:
        device += f" × {env['device_count']}"
    rows = [
        ("run folder", f"<code>{_e(run.path)}</code>"),
        ("variants", _e(", ".join(v.name for v in config.variants))),
        *([("sweep", _e(sweep_text(config)))] if config.sweep else []),
        ("dataset", _e(config.dataset)),
        ("optimizer", _e(optimizer)),
        ("batch size", _e(config.batch_size)),
        ("epochs", _e(config.epochs if run.complete else
                      f"{config.epochs} planned; the results show what each variant finished")),
        ("seeds", _e(", ".join(map(str, env.get("seeds", config.seed_list))))),
        *([("data", _e(f"{env['data']['train']:,} / {env['data']['val']:,} / "
                       f"{env['data']['test']:,} rows (train / validation / test)"))]
          if isinstance(env.get("data"), dict) and {"train", "val", "test"} <= set(env["data"])
          else []),
        ("device", _e(device)),
        ("python", _e(f"{env.get('python', '?')} on {env.get('platform', '?')}")),
        ("packages", _e(packages)),
    ]
    for resume in env.get("resumes", []):  # a resumed run: where each later part ran
        versions = ", ".join(f"{name} {version or 'not installed'}"
                             for name, version in resume.get("packages", {}).items())
        rows.append(("resumed", _e(f"{resume.get('at', '?')} on {resume.get('device', '?')}; "
                                   f"{versions}")))
    body = "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>' for k, v in rows)
    return f'<table class="facts">{body}</table>'


def _damage(run: Run) -> str:
    """The damaged files of a run and the command that repairs it."""
    if not run.damage:
        return ""
    items = "".join(f"<li><code>{_e(d.file)}</code> {_e(d.problem)}</li>" for d in run.damage)
    command = resume_command(run)
    fix = (f"Repair it with <code>{_e(command)}</code>" if command
           else "Repair it by resuming it (<code>bnlab run EXPERIMENT --resume</code>)")
    return (f'<div class="damage"><p><strong>Damaged files</strong> — what is shown below '
            f"comes only from the files that are sound:</p><ul>{items}</ul><p>{fix}: it "
            "retrains only the variants whose record is damaged and rewrites the rest.</p>"
            "</div>")


def _results_table(run: Run, config: ExperimentConfig) -> str:
    head = "".join(f'<th class="num">{m}</th>' for m in RESULT_METRICS)
    rows = []
    for variant in config.points:
        history = run.histories.get(variant.name)
        status = run.variant_status(variant.name)
        if history is None:
            cells = f'<td class="muted" colspan="5">{_e(status)}</td>'
        else:
            finals = {m: history.final(m) for m in ("val_accuracy", "val_loss")}
            summary = (run.summary or {}).get(variant.name)
            finals["test_accuracy"] = None if summary is None else summary.test_accuracy
            finals["test_loss"] = None if summary is None else summary.test_loss
            cells = f'<td class="num">{history.epochs}</td>' + "".join(
                _metric_cell(finals[m]) for m in RESULT_METRICS)
        rows.append(f"<tr><td>{_e(variant.name)}</td><td>{_e(status)}</td>{cells}</tr>")
    note = "" if run.finished else (
        '<p class="note">The run is unfinished: validation metrics are from the last finished '
        "epoch; test metrics are computed at the end of training.</p>")
    diverged = "".join(
        f'<p class="note">{_e(name)}: ' + "; ".join(f"seed {seed} diverged at {d}"
                                                   for seed, d in sorted(seeds.items()))
        + " (the training loss was not finite); "
        + ("its metrics are over the other seeds.</p>" if len(seeds) < run.config.seeds
           else "every seed diverged, so it has no metrics.</p>")
        for name, seeds in run.diverged.items())
    return (f'<table class="results"><thead><tr><th>variant</th><th>status</th>'
            f'<th class="num">epochs</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f"</table>{note}{diverged}")


def _metric_cell(values: np.ndarray | None) -> str:
    """``mean ± sd`` over the seeds that did not diverge, the confidence interval below it."""
    if values is None:
        return '<td class="num muted">pending</td>'
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return '<td class="num muted">diverged</td>'
    subset = (f'<div class="ci">{finite.size} of {values.size} seeds (the others diverged)'
              "</div>" if finite.size < values.size else "")
    s = summarize_over_seeds(finite, CONFIDENCE)
    if s.n == 1:
        return (f'<td class="num">{s.mean:.4f}<div class="ci">one seed: no interval</div>'
                f"{subset}</td>")
    return (f'<td class="num">{s.mean:.4f} ± {s.std:.4f}'
            f'<div class="ci">{CONFIDENCE:.0%} CI [{s.ci_low:.4f}, {s.ci_high:.4f}]</div>'
            f"{subset}</td>")


def _verdicts(run: Run, config: ExperimentConfig) -> str:
    if len(config.points) < 2:
        return ""
    heading = "<h3>Verdicts</h3>"
    if not run.finished and not run.damage:
        return (f'{heading}<p class="note">Verdicts compare the final validation accuracy; they '
                "appear when the run is complete.</p>")
    problem = run.verdict_problem()
    if problem:
        return f'{heading}<p class="note">No verdicts: {_e(render_options(problem))}</p>'
    comparisons = run.comparisons()
    left_out = "".join(f'<p class="note">No verdict for {_e(name)} ({_e(why)}).</p>'
                       for name, why in run.left_out.items())
    if not comparisons:
        return (f"{heading}<p>None: fewer than two variants have no diverged seed.</p>"
                f"{left_out}")
    if comparisons[0].n == 1:
        return (f"{heading}<p>{_e(render_options(one_seed_differences(comparisons)))}</p>"
                f"{left_out}")
    items = "".join(f'<li class="{"win" if c.winner else "tie"}">{_e(c.verdict)}</li>'
                    for c in comparisons)
    def number(value: float, spec: str) -> str:  # NaN (one seed): no spread, no test
        return "—" if np.isnan(value) else format(value, spec)

    rows = "".join(
        f"<tr><td>{_e(c.name_a)} − {_e(c.name_b)}</td>"
        f"<td>{100 * c.mean_difference:+.2f} ± {number(100 * c.ci_half_width, '.2f')}</td>"
        f"<td>{number(c.p_value, '.3g')}</td><td>{number(c.p_adjusted, '.3g')}</td>"
        f"<td>{number(c.effect_size_dz, '.2f')}</td><td>{_e(c.winner or '—')}</td></tr>"
        for c in comparisons)
    table = ("<table><tr><th>pair</th><th>difference, points (95% CI)</th><th>p</th>"
             f"<th>p, Holm</th><th>d<sub>z</sub></th><th>better</th></tr>{rows}</table>")
    return (f'{heading}<p class="muted">Seed-paired t-tests on the final validation accuracy, '
            f"α = 0.05, p-values Holm-adjusted over the {len(comparisons)} pairs"
            + (" (variants at equal values of the other axes, and each variant at its best "
               "point)" if config.sweep else "") + "; ± is the 95% "
            "confidence interval of the mean paired difference, d<sub>z</sub> = mean / sd of "
            "the paired differences (an exact sign test replaces the t-test when every seed's "
            f'difference is the same).</p><ul class="verdicts">{items}</ul>{table}{left_out}')


def _sweep(run: Run, config: ExperimentConfig) -> str:
    """A sweep's answer: the table of points (``console.sweep_rows``), each variant's best
    point, and final accuracy against each numeric axis (``plots.sweep_figure``)."""
    if not config.sweep:
        return ""
    rows, best = sweep_rows(run)
    keys = [axis.key for axis in config.sweep if axis.kind != "variants"]
    best_names = {row.point.name for row in best.values()}
    head = "".join(f'<th class="num">{_e(k.removeprefix("optimizer."))}</th>' for k in keys)
    body = "".join(
        f'<tr class="{"best" if row.point.name in best_names else ""}">'
        f"<td>{_e(row.point.variant)}{' ★' if row.point.name in best_names else ''}</td>"
        + "".join(f'<td class="num">{_e(value_text(row.point.values[k]))}</td>'
                  if k in row.point.values else '<td class="num muted">—</td>' for k in keys)
        + f"<td>{_e(run.variant_status(row.point.name))}</td>"
        f'<td class="num">{_e(ci_text(row.val))}</td><td class="num">{_e(ci_text(row.test))}'
        f'</td><td class="num">{row.diverged}/{row.seeds}</td></tr>' for row in rows)
    table = (f'<table class="results"><thead><tr><th>variant</th>{head}<th>status</th>'
             '<th class="num">val_accuracy (95% CI)</th><th class="num">test_accuracy (95% '
             'CI)</th><th class="num">diverged</th></tr></thead><tbody>' + body
             + "</tbody></table>")
    lines = "".join(f"<li>{_e(line.removeprefix('  • '))}</li>" for line in best_lines(run)[1:])
    finals = {row.point.name: run.histories[row.point.name].final("val_accuracy")
              for row in rows if run.histories[row.point.name].epochs}
    points = [row.point for row in rows if row.point.name in finals]
    figures = []
    for axis in numeric_axes(points):
        data = _png(run, sweep_figure_name(axis),
                    lambda axis=axis: sweep_figure(points, finals, axis))
        label = axis.removeprefix("optimizer.")
        figures.append(f'<figure><img src="data:image/png;base64,{data}" alt="Final validation '
                       f'accuracy against {_e(label)}, one line per variant"><figcaption>Final '
                       f"validation accuracy against {_e(label)}: mean over the seeds that did "
                       "not diverge, 95% band; ✕ marks diverged seeds.</figcaption></figure>")
    return (f"<h3>Sweep</h3><p class=\"muted\">{len(config.points)} points × "
            f"{config.seeds} seeds; final accuracies are means with 95% t-intervals over the "
            "seeds that did not diverge; ★ marks each variant's best point (highest mean "
            "final validation accuracy, no seed diverged), whose test accuracy is the "
            f"unbiased estimate of that choice.</p>{table}<ul>{lines}</ul>{''.join(figures)}")


def _curves(run: Run) -> str:
    if not run.histories:
        return '<p class="note">No epoch has finished yet.</p>'
    data = _png(run, "curves", lambda: learning_curves(
        {n: h.per_seed for n, h in run.histories.items()}, title=run.path.name))
    return (f'<figure><img src="data:image/png;base64,{data}" alt="Loss and accuracy per '
            f'epoch of {_e(", ".join(run.histories))}, training (left) and validation (right)">'
            "<figcaption>Loss (top) and accuracy (bottom) per epoch, training (left) and "
            "validation (right); with several seeds, the mean, with each seed as a thin "
            "line (up to 3 seeds) or the 95% confidence band (more)."
            "</figcaption></figure>")


def _gap(run: Run) -> str:
    """BatchNorm's train/inference gap (``analysis.gap``): per variant with BatchNorm, the
    final validation accuracy in both modes, the paired comparison, and the figure."""
    histories = {n: h.per_seed for n, h in run.histories.items()}
    if not any("val_batchstats_accuracy" in h for h in histories.values()):
        return ""
    problem = run.verdict_problem()
    rows = "".join(
        f"<tr><td>{_e(g.variant)}</td>{_metric_cell(g.inference)}{_metric_cell(g.batch)}"
        f"<td>{_e(g.sentence)}</td></tr>"
        for g in ([] if problem else final_gaps(
            histories, epochs=max(h.epochs for h in run.histories.values()))))
    table = ('<table class="results"><thead><tr><th>model</th><th class="num">inference</th>'
             '<th class="num">batch statistics</th><th>final gap</th></tr></thead>'
             f"<tbody>{rows}</tbody></table>" if rows else
             '<p class="note">The final gaps come, as the verdicts do, when the run is '
             "finished and undamaged.</p>")
    data = _png(run, "gap", lambda: gap_figure(histories, title=run.path.name))
    return ("<h3>Training vs inference</h3><p>BatchNorm normalizes with the batch's statistics "
            "in training and with its moving statistics in inference. Each epoch the "
            "validation set was scored both ways (batch statistics: batches of the training "
            "batch size, no dropout); the gap is inference minus batch statistics, paired by "
            f"seed.</p>{table}"
            f'<figure><img src="data:image/png;base64,{data}" alt="Validation accuracy in '
            'inference mode and with batch statistics per epoch, and their gap">'
            "<figcaption>Validation accuracy per epoch in inference mode (solid) and with batch "
            "statistics (dashed); right, the gap in points with its 95% band over seeds."
            "</figcaption></figure>")


def _why(run: Run) -> str:
    """What the run's probes recorded (``report.why``): the plan, each variant against the
    first as computed sentences, and the figures."""
    part = why_part(run)
    if part is None:
        return ""
    items = "".join(f"<li>{_e(f.sentence)}</li>" for f in part.findings)
    findings = (f"<p>Each variant against <b>{_e(part.reference)}</b>, paired by seed: the "
                "ratio of the per-seed summaries (geometric mean over the recorded steps), "
                "its 95% interval and the paired t-test on the logs, Holm-adjusted over every "
                f"line below.</p><ul>{items}</ul>" if items else "")
    figures = "".join(
        f'<figure><img src="data:image/png;base64,{_png(run, name, draw)}" '
        f'alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'
        for name, caption, draw in part.figures)
    return f'<h3>Why</h3><p class="muted">{_e(part.plan)}</p>{findings}{figures}'


def _png(run: Run, name: str, draw: Callable[[], Figure]) -> str:
    """Figure ``name`` as base64 PNG: the run's own ``<name>.png`` when its summary lists it
    and its bytes are the ones drawn (``Run.figures``), else ``draw()``."""
    stored = run.path / f"{name}.png"
    data = (read_regular(stored, limit=RUN_FILE_BYTES)
            if f"{name}.png" in run.figures and run.finished else figure_bytes(draw()))
    return base64.b64encode(data).decode("ascii")


def _model_summary(variant: VariantConfig, config: ExperimentConfig) -> str:
    """A model's card: its name, where it comes from, every layer with its resolved options,
    and its summary's own HTML."""
    origin = f"preset {variant.model}" if variant.model else "custom layers"
    model = variant.build(config.input_shape())
    layers = "".join(f"<li><code>{_e(layer_text(layer))}</code></li>" for layer in model.layers)
    return (f'<div class="model"><h4>{_e(variant.name)} <span class="muted">{_e(origin)}'
            f'</span></h4><ol class="layers">{layers}</ol>{summarize(model)._repr_html_()}'
            "</div>")


def _e(value: object) -> str:
    return html.escape(str(value))
