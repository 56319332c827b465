"""Checkpoints restore exactly, carry a digest that finds any changed byte, and refuse
damaged or foreign files with one clear line naming the file."""

from __future__ import annotations

import json

import jax
import numpy as np
import optax
import pytest

from bnlab.errors import BnlabError
from bnlab.nn.zoo import get_model
from bnlab.train.checkpoint import (
    CheckpointError,
    json_copy_problem,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from bnlab.train.engine import init_train_state


def adam_state(seed: int = 0):
    return init_train_state(get_model("bn_after"), optax.adam(1e-3), jax.random.key(seed))


def test_round_trip_restores_params_bn_statistics_optimizer_state_and_epoch(tmp_path):
    state = adam_state()
    save_checkpoint(tmp_path / "ckpt", state, epoch=3, metadata={"note": "x"})
    restored, epoch, metadata, _ = load_checkpoint(tmp_path / "ckpt", adam_state(seed=1))
    assert epoch == 3 and metadata["note"] == "x"
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state),
                         strict=True):
        np.testing.assert_array_equal(got, want)
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(state)


def test_recorded_arrays_travel_with_the_state_under_the_same_digest(tmp_path):
    records = {"activations/dense/pre_activation/layer": np.arange(42, dtype=np.float32)
               .reshape(2, 3, 7), "activations/steps": np.array([0, 100, 200])}
    save_checkpoint(tmp_path / "ckpt", adam_state(), epoch=1, metadata={}, records=records)
    _, _, _, restored = load_checkpoint(tmp_path / "ckpt", adam_state())
    assert restored.keys() == records.keys()
    for name, values in records.items():
        np.testing.assert_array_equal(restored[name], values)
        assert restored[name].dtype == values.dtype
    data = bytearray((tmp_path / "ckpt.safetensors").read_bytes())
    data[-5] ^= 0xFF  # a byte of the last tensor: sorted by name, a record's or the state's
    (tmp_path / "ckpt.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(tmp_path / "ckpt", adam_state())


def test_checkpoint_files_are_safetensors_and_json_never_pickle(tmp_path):
    state = adam_state()
    save_checkpoint(tmp_path / "ckpt", state, epoch=3, metadata={"variant": "v"})
    data = (tmp_path / "ckpt.safetensors").read_bytes()
    # safetensors: a little-endian u64 header length, a JSON header, then raw tensor bytes.
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    leaf_names = {jax.tree_util.keystr(path)
                  for path, _ in jax.tree_util.tree_leaves_with_path(state)}
    assert set(header) == leaf_names | {"__metadata__"}  # no PRNG key: they derive from seeds
    assert json.loads(header["__metadata__"]["bnlab"]) == {"epoch": 3, "variant": "v"}
    digest = header["__metadata__"]["sha256"]
    assert len(digest) == 64 and json.loads((tmp_path / "ckpt.json").read_text()) == {
        "epoch": 3, "variant": "v", "sha256": digest}
    assert b"\x80\x04" not in data[:8 + length]  # no pickle protocol marker in the header


def test_checkpoint_is_one_file_and_the_json_copy_is_not_needed_to_load(tmp_path):
    # A kill between the array file and its JSON copy must not break resuming: loading
    # reads only the safetensors file, whose header carries the metadata.
    save_checkpoint(tmp_path / "ckpt", adam_state(0), epoch=1, metadata={"m": 1})
    save_checkpoint(tmp_path / "newer", adam_state(1), epoch=2, metadata={"m": 2})
    (tmp_path / "ckpt.safetensors").write_bytes((tmp_path / "newer.safetensors").read_bytes())
    (tmp_path / "ckpt.json").unlink()
    state, epoch, metadata, _ = load_checkpoint(tmp_path / "ckpt", adam_state())
    assert (epoch, metadata["m"]) == (2, 2)
    want = jax.tree_util.tree_leaves(adam_state(1))
    for got, expected in zip(jax.tree_util.tree_leaves(state), want, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_damaged_checkpoint_is_refused_with_one_line(tmp_path):
    save_checkpoint(tmp_path / "ckpt", adam_state(), epoch=1, metadata={})
    data = (tmp_path / "ckpt.safetensors").read_bytes()
    (tmp_path / "ckpt.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BnlabError, match=r"ckpt\.safetensors is not a readable bnlab "
                                         "checkpoint") as err:
        load_checkpoint(tmp_path / "ckpt", adam_state())
    assert "\n" not in str(err.value)


def test_sixteen_flipped_bytes_anywhere_in_the_tensor_data_fail_the_digest(tmp_path):
    save_checkpoint(tmp_path / "ckpt", adam_state(), epoch=1, metadata={"m": 1})
    path = tmp_path / "ckpt.safetensors"
    data = path.read_bytes()
    start = 8 + int.from_bytes(data[:8], "little")  # the tensors follow the JSON header
    for offset in np.linspace(start, len(data) - 16, 7).astype(int):
        damaged = bytearray(data)
        damaged[offset:offset + 16] = bytes(b ^ 0xFF for b in damaged[offset:offset + 16])
        path.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=r"ckpt\.safetensors is damaged: its tensors "
                                                  "or metadata do not match the digest"):
            load_checkpoint(tmp_path / "ckpt", adam_state())
    path.write_bytes(data)
    assert read_checkpoint(tmp_path / "ckpt")[1]["m"] == 1


def test_edited_metadata_fails_the_digest_and_a_stale_json_copy_is_named(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save

    save_checkpoint(tmp_path / "ckpt", adam_state(), epoch=1, metadata={"m": 1})
    with safe_open(str(tmp_path / "ckpt.safetensors"), framework="numpy") as handle:
        header = handle.metadata()
        arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    header["bnlab"] = header["bnlab"].replace('"epoch": 1', '"epoch": 2')
    (tmp_path / "edited.safetensors").write_bytes(save(arrays, metadata=header))
    with pytest.raises(CheckpointError, match="do not match the digest"):
        read_checkpoint(tmp_path / "edited")
    _, metadata = read_checkpoint(tmp_path / "ckpt")
    assert json_copy_problem(tmp_path / "ckpt", metadata) is None
    copy = json.loads((tmp_path / "ckpt.json").read_text())
    (tmp_path / "ckpt.json").write_text(json.dumps({**copy, "m": 2}))
    assert json_copy_problem(tmp_path / "ckpt", metadata) == (
        "does not agree with the header of ckpt.safetensors")
    (tmp_path / "ckpt.json").unlink()
    assert json_copy_problem(tmp_path / "ckpt", metadata) == "is missing"


def test_checkpoint_of_another_model_is_refused(tmp_path):
    save_checkpoint(tmp_path / "ckpt", adam_state(), epoch=1, metadata={})
    other = init_train_state(get_model("baseline"), optax.adam(1e-3), jax.random.key(0))
    with pytest.raises(BnlabError, match="does not fit this experiment"):
        load_checkpoint(tmp_path / "ckpt", other)


def test_a_checkpoint_written_before_keys_were_dropped_still_restores(tmp_path):
    # Checkpoints of earlier bnlab versions also held the root PRNG keys as keys/<name>.
    from safetensors.numpy import save

    state = adam_state()
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_leaves_with_path(state)}
    arrays["keys/root"] = np.asarray(jax.random.key_data(jax.random.key(7)))
    (tmp_path / "old.safetensors").write_bytes(
        save(arrays, metadata={"bnlab": json.dumps({"epoch": 2})}))
    restored, epoch, metadata, _ = load_checkpoint(tmp_path / "old", adam_state(seed=1))
    assert epoch == 2 and metadata["sha256"] is None  # from before digests: read unchecked
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state),
                         strict=True):
        np.testing.assert_array_equal(got, want)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.safetensors is missing"):
        load_checkpoint(tmp_path / "nothing", adam_state())
