"""Every optional path without its extra: one line naming the extra to install, exit 2, and
nothing written. The extras are removed from this interpreter as an install without them
lacks them: their module entry is ``None``, so that importing them fails as it would."""

from __future__ import annotations

import sys

import pytest

from bnlab.cli import main
from tests.synthetic import TINY_LAYERS


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run of the tiny model (its files are what the optional paths read)."""
    from bnlab.config.experiment import ExperimentConfig, VariantConfig
    from bnlab.experiments.runner import run_experiment
    from tests.synthetic import tiny_splits

    config = ExperimentConfig(name="extras", variants=(VariantConfig("bn", layers=TINY_LAYERS),),
                              epochs=1, seeds=1)
    run_dir = tmp_path_factory.mktemp("extras") / "run"
    run_experiment(config, tiny_splits(), run_dir)
    return run_dir


def files(folder) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.parametrize(("missing", "argv", "extra"), [
    ("h5py", ["export", "{run}", "--format", "keras", "--out", "{tmp}/m.keras"], "keras"),
    ("onnxruntime", ["export", "{run}", "--out", "{tmp}/m.onnx"], "onnx"),
    ("onnx", ["predict", "{tmp}/m.onnx", "--test", "4"], "onnx"),
    ("h5py", ["predict", "{tmp}/m.keras", "--test", "4"], "keras"),
    ("ray", ["sweep", "lr-robustness", "--ray", "--runs-dir", "{tmp}/runs"], "ray"),
])
def test_an_optional_path_without_its_extra_is_one_line_naming_it(
        finished_run, tmp_path, capsys, monkeypatch, missing, argv, extra):
    monkeypatch.setitem(sys.modules, missing, None)  # as an install without the extra
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    (tmp_path / "m.keras").write_bytes(b"PK")
    before = files(tmp_path) | files(finished_run)
    capsys.readouterr()
    code = main([a.format(run=finished_run, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and f"pip install 'bnlab[{extra}]'" in err.replace(
        '"', "'"), err
    assert files(tmp_path) | files(finished_run) == before  # nothing written
