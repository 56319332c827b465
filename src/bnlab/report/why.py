"""The "Why" part of a run's report: what its probes recorded, as figures and as sentences
computed from the run's own numbers (``analysis.why``).

    part = why_part(run)      # None when the run recorded nothing
    part.findings             # each variant against the first, seed-paired, Holm-adjusted
    part.figures              # (file stem, caption, Figure): bands, Figure 1, measures
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.figure import Figure

from bnlab.analysis.why import Finding, findings, per_seed
from bnlab.report.probe_plots import activation_bands, figure1, measures_figure
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
    """Each point's per-seed summaries (``analysis.why.per_seed``) against the first
    point's, paired by seed, Holm-adjusted; ``[]`` when nothing was recorded."""
    per_variant = {name: per_seed(r) for name, r in recorded(run).items()}
    return findings(per_variant) if per_variant else []


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
                            "percentiles of unit 0's input to the last hidden nonlinearity, "
                            "with the same percentiles of all its layer's units shaded.",
                            lambda: figure1(records, title)))
    if any("measures/steps" in r for r in records.values()):
        figures.append(("measures", "Santurkar et al.'s measures over training: effective "
                        "β-smoothness, the gradient change and the loss variation along the "
                        "gradient, and each Dense layer's internal covariate shift (geometric "
                        "mean over seeds on the log axes, 95% band).",
                        lambda: measures_figure(records, title)))
    return WhyPart(plan_text(run), next(iter(records)), tuple(why_findings(run)),
                   tuple(figures))
