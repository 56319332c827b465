"""A run's results from Python, as ``bnlab report`` writes them, and the verdicts and
curves of runs or of ``fit`` histories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from bnlab.analysis.stats import PairedComparison, compare_final_accuracy
from bnlab.api.stored import RunSource, open_run
from bnlab.errors import BnlabError, ConfigError, OptionRenderer, python_option
from bnlab.report.html import write_report as html_report
from bnlab.report.plots import learning_curves
from bnlab.store.outputs import check_output
from bnlab.store.reader import load_run
from bnlab.store.runs import Run
from bnlab.train.history import History


@dataclass(frozen=True)
class Report:
    """What ``write_report`` wrote: the HTML file, the runs in it, and each run that could
    not be read with why (named in the report too)."""

    path: Path
    runs: tuple[Run, ...]
    unreadable: tuple[tuple[Path, str], ...] = ()


def write_report(runs: RunSource | Sequence[RunSource], out: Path | str | None = None, *,
                 runs_dir: Path | str = "runs", force: bool = False,
                 option: OptionRenderer = python_option) -> Report:
    """Write the self-contained HTML report of ``runs`` (``Run`` objects, run folders, or
    runs' names under ``runs_dir``), as ``bnlab report``: to ``out``, by default
    ``<run>/report.html`` for one run and ``./report.html`` for several; a named ``out`` that
    exists is written over only if ``force``, and a run's own files never
    (``store.outputs``). A run that cannot be
    read is named in the report while the others are reported; when it is the only one, or
    when none can be read, a ``BnlabError``. ``option`` names the caller's options in what
    is said of them (``errors``)."""
    sources = [runs] if isinstance(runs, Run | Path | str) else list(runs)
    readable, unreadable = [], []
    for source in sources:
        try:
            readable.append(open_run(source, runs_dir))
        except BnlabError as err:
            if len(sources) == 1:
                raise
            unreadable.append((Path(source), err.render(option)))
    if not readable:
        raise BnlabError("none of the runs could be read; give run folders that list_runs "
                         "lists")
    default = readable[0].path / "report.html" if len(sources) == 1 else Path("report.html")
    path = html_report(readable, check_output(out or default, force=force,
                                              given=out is not None), unreadable=unreadable)
    return Report(path, tuple(readable), tuple(unreadable))


def _histories(source: RunSource | History | Mapping[str, History],
               where: str) -> Run | dict[str, History]:
    """A ``Run`` (a path is loaded), or ``{name: History}`` (one history named by its
    model)."""
    if isinstance(source, str | Path):
        return load_run(source)
    if isinstance(source, Run):
        return source
    if isinstance(source, History):  # a Fitted history is named by its model
        model = getattr(source, "model", None)
        return {model.name if model is not None else "model": source}
    if isinstance(source, Mapping) and all(isinstance(h, History) for h in source.values()):
        return dict(source)
    raise ConfigError(f"{where}: give a Run, a run folder, a History or {{name: History}}, "
                      f"got {type(source).__name__}")


def plot_curves(source: RunSource | History | Mapping[str, History], *,
                title: str = "") -> Figure:
    """Loss and accuracy per epoch, training and validation, as a Matplotlib ``Figure``
    (shown inline as a cell's value in Jupyter; ``figure.savefig(path)`` writes it) of a
    ``Run`` (or run folder), a ``History`` or ``{name: History}``. With several seeds: the
    mean and its 95% confidence band."""
    source = _histories(source, "plot_curves")
    if isinstance(source, Run):
        histories, title = source.histories, title or source.name
    else:
        histories = source
    return learning_curves({name: h.per_seed for name, h in histories.items()}, title=title)


def compare(source: RunSource | Mapping[str, History]) -> list[PairedComparison]:
    """The seed-paired verdicts on the final validation accuracy of every pair of models
    (Holm-adjusted), as data: a ``Run``'s (or run folder's), or those of ``{name: History}``
    from ``fit`` over the same seeds."""
    source = _histories(source, "compare")
    if isinstance(source, Run):
        return source.comparisons()
    histories = source
    epochs = {h.epochs for h in histories.values()}
    if len(epochs) != 1 or any("val_accuracy" not in h.per_seed for h in histories.values()):
        raise ConfigError("compare: give histories of the same number of epochs, each fitted "
                          "with validation_data")
    if len({h.seeds for h in histories.values()}) != 1:
        raise ConfigError("compare: the histories were trained over different seeds "
                          f"({'; '.join(f'{n}: {h.seeds}' for n, h in histories.items())}); "
                          "a seed-paired test needs the same seed and seeds in every fit")
    return compare_final_accuracy({n: h.per_seed for n, h in histories.items()}, epochs.pop())
