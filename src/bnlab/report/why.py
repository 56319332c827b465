"""The "Why" part of a run's report: what its probes recorded, as figures and as sentences
computed from the run's own numbers (``analysis.why``).

    part = why_part(run)      # None when the run recorded nothing
    part.findings             # each variant against the first, seed-paired, Holm-adjusted
    part.figures              # (file stem, caption, Figure): bands, Figure 1, measures
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.figure import Figure

from bnlab.analysis.why import Finding, findings, per_seed, summary_lines
from bnlab.report.probe_plots import activation_bands, figure1, measures_figure
from bnlab.report.sweep_lines import axis_text
from bnlab.store.runs import Run


@dataclass(frozen=True)
class WhyPart:
    """What a report shows of a run's records: the probe plan in words (``plan``), the
    ``findings`` against ``reference`` and the ``figures`` with their captions."""

    plan: str
    reference: str
    findings: tuple[Finding, ...]
    figures: tuple[tuple[str, str, Figure], ...]


def plan_text(run: Run) -> str:
    """The run's probe plan in one sentence."""
    plan = run.config.probe
    parts = []
    if plan.every:
        parts.append(f"activation statistics every {plan.every} steps on the first "
                     f"{plan.rows} validation images (training mode; all units pooled, and "
                     f"the first {plan.units} units each)")
    if plan.measures_every:
        scales = ", ".join(f"{s:g}" for s in plan.step_scales)
        parts.append(f"Santurkar et al.'s measures every {plan.measures_every} steps on the "
                     f"step's own batch, along the gradient at {scales} × the step taken")
    if plan.test_each_epoch:
        parts.append("the test set after every epoch")
    return "Recorded: " + "; ".join(parts) + "." if parts else ""


def recorded(run: Run) -> dict:
    """Per point that recorded something, in the config's order, its records."""
    return {p.name: run.probes[p.name] for p in run.config.points if p.name in run.probes}


def why_findings(run: Run) -> list[Finding]:
    """Each point's per-seed summaries (``analysis.why.per_seed``) against the reference's,
    paired by seed, Holm-adjusted (``[]`` when nothing was recorded): in a sweep, each
    point against the first variant's point at the same axis values (like with like); else
    every variant against the first."""
    per_variant = {name: per_seed(r) for name, r in recorded(run).items()}
    if not per_variant or not run.config.sweep:
        return findings(per_variant) if per_variant else []
    points = [p for p in run.config.points if p.name in per_variant]
    reference = run.config.variants[0].name
    at = {_axis_key(p): p.name for p in points if p.variant == reference}
    pairs = [(p.name, at[_axis_key(p)]) for p in points
             if p.variant != reference and _axis_key(p) in at]
    return findings(per_variant, pairs)


def why_lines(run: Run) -> tuple[str, list[str]]:
    """What ``bnlab run`` prints of the findings: a heading and one line each, or for a
    sweep one line per variant and quantity (``analysis.why.summary_lines``)."""
    found = why_findings(run)
    if not found:
        return "", []
    if not run.config.sweep:
        return (f"What the probes recorded, each against {found[0].reference} (paired by "
                "seed; bnlab report draws the figures):", [f.sentence for f in found])
    points = run.config.points
    variant_of = {p.name: p.variant for p in points}
    axis = {p.name: axis_text(p) for p in points}
    return ("What the probes recorded, each point against "
            f"{run.config.variants[0].name} at the same axis values (paired by seed, "
            "Holm-adjusted; bnlab report lists each):",
            summary_lines(found, variant_of, axis))


def _axis_key(point) -> tuple:
    """A point's axis values other than its variant, as a hashable key."""
    return tuple(sorted((k, repr(v)) for k, v in point.values if k != "variants"))


def why_part(run: Run) -> WhyPart | None:
    """The run's "Why" part, or ``None`` when none of its variants recorded anything."""
    records = recorded(run)
    if not records:
        return None
    title = f"{run.config.name} ({run.path.name})"
    figures = []
    if any("activations/steps" in r for r in records.values()):
        figures.append(("activations", "The input of each hidden nonlinearity on the fixed "
                        "probe batch over training: all units pooled, 15th–85th percentile "
                        "band, median, minimum and maximum (mean over seeds).",
                        lambda: activation_bands(records, title)))
        if all("test/accuracy" in r for r in records.values()):
            figures.append(("figure1", "Ioffe & Szegedy's Figure 1 from this run: (a) test "
                            "accuracy against steps; then, per variant, the 15th/50th/85th "
                            "percentiles of unit 0's input to the last hidden nonlinearity "
                            "in the first seed (two seeds' unit 0 are unrelated units), with "
                            "the same percentiles of all its layer's units shaded.",
                            lambda: figure1(records, title)))
    if any("measures/steps" in r for r in records.values()):
        figures.append(("measures", "Santurkar et al.'s measures over training: effective "
                        "β-smoothness, the gradient change and the loss variation along the "
                        "gradient, and each Dense layer's internal covariate shift (geometric "
                        "mean over seeds on the log axes, 95% band).",
                        lambda: measures_figure(records, title)))
    return WhyPart(plan_text(run), next(iter(records)), tuple(why_findings(run)),
                   tuple(figures))
