"""The HTML report: one self-contained file, every run string escaped, the numbers of the run,
and a real headless Chromium renders it offline (images decoded, no console errors)."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bnlab.analysis.gap import final_gaps
from bnlab.analysis.stats import compare_all
from bnlab.cli import main
from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.optimizer import OptimizerConfig
from bnlab.experiments.runner import run_experiment
from bnlab.report.html import write_report
from bnlab.store.reader import load_run
from tests.synthetic import TINY_LAYERS, Hooks, tiny_splits

PLAIN_LAYERS = (
    {"type": "flatten"},
    {"type": "dense", "units": 8, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"},  # 10: read back as Fashion-MNIST's
)
BN_LAYERS = TINY_LAYERS  # flatten, BN, dense 8, BN, dense 10
HOSTILE = "run_<script>&'q\""  # a run folder name that is markup (a legal folder name)
BN = "bn"
DESCRIPTION = '<script>alert("x")</script> & <b>friends</b>'
CHROMIUM = Path("/usr/bin/chromium")
# Chromium with no way out: every host resolves to NOTFOUND and every request that is not
# loopback goes to a proxy on the discard port, which refuses. file:// pages still load.
OFFLINE_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND",
]


CONFIG = ExperimentConfig(
    name="tiny-report", description=DESCRIPTION, epochs=2, batch_size=32, seeds=2,
    optimizer=OptimizerConfig("sgd", 0.1),
    variants=(VariantConfig("plain", layers=PLAIN_LAYERS), VariantConfig(BN, layers=BN_LAYERS)))


class Interrupt(KeyboardInterrupt):
    """Raised from a runner callback: the run stops as Ctrl-C stops it."""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished 2-variant × 2-seed × 2-epoch run on the synthetic 4×4 splits (a few s)."""
    path = tmp_path_factory.mktemp("runs") / HOSTILE
    run_experiment(CONFIG, tiny_splits(), path)
    return path


def interrupted(path: Path, *, variant: str, epoch: int) -> Path:
    """A run of ``CONFIG`` stopped after ``epoch`` epochs of ``variant`` (0: once compiled,
    before its first epoch)."""
    def stop(name, record):
        if name == variant and record.epoch == epoch:
            raise Interrupt

    def stop_compiled(name, seconds):
        if name == variant and epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_experiment(CONFIG, tiny_splits(), path,
                       observer=Hooks(on_epoch=stop, on_compiled=stop_compiled))
    return path


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory) -> tuple[Path, str]:
    out = write_report([load_run(run_dir)], tmp_path_factory.mktemp("report") / "report.html")
    return out, out.read_text(encoding="utf-8")


def test_report_names_the_experiment_its_settings_and_every_variant(report, run_dir):
    _, text = report
    assert "<title>bnlab report: tiny-report</title>" in text
    for expected in ("sgd, learning rate 0.1", "<td>32</td>", "42, 43", html.escape(str(run_dir)),
                     "jaxlib", "plain", "<td>bn</td>", html.escape(HOSTILE)):
        assert expected in text, expected
    assert text.count('<div class="model">') == 2


def test_results_show_mean_sd_and_95_percent_t_interval_over_seeds(report, run_dir):
    _, text = report
    finals = load_run(run_dir).histories["plain"].final("val_accuracy")  # (2,)
    mean, sd = finals.mean(), finals.std(ddof=1)
    half = stats.t.ppf(0.975, df=1) * sd / np.sqrt(2)  # 12.706 · sd / √2
    assert f"{mean:.4f} ± {sd:.4f}" in text
    assert f"95% CI [{mean - half:.4f}, {mean + half:.4f}]" in text
    assert "pending" not in text  # the run is complete: test metrics are there


def test_report_states_every_verdict_on_final_validation_accuracy(report, run_dir):
    _, text = report
    run = load_run(run_dir)
    verdicts = compare_all({n: h.final("val_accuracy") for n, h in run.histories.items()},
                           epochs=2)
    assert len(verdicts) == 1
    assert html.escape(verdicts[0].verdict) in text


