"""The experiment examples of docs/experiments.md are files bnlab takes: each TOML block
parses and builds its models (a block of ``layers``, or a table, inside a minimal
experiment)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from bnlab.config.files import parse_experiment

DOC = Path(__file__).parents[2] / "docs" / "experiments.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_toml_example_is_an_experiment_bnlab_takes(block):
    if block.lstrip().startswith("layers"):  # a variant's layers
        block = f'name = "example"\n[[variants]]\nname = "v"\n{block}'
    elif block.lstrip().startswith("["):  # a table of an experiment
        block = f'name = "example"\n{block}\n[[variants]]\nname = "v"\nmodel = "baseline"\n'
    config = parse_experiment(tomllib.loads(block), source=str(DOC), text=block, optax=False)
    for variant in config.variants:
        assert variant.build().output_shapes[-1] == (10,)
