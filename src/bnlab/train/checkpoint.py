"""Checkpoints: arrays in safetensors, everything else in JSON; nothing is ever unpickled.

A checkpoint is two files written atomically, arrays first:

    <stem>.safetensors   every leaf of the TrainState (params, BN statistics, optimizer
                         state), named by its pytree path, e.g. ``params[1]['gamma']``,
                         plus ``keys/<name>``: the raw PRNG key data of the run
    <stem>.json          ``{"epoch": completed epochs, "arrays_sha256": …, **metadata}``

The JSON names the digest of the array file it belongs to, so a crash between the two
writes (old JSON, new arrays or the reverse) is detected instead of silently mixing epochs.
Restoring needs a template state of the same structure (a fresh ``init``): a checkpoint of
another model or optimizer is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from bnlab.errors import BnlabError
from bnlab.store import atomic_write_bytes, atomic_write_json


def save_checkpoint(stem: Path, state: Any, *, epoch: int, keys: dict[str, jax.Array],
                    metadata: dict[str, Any]) -> None:
    """Write ``state`` (any pytree of arrays), the PRNG ``keys`` and JSON ``metadata``."""
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_leaves_with_path(state)}
    arrays.update({f"keys/{name}": np.asarray(jax.random.key_data(key))
                   for name, key in keys.items()})
    payload = save(arrays)
    atomic_write_bytes(stem.with_suffix(".safetensors"), payload)
    atomic_write_json(stem.with_suffix(".json"), {
        "epoch": epoch, "arrays_sha256": hashlib.sha256(payload).hexdigest(), **metadata})


def load_checkpoint(stem: Path, template: Any) -> tuple[Any, int, dict[str, Any]]:
    """Restore ``(state, epoch, metadata)``; ``template`` gives the tree structure and shapes."""
    json_path, array_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    try:
        metadata = json.loads(json_path.read_text(encoding="utf-8"))
        payload = array_path.read_bytes()
    except FileNotFoundError as err:
        raise BnlabError(f"checkpoint file {err.filename} is missing; rerun without --resume "
                         "to start over") from None
    except json.JSONDecodeError:
        raise BnlabError(f"{json_path} is not valid JSON; delete the run folder and rerun "
                         "without --resume") from None
    if hashlib.sha256(payload).hexdigest() != metadata.get("arrays_sha256"):
        raise BnlabError(f"{array_path} does not match {json_path.name} (interrupted while "
                         "saving?); delete the run folder and rerun without --resume")
    try:
        arrays = load(payload)
    except SafetensorError as err:
        raise BnlabError(f"{array_path} is not a valid safetensors file ({err})") from None
    leaves = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(template):
        name = jax.tree_util.keystr(path)
        if name not in arrays or arrays[name].shape != np.shape(leaf):
            raise BnlabError(f"{array_path} does not fit this experiment ({name} is missing "
                             "or has another shape); rerun without --resume")
        leaves.append(arrays[name])
    state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)
    return state, int(metadata["epoch"]), metadata
