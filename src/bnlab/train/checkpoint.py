"""Checkpoints: arrays in safetensors, everything else in JSON; nothing is ever unpickled.

A checkpoint is ONE file written atomically, ``<stem>.safetensors``: every leaf of the
TrainState (params, BN statistics, optimizer state) named by its pytree path, e.g.
``.params[1]['gamma']``, the arrays a probe plan recorded so far named ``records/<name>``
(``train.loop.Recorded``), and in the safetensors header (``__metadata__``) the JSON document
``{"epoch": completed epochs, **metadata}`` and ``sha256``, a digest of that document and of
every tensor (name, dtype, shape and bytes), so that any changed byte is found when it is
read (``read_checkpoint``). No PRNG key is stored: an epoch's keys derive from the seed and
the epoch number (``engine.RunKeys``). A kill at any moment leaves the previous checkpoint or
the new one, never a mix. A copy of the document is written beside it as ``<stem>.json`` for
people and tools to read; loading never relies on it, and ``check_json_copy`` says whether it
still agrees with the header.

Restoring needs a template state of the same structure (a fresh ``init``): a checkpoint of
another model or optimizer is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from bnlab.errors import BnlabError
from bnlab.io import (
    NotAFile,
    atomic_write_bytes,
    atomic_write_json,
    check_regular,
    json_default,
    parse_json,
    read_problem,
)
from bnlab.lazy import Deferred
from bnlab.limits import MODEL_BYTES, LimitExceeded

jax = Deferred("jax")  # its pytree utilities, when a state is saved or restored

#: The keys of a checkpoint header's ``__metadata__``: from before digests, and since.
METADATA_KEYS = ({"bnlab"}, {"bnlab", "sha256"})
RECORDS = "records/"  # the name prefix of recorded arrays


class CheckpointError(BnlabError):
    """A checkpoint file is missing, unreadable, or its digest does not match: ``path`` and
    ``problem`` (``"is missing"``), and the message ``"<path> <problem>"``."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path} {problem}")
        self.path = path
        self.problem = problem