def test_model_summaries_carry_keras_totals_for_28x28_inputs(report):
    # plain: 784·8+8 + 8·10+10 = 6,370 trainable. bn: γ,β of 784 and 8 features (1,584) + the
    # dense layers (6,370) = 7,954 trainable; moving mean and variance 1,584 non-trainable.
    _, text = report
    for total, trainable, non_trainable in (("6,370", "6,370", "0"),
                                            ("9,538", "7,954", "1,584")):
        assert (f"<dt>Total params</dt><dd>{total}</dd><dt>Trainable params</dt>"
                f"<dd>{trainable}</dd><dt>Non-trainable params</dt>"
                f"<dd>{non_trainable}</dd>") in text
    assert "PyTorch view: 7,954 parameters; buffers: 1,584 running statistics + 2 " \
           "num_batches_tracked" in text
    assert text.count("<td>moving_variance</td>") == 2  # the BN variables of bn's two layers
    assert "batch_normalization_1 <span class=\"type\">(BatchNormalization)</span>" in text


def test_report_is_self_contained_with_inline_png_and_no_network_reference(report):
    _, text = report
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", text, flags=re.I)
    assert references, "expected at least the inline image"
    assert all(r.startswith(("data:image/png;base64,", "#")) for r in references), references
    assert not re.search(r"url\(|@import|<link|<script", text, flags=re.I)


def test_strings_from_the_run_are_escaped(report):
    _, text = report
    assert "<script" not in text.lower() and "<b>friends" not in text
    assert html.escape(DESCRIPTION) in text  # &lt;script&gt;alert(&quot;x&quot;)…
    assert html.escape(HOSTILE) in text and "run_&lt;script&gt;&amp;&#x27;q&quot;" in text


