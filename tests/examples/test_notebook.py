"""The example notebook, executed by a real Jupyter kernel, cut to a few hundred steps.

Its parameters cell (tagged ``parameters``) is overridden by a cell inserted after it, as
papermill does: 6,424 training rows (200 steps of 32 and a last batch of 24, as the
notebook's 55,000 rows end), 2 epochs, 2 seeds in the final comparison. The assertions read
the outputs a reader sees: the summary's counts, accuracy above chance, the figures, the
verdicts, and a progress bar rather than a wall of epoch lines.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the test extra")

pytestmark = [pytest.mark.realdata, pytest.mark.server]

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "reproduce_the_notebook.ipynb"
PARAMETERS = {"EPOCHS": 2, "TRAIN_ROWS": 6424, "SEEDS": 2}
CHANCE = 0.10  # ten balanced classes


@pytest.fixture(scope="module")
def notebook(fashion_mnist, tmp_path_factory):
    """The notebook after a real kernel ran it in a fresh folder (its run store goes there)."""
    del fashion_mnist  # skip where the real data is absent: the kernel must not download
    nb = nbformat.read(NOTEBOOK, as_version=4)
    index = next(i for i, cell in enumerate(nb.cells)
                 if "parameters" in cell.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in PARAMETERS.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, injected)
    folder = tmp_path_factory.mktemp("notebook")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}}).execute()
    return nb, folder


def cell(nb, source_start: str):
    """The one code cell whose source starts with ``source_start``."""
    (found,) = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    return found


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def texts(cell) -> str:
    """Everything a cell printed or showed as text, joined, without terminal colours."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return ANSI.sub("", "\n".join(parts))


def test_the_committed_notebook_is_executed_in_order_and_has_no_error_output():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not any(o.output_type == "error" for c in code for o in c.outputs)


def test_the_summaries_show_the_notebooks_keras_counts(notebook):
    nb, _ = notebook
    (shown,) = cell(nb, "bn_after =").outputs  # one output: the summary's own HTML and text
    html = shown.data["text/html"]
    assert "Total params: 271,346" in shown.data["text/plain"]
    for count in ("271,346", "268,978", "2,368"):
        assert count in html
    assert "batch_normalization_2" in html and "<td>moving_variance</td>" in html
    arithmetic = texts(cell(nb, "features ="))
    assert arithmetic.startswith("([784, 300, 100], 4736, 2368, True, 2368)")
    flags = texts(cell(nb, "for variable in"))
    assert "variable name: gamma, is trainable: True" in flags
    assert "variable name: moving_variance, is trainable: False" in flags


def test_every_model_learns_well_above_chance(notebook):
    nb, _ = notebook
    final = float(texts(cell(nb, 'history["baseline"].history')))
    assert final > 4 * CHANCE
    accuracies = eval(texts(cell(nb, "{name: round(")))  # a dict literal the cell printed
    assert set(accuracies) == {"baseline", "bn_after", "bn_before"}
    assert all(value > 4 * CHANCE for value in accuracies.values()), accuracies


def test_training_shows_a_live_bar_not_a_wall_of_lines(notebook):
    nb, _ = notebook
    fit = cell(nb, 'history["bn_after"] = bnlab.fit(')
    kinds = [o.output_type for o in fit.outputs]
    assert "stream" not in kinds  # no printed epoch lines
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for o in fit.outputs) or nb.metadata.get("widgets")
    final = texts(fit)
    assert re.search(r"bn_after .* 2/2 epochs .* loss [\d.]+ · acc [\d.]+ · val_loss [\d.]+ · "
                     r"val_acc [\d.]+", final), final
    assert "Epoch 1/2" not in final


def test_the_curves_are_figures_shown_inline(notebook):
    nb, _ = notebook
    for start in ("bnlab.plot_curves(history", "bnlab.plot_curves(run)"):
        (png,) = [o.data["image/png"] for o in cell(nb, start).outputs
                  if "image/png" in o.get("data", {})]
        assert base64.b64decode(png).startswith(b"\x89PNG") and len(png) > 20_000


def test_the_comparison_is_a_stored_run_with_seed_paired_verdicts(notebook):
    nb, folder = notebook
    assert re.search(r"'seed', 3 variants × 2 seed\(s\), 2 epochs, complete", texts(
        cell(nb, 'run = bnlab.run("seed"')))
    (run_dir,) = (folder / "runs").iterdir()
    assert (run_dir / "summary.json").is_file()
    shown = texts(cell(nb, "bnlab.show(run)"))
    assert "Final metrics (mean ± sd over seeds)" in shown and "Verdicts" in shown
    assert "6,424 / 5,000 / 10,000 rows (train / val / test)" in shown  # the subset, on record
    pairs = eval(texts(cell(nb, "[(c.name_a")), {"nan": float("nan")})
    assert len(pairs) == 3 and {frozenset(p[:2]) for p in pairs} == {
        frozenset(p) for p in (("baseline", "bn_after"), ("baseline", "bn_before"),
                               ("bn_after", "bn_before"))}


def test_the_folded_onnx_export_is_verified_and_served(notebook):
    nb, folder = notebook
    shown = texts(cell(nb, "exported = bnlab.export_model(")).strip()
    found = re.fullmatch(r"\('bn_after-seed42-folded\.onnx',\s+271346,\s+266610,\s+"
                         r"Verification\(rows=10000, max_probability_error=(\S+), "
                         r"max_logit_error=\S+, same_top_class=(\d+), near_ties=(\d+)\)\)",
                         shown)
    assert found, shown  # folded: 4,736 BN numbers gone; checked on the 10,000 test images
    assert float(found[1]) <= 1e-5 and int(found[2]) >= 10_000 - int(found[3])
    (run_dir,) = (folder / "runs").iterdir()
    assert (run_dir / "bn_after-seed42-folded.onnx").is_file()
    assert float(texts(cell(nb, "from bnlab.export.onnx import"))) > 4 * CHANCE


def test_predict_classifies_an_image_file_with_the_exported_model(notebook):
    nb, _ = notebook
    shown = texts(cell(nb, "import tempfile")).strip()
    top, truth, (right, tested) = eval(shown)  # ((name, p), …), the true class, the grid
    assert len(top) == 3 and all(0 <= p <= 1 for _, p in top) and isinstance(truth, str)
    assert tested == 16 and right > 16 * CHANCE