def digest(document_text: str, arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of the metadata JSON text and of every array (sorted by name: name, dtype,
    shape, then its C-order bytes)."""
    hasher = hashlib.sha256(document_text.encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        hasher.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        hasher.update(array.tobytes())
    return hasher.hexdigest()


def save_checkpoint(stem: Path, state: Any, *, epoch: int, metadata: dict[str, Any],
                    records: Mapping[str, np.ndarray] | None = None) -> str:
    """Write ``state`` (any pytree of arrays), the ``records`` arrays (``{name: array}``),
    the JSON ``metadata`` and their digest, which it returns."""
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_leaves_with_path(state)}
    return save_arrays(stem, arrays, epoch=epoch, metadata=metadata, records=records)


def save_arrays(stem: Path, arrays: Mapping[str, np.ndarray], *, epoch: int,
                metadata: dict[str, Any],
                records: Mapping[str, np.ndarray] | None = None) -> str:
    """``save_checkpoint`` of a state already flat: ``arrays`` by their names in a
    checkpoint (``read_checkpoint``'s, without the records)."""
    arrays = {name: np.asarray(values) for name, values in arrays.items()
              if not name.startswith(RECORDS)}
    arrays |= {RECORDS + name: np.ascontiguousarray(values)
               for name, values in (records or {}).items()}
    document = {"epoch": epoch, **metadata}
    text = json.dumps(document, default=json_default)
    sha256 = digest(text, arrays)
    atomic_write_bytes(stem.with_suffix(".safetensors"),
                       save(arrays, metadata={"bnlab": text, "sha256": sha256}))
    atomic_write_json(stem.with_suffix(".json"), {**json.loads(text), "sha256": sha256})
    return sha256


def read_checkpoint(stem: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, metadata)`` of ``<stem>.safetensors`` after checking its digest; a missing,
    unreadable or changed file is a one-line ``CheckpointError`` naming it. Checkpoints from
    before digests were stored (no ``sha256``) are read unchecked; ``metadata["sha256"]`` is
    then ``None``."""
    path = stem.with_suffix(".safetensors")
    try:
        check_regular(path, limit=MODEL_BYTES)
    except FileNotFoundError:
        raise CheckpointError(path, "is missing") from None
    except (NotAFile, LimitExceeded) as err:
        raise CheckpointError(path, err.reason) from None
    except OSError as err:
        raise CheckpointError(path, f"cannot be read ({err.strerror})") from None
    try:
        header, arrays = _read_safetensors(path)
        metadata = _bnlab_metadata(header)
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as err:
        reason = f"{type(err).__name__}: {err}" if isinstance(err, KeyError) else err
        raise CheckpointError(path, f"is not a readable bnlab checkpoint ({reason})") from None
    stored = header.get("sha256")
    if stored is not None and digest(header["bnlab"], arrays) != stored:
        raise CheckpointError(path, "is damaged: its tensors or metadata do not match the "
                                    "digest stored in it")
    return arrays, {**metadata, "sha256": stored}


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """A safetensors file's ``__metadata__`` and tensors. The library checks the header
    (at most 100 MB, every tensor's shape, dtype and offsets within the file) before
    anything is read, so a header that claims more bytes than the file has costs nothing."""
    with safe_open(str(path), framework="numpy") as handle:
        header = handle.metadata() or {}
        if set(header) not in METADATA_KEYS:
            raise ValueError("its header holds other metadata "
                             f"({', '.join(sorted(json.dumps(key) for key in header))})")
        arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    return header, arrays


def _bnlab_metadata(header: Mapping[str, str]) -> dict[str, Any]:
    """The JSON document of a checkpoint's header: an object with a whole ``epoch`` ≥ 0."""
    metadata = parse_json(header["bnlab"])
    if not isinstance(metadata, dict):
        raise ValueError("its metadata is not a JSON object")
    epoch = metadata.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError("its metadata holds no epoch count")
    return metadata


def json_copy_problem(stem: Path, metadata: Mapping[str, Any]) -> str | None:
    """``None`` when ``<stem>.json`` holds the checkpoint's own ``metadata``, else what is
    wrong with that file (``"is missing"``, ``"does not agree with …"``)."""
    path = stem.with_suffix(".json")
    data, problem = read_problem(path)
    if problem:
        return problem
    try:
        copy = parse_json(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        return f"is not UTF-8 text (byte {err.start})"
    except ValueError as err:
        return f"is not valid JSON ({err})"
    expected = json.loads(json.dumps(dict(metadata), default=json_default))
    if metadata.get("sha256") is None:  # written before digests: the copy has no sha256
        expected.pop("sha256", None)
    if copy != expected:
        return f"does not agree with the header of {stem.with_suffix('.safetensors').name}"
    return None


def records_of(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The recorded arrays among a checkpoint's ``arrays``, by their own names."""
    return {name.removeprefix(RECORDS): values for name, values in arrays.items()
            if name.startswith(RECORDS)}


def load_checkpoint(stem: Path, template: Any
                    ) -> tuple[Any, int, dict[str, Any], dict[str, np.ndarray]]:
    """Restore ``(state, epoch, metadata, records)``; ``template`` gives the tree structure
    and shapes. A damaged file is a ``CheckpointError`` (``read_checkpoint``)."""
    arrays, metadata = read_checkpoint(stem)
    state = restore_state(arrays, template, stem.with_suffix(".safetensors"))
    return state, int(metadata["epoch"]), metadata, records_of(arrays)


def restore_state(arrays: Mapping[str, np.ndarray], template: Any, path: Path) -> Any:
    """The state a checkpoint's ``arrays`` hold, in the structure of ``template`` (a state,
    or ``jax.ShapeDtypeStruct`` leaves from ``jax.eval_shape``); one that does not fit is a
    ``CheckpointError`` naming ``path``."""
    leaves = []
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(template):
        name = jax.tree_util.keystr(key_path)
        if name not in arrays or arrays[name].shape != tuple(leaf.shape):
            raise CheckpointError(path, f"does not fit this experiment ({name} is missing or "
                                        "has another shape)")
        if arrays[name].dtype != np.dtype(leaf.dtype):
            raise CheckpointError(path, f"does not fit this experiment ({name} is "
                                        f"{arrays[name].dtype}, not {np.dtype(leaf.dtype)})")
        leaves.append(arrays[name])
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)
