"""Checkpoints: arrays in safetensors, everything else in JSON; nothing is ever unpickled.

A checkpoint is ONE file written atomically, ``<stem>.safetensors``: every leaf of the
TrainState (params, BN statistics, optimizer state) named by its pytree path, e.g.
``.params[1]['gamma']``, and in the safetensors header (``__metadata__``) the JSON document
``{"epoch": completed epochs, **metadata}``. No PRNG key is stored: an epoch's keys derive
from the seed and the epoch number (``engine.RunKeys``). A
kill at any moment leaves the previous checkpoint or the new one, never a mix. A copy of the
JSON is written beside it as ``<stem>.json`` for people and tools to read; loading never
relies on it.

Restoring needs a template state of the same structure (a fresh ``init``): a checkpoint of
another model or optimizer is refused with a clear message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from bnlab.errors import BnlabError
from bnlab.io import atomic_write_bytes, atomic_write_json, json_default


def save_checkpoint(stem: Path, state: Any, *, epoch: int, metadata: dict[str, Any]) -> None:
    """Write ``state`` (any pytree of arrays) and the JSON ``metadata``."""
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_leaves_with_path(state)}
    document = {"epoch": epoch, **metadata}
    text = json.dumps(document, default=json_default)
    atomic_write_bytes(stem.with_suffix(".safetensors"), save(arrays, metadata={"bnlab": text}))
    atomic_write_json(stem.with_suffix(".json"), document)


def load_checkpoint(stem: Path, template: Any) -> tuple[Any, int, dict[str, Any]]:
    """Restore ``(state, epoch, metadata)``; ``template`` gives the tree structure and shapes."""
    path = stem.with_suffix(".safetensors")
    if not path.is_file():
        raise BnlabError(f"checkpoint {path} is missing; rerun without {{resume=True}} to "
                         "start over")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = json.loads(handle.metadata()["bnlab"])
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        epoch = int(metadata["epoch"])
    except (SafetensorError, KeyError, TypeError, ValueError) as err:
        raise BnlabError(f"{path} is not a bnlab checkpoint ({err}); delete the run folder "
                         "and rerun without {resume=True}") from None
    leaves = []
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(template):
        name = jax.tree_util.keystr(key_path)
        if name not in arrays or arrays[name].shape != np.shape(leaf):
            raise BnlabError(f"{path} does not fit this experiment ({name} is missing or has "
                             "another shape); rerun without {resume=True}")
        leaves.append(arrays[name])
    state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)
    return state, epoch, metadata