def test_unfinished_run_is_reported_with_what_it_has(tmp_path):
    run = interrupted(tmp_path / "run", variant=BN, epoch=1)
    text = write_report([load_run(run)], tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<span class="badge warn">unfinished</span>' in text
    assert re.search(rf"<td>{BN}</td><td>unfinished</td><td class=\"num\">1</td>", text)
    assert text.count("pending") == 4  # test metrics of 2 variants
    assert "they appear when the run is complete" in text.replace("\n", " ")
    # The learning curves, the BN variant's train/inference gap so far (its final gap comes
    # with the verdicts) and the activation bands the default probe plan recorded.
    assert text.count("data:image/png;base64,") == 3
    assert "The final gaps come, as the verdicts do" in text


def test_run_with_no_finished_epoch_reports_variants_as_not_started(tmp_path):
    run = interrupted(tmp_path / "run", variant="plain", epoch=0)
    text = write_report([load_run(run)], tmp_path / "r.html").read_text(encoding="utf-8")
    assert text.count('<td class="muted" colspan="5">not started</td>') == 2
    assert "No epoch has finished yet" in text and "<img" not in text


def test_cli_report_writes_report_html_in_the_run_folder_and_prints_its_path(run_dir, tmp_path,
                                                                             capsys):
    run = shutil.copytree(run_dir, tmp_path / "run")
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert "tiny-report" in (run / "report.html").read_text(encoding="utf-8")


def test_cli_report_of_several_runs_writes_one_file_with_both(run_dir, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(run_dir), str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == "report.html"
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'href="#run-1"' in text and 'id="run-2"' in text
    assert main(["report", str(run_dir), "--out", str(tmp_path / "x" / "y.html")]) == 0
    assert (tmp_path / "x" / "y.html").is_file()


def test_cli_report_of_a_folder_that_is_no_run_is_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope does not exist" in err
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a bnlab run folder" in err


@pytest.mark.server
def test_headless_chromium_renders_report_offline_images_decoded_no_console_errors(
        report, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing; `bash scripts/install-test-tools.sh` (as root) "
                    "installs Debian's chromium")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Python playwright is missing (pip install -e '.[test]')")
    page_path, _ = report
    shot = tmp_path / "report.png"
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=CHROMIUM, headless=True, args=OFFLINE_FLAGS,
            viewport={"width": 1280, "height": 900}, timeout=10_000)
        try:
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"{r.url[:80]}: {r.failure}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri(), wait_until="load", timeout=10_000)
            page.screenshot(path=shot, full_page=True)
            images = page.evaluate(
                "Array.from(document.images, i => i.complete && i.naturalWidth > 0)")
            overflowing = page.evaluate("""Array.from(document.querySelectorAll('table'))
                .filter(t => t.scrollWidth > t.parentElement.clientWidth + 1).length""")
            title = page.title()
        finally:
            context.close()
    where = f"(screenshot: {shot})"
    assert title == "bnlab report: tiny-report", where
    # The learning curves, the train/inference gap and the activation bands (the default
    # probe plan), each decoded.
    assert images == [True, True, True], f"an <img> did not decode: {images} {where}"
    assert errors == [], f"console errors or failed loads: {errors} {where}"
    assert all(u.startswith(("file:", "data:")) for u in requests), f"{requests} {where}"
    assert overflowing == 0, f"{overflowing} table(s) wider than their box {where}"
    assert shot.stat().st_size > 10_000, where


def test_a_resumed_run_shows_where_each_resume_ran(run_dir, tmp_path):
    import json

    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    env = json.loads((copy / "environment.json").read_text())
    env["resumes"] = [{"at": "2026-11-26T05:00:00+00:00", "device": "gpu:<H200>",
                       "packages": {"jax": "0.11.2"}}]
    (copy / "environment.json").write_text(json.dumps(env))
    text = write_report([load_run(copy)], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<th scope=\"row\">resumed</th><td>2026-11-26T05:00:00+00:00 on gpu:&lt;H200&gt;; " \
           "jax 0.11.2</td>" in text


def test_the_why_section_states_what_the_probes_measured_in_computed_sentences(tmp_path):
    import dataclasses

    from bnlab.analysis.why import per_seed
    from bnlab.report.why import why_findings
    from bnlab.train.probes import ProbePlan

    config = dataclasses.replace(CONFIG, description="", batch_size=8, probe=ProbePlan(
        every=2, rows=12, units=2, measures_every=3, test_each_epoch=True))
    run_experiment(config, tiny_splits(), tmp_path / "run")
    run = load_run(tmp_path / "run")
    text = write_report([run], tmp_path / "r.html").read_text(encoding="utf-8")
    why = text[text.index("<h3>Why</h3>"):text.index("<h3>Models</h3>")]
    assert "activation statistics every 2 steps on the first 12 validation images" in why
    # One sentence per quantity the two variants share, each with its own numbers.
    findings = why_findings(run)
    shared = set(per_seed(run.probes["plain"])) & set(per_seed(run.probes[BN]))
    assert {f.quantity for f in findings} == shared and len(findings) >= 4
    for finding in findings:
        assert html.escape(finding.sentence) in why
        assert f"{finding.n} seeds" in finding.sentence and "plain" in finding.sentence
    assert why.count("data:image/png;base64,") == 3  # bands, Figure 1, the measures


def test_the_gap_section_shows_each_bn_variant_in_both_modes_with_its_paired_sentence(
        report, run_dir):
    _, page = report
    run = load_run(run_dir)
    history = run.histories[BN].per_seed
    assert "val_batchstats_accuracy" in history and "val_batchstats_accuracy" not in (
        run.histories["plain"].per_seed)  # only the model with BatchNorm measured it
    start = page.index("<h3>Training vs inference</h3>")
    section = page[start:page.index("<h3>", start + 1)]
    assert f"<td>{BN}</td>" in section and "<td>plain</td>" not in section
    (gap,) = final_gaps({BN: history}, epochs=CONFIG.epochs)
    np.testing.assert_allclose(gap.comparison.mean_difference, np.mean(
        history["val_accuracy"][:, -1] - history["val_batchstats_accuracy"][:, -1]))
    assert html.escape(gap.sentence) in section
    assert section.count("<img") == 1
    statistics = (run_dir / BN / "statistics.csv").read_text().splitlines()[0]
    assert "bn_gap_accuracy_mean" in statistics
