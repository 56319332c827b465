"""Why BN helps, in numbers: per-seed summaries of what a run's probes recorded, and
seed-paired comparisons of them between variants, each with its sentence.

Every quantity is first reduced to one number per seed (over the steps it was recorded at),
then each variant is compared with the run's first variant (the reference, e.g. the
baseline) seed by seed. The quantities are positive and vary by factors, so a comparison is
a **ratio**: the geometric mean over seeds of ``variant / reference`` with the 95% t-interval
of the mean log ratio, exponentiated, and the paired t-test on the log values (p Holm-adjusted
over every comparison of the run). Per seed (``train.probes`` defines what is recorded):

- effective β-smoothness (Santurkar et al. 2018, Fig. 4c): the geometric mean over the
  recorded steps of ``max_η ‖∇L(θ) − ∇L(θ − ηg)‖ / ‖ηg‖``;
- gradient change along the gradient (their "gradient predictiveness", Fig. 4b): the
  geometric mean of ``max_η ‖∇L(θ) − ∇L(θ − ηg)‖``;
- loss variation along the gradient (Fig. 4a): the geometric mean of ``max_η L − min_η L``
  over the step sizes;
- internal covariate shift of Dense layer *k* (their Definition 2.1): the geometric mean of
  ``‖G − G′‖``, and the mean of ``cos∠(G, G′)`` beside it;
- distribution drift at hidden layer *k* (Ioffe & Szegedy's Figure 1), the input of the
  *k*-th hidden nonlinearity (matched by position, since models name their layers
  differently): the mean over consecutive records of ``|Δp15| + |Δp50| + |Δp85|`` of the
  pooled percentiles, divided by the mean band width ``p85 − p15``: how far the distribution
  moves per record, in units of its own spread (scale-free, so layers and models compare).

A seed that diverged (NaN records) takes no part; a comparison needs two finite seeds for an
interval and says so otherwise. Sentences state what the numbers say and nothing else: a
ratio whose interval holds 1 is "not measurably different".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bnlab.analysis.stats import compare_paired, holm

ALPHA = 0.05


@dataclass(frozen=True)
class Finding:
    """One seed-paired ratio of a quantity between ``variant`` and ``reference``.

    ``ratio``: geometric mean over the ``n`` paired seeds of variant ÷ reference; ``low``,
    ``high``: its 95% interval (NaN with one seed); ``p_value``, ``p_adjusted``: the paired
    t-test on the log values, raw and Holm-adjusted over ``family`` comparisons; ``sentence``:
    the finding in words.
    """

    quantity: str
    variant: str
    reference: str
    n: int
    ratio: float
    low: float
    high: float
    p_value: float
    p_adjusted: float
    family: int
    sentence: str = ""

    @property
    def significant(self) -> bool:
        return self.n >= 2 and self.p_adjusted < ALPHA


def geometric_mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(mean(log values))`` along ``axis``; NaN where any value is NaN or ≤ 0, or
    where there is none."""
    values = np.asarray(values, np.float64)
    if values.shape[axis] == 0:
        return np.full(np.delete(values.shape, axis), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(values > 0, np.log(values), np.nan)
    return np.exp(np.mean(logs, axis=axis))


def beta_smoothness(records: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(seeds, m)``: effective β-smoothness at each recorded step."""
    change = records["measures/grad_change"].astype(np.float64)
    sizes = records["measures/step_sizes"].astype(np.float64)
    norm = records["measures/grad_norm"].astype(np.float64)
    return np.max(change / (sizes * norm[..., None]), axis=-1)


def last_hidden_input(records: Mapping[str, np.ndarray]) -> str | None:
    """The record name of the deepest hidden nonlinearity's input (Figure 1's layer)."""
    names = [n.removesuffix("/layer") for n in records
             if n.startswith("activations/") and n.endswith("/layer")]
    return names[-1] if names else None


def drift(layer: np.ndarray) -> np.ndarray:
    """``layer: (seeds, n, 7)`` pooled statistics → ``(seeds,)`` distribution drift: mean over
    consecutive records of ``|Δp15| + |Δp50| + |Δp85|`` ÷ the mean of ``p85 − p15`` (NaN
    with fewer than two records)."""
    bands = layer[..., :3].astype(np.float64)  # p15, p50, p85
    if bands.shape[1] < 2:
        return np.full(bands.shape[0], np.nan)
    moves = np.abs(np.diff(bands, axis=1)).sum(axis=-1).mean(axis=1)
    width = (bands[..., 2] - bands[..., 0]).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return moves / width


def per_seed(records: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{quantity: (seeds,)}`` for what ``records`` hold (module docstring); the ICS of
    each Dense layer, skipping a layer with nothing below it (its shift is 0 by
    definition)."""
    out: dict[str, np.ndarray] = {}
    if "measures/grad_change" in records:
        out["effective β-smoothness"] = geometric_mean(beta_smoothness(records))
        out["gradient change along the gradient"] = geometric_mean(
            records["measures/grad_change"].max(axis=-1))
        along = records["measures/loss_along"].astype(np.float64)
        out["loss variation along the gradient"] = geometric_mean(along.max(-1) - along.min(-1))
        for name, values in records.items():
            if name.startswith("measures/ics/") and not np.all(values == 0):
                layer = name.removeprefix("measures/ics/")
                out[f"internal covariate shift of {layer}"] = geometric_mean(values)
    layers = [n for n in records if n.startswith("activations/") and n.endswith("/layer")]
    for k, name in enumerate(layers, 1):  # by position: models name their layers differently
        if records[name].shape[1] >= 2:  # a drift needs two records
            out[f"distribution drift at hidden layer {k}"] = drift(records[name])
    return out


def ratio_finding(quantity: str, variant: str, reference: str, a: np.ndarray,
                  b: np.ndarray, interval_alpha: float = ALPHA) -> Finding:
    """``a ÷ b`` paired by seed: ``analysis.stats.compare_paired`` on the log values (the
    seeds where both are finite and positive), exponentiated, the interval at confidence
    ``1 − interval_alpha``; one family of one (``findings`` adjusts p and the interval's
    level over its own)."""
    keep = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    n = int(keep.sum())
    if n == 0:
        return Finding(quantity, variant, reference, 0, np.nan, np.nan, np.nan, np.nan, np.nan,
                       1)
    logs = compare_paired(np.log(a[keep]), np.log(b[keep]), name_a=variant, name_b=reference,
                          metric=quantity, alpha=ALPHA, holm=(None, 1, interval_alpha))
    mean, half = logs.mean_difference, logs.ci_half_width
    return Finding(quantity, variant, reference, n, float(np.exp(mean)),
                   float(np.exp(mean - half)), float(np.exp(mean + half)), logs.p_value,
                   logs.p_value, 1)


def findings(per_variant: Mapping[str, Mapping[str, np.ndarray]],
             pairs: Sequence[tuple[str, str]] | None = None) -> list[Finding]:
    """Each quantity compared paired by seed over ``pairs`` of ``(variant, reference)``
    (default: every variant against the first), p Holm-adjusted over all of them and each
    interval at the level that agrees with it (``analysis.stats.holm``); each with its
    ``sentence``."""
    names = list(per_variant)
    if pairs is None:
        pairs = [(name, names[0]) for name in names[1:]]
    raw = [ratio_finding(quantity, variant, reference, values, per_variant[reference][quantity])
           for variant, reference in pairs
           for quantity, values in per_variant[variant].items()
           if quantity in per_variant[reference]]
    family = holm([f.p_value for f in raw], ALPHA)
    out = []
    for finding, (p_adjusted, tested, interval_alpha) in zip(raw, family, strict=True):
        if tested > 1 and np.isfinite(finding.p_value):  # the interval at Holm's level
            finding = ratio_finding(finding.quantity, finding.variant, finding.reference,
                                    per_variant[finding.variant][finding.quantity],
                                    per_variant[finding.reference][finding.quantity],
                                    interval_alpha)
        finding = Finding(**{**finding.__dict__, "p_adjusted": p_adjusted, "family": tested})
        out.append(Finding(**{**finding.__dict__, "sentence": sentence(finding)}))
    return out


def summary_lines(found: Sequence[Finding], variant_of: Mapping[str, str],
                  axis: Mapping[str, str]) -> list[str]:
    """Findings over a sweep's points, one line per variant, reference and quantity: at how
    many of the axis values the variant's ratio is measurably below 1, above 1, neither, or
    not comparable (diverged seeds), with the range of the measurable ratios. ``variant_of``:
    point → its variant; ``axis``: point → its axis values as text (``lr=0.1``)."""
    groups: dict[tuple[str, str, str], list[Finding]] = {}
    for f in found:
        key = (variant_of[f.variant], variant_of[f.reference], f.quantity)
        groups.setdefault(key, []).append(f)
    lines = []
    for (variant, reference, quantity), group in groups.items():
        lower = [f for f in group if f.significant and f.ratio < 1]
        higher = [f for f in group if f.significant and f.ratio > 1]
        unclear = [f for f in group if f.n >= 2 and not f.significant]
        missing = [f for f in group if f.n < 2]
        parts = []
        for word, members in (("lower", lower), ("higher", higher)):
            if members:
                ratios = [f.ratio for f in members]
                span = (f"{_factor(min(ratios))}×" if len(ratios) == 1 else
                        f"{_factor(min(ratios))}–{_factor(max(ratios))}×")
                where = ", ".join(axis[f.variant] for f in members)
                parts.append(f"{word} at {len(members)} ({where}; ratio {span})")
        if unclear:
            parts.append(f"not measurably different at {len(unclear)}")
        if missing:
            parts.append(f"not comparable at {len(missing)} (fewer than 2 seeds finite in "
                         "both)")
        lines.append(f"{quantity}: {variant} against {reference} at the same "
                     f"{'value' if len(group) == 1 else f'{len(group)} values'}: "
                     + "; ".join(parts))
    return lines


def _factor(ratio: float) -> str:
    return f"{ratio:.2g}" if ratio < 10 else f"{ratio:.0f}"


def sentence(f: Finding) -> str:
    """The finding in words, e.g. "bn_after lowers effective β-smoothness by 3.1× against
    baseline (95% CI 2.6–3.7×, p < 0.001 Holm-adjusted over 12, 5 seeds)"."""
    if f.n == 0:
        return (f"{f.quantity}: no seed of {f.variant} and {f.reference} has finite values to "
                "compare (in each seed one of them diverged)")
    if f.n == 1:
        return (f"{f.quantity}: {f.variant} ÷ {f.reference} = {_factor(f.ratio)}× with one "
                "seed; an interval needs at least 2 seeds")
    p = "p < 0.001" if f.p_adjusted < 0.001 else f"p = {f.p_adjusted:.2g}"
    held = f"Holm-adjusted over {f.family}" if f.family > 1 else ""
    interval = "adjusted CI" if f.family > 1 else "95% CI"  # at Holm's level (findings)
    stat = (f"{interval} {_factor(f.low)}–{_factor(f.high)}×, {p}{' ' + held if held else ''}, "
            f"{f.n} seeds")
    if not f.significant:
        return (f"{f.variant} and {f.reference} do not differ measurably in {f.quantity} "
                f"(ratio {_factor(f.ratio)}×, {stat})")
    if f.ratio < 1:
        return f"{f.variant} lowers {f.quantity} by {_factor(1 / f.ratio)}× against " \
               f"{f.reference} (ratio {_factor(f.ratio)}×, {stat})"
    return f"{f.variant} raises {f.quantity} by {_factor(f.ratio)}× against {f.reference} " \
           f"({stat})"
