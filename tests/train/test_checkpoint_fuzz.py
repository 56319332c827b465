"""Fuzzing the checkpoint reader: whatever bytes ``<stem>.safetensors`` holds, loading gives
back exactly the saved state or a one-line ``CheckpointError``, never another exception;
a header that claims terabytes is refused fast without allocating them; whatever
``<stem>.json`` holds, ``json_copy_problem`` answers with a phrase or ``None``; and reading
never writes a file.

Inputs: arbitrary bytes, with or without a plausible 8-byte header length; a valid
checkpoint truncated at any length, with any byte range overwritten, with bytes appended or
its header length set to huge or small values; its JSON header rewritten (huge, negative or
non-integer shapes and offsets, other or unknown dtypes, metadata that is not JSON, not an
object, a number too long for Python, nested too deeply, without its digest) or replaced by
any JSON value; and arbitrary bytes or JSON values as the ``.json`` copy. Examples are
derandomized (the same on every machine) and nothing is kept between runs.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnlab.errors import BnlabError
from bnlab.train.checkpoint import (
    CheckpointError,
    json_copy_problem,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
STATE = {"params": [{"w": np.arange(6, dtype=np.float32).reshape(3, 2),
                     "b": np.array([0.5, -1.5], np.float32)},
                    {"gamma": np.ones(4, np.float16)}],
         "count": np.array(7, np.int32),
         "mask": np.array([True, False, True])}
TEMPLATE = {"params": [{"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)},
                       {"gamma": np.zeros(4, np.float16)}],
            "count": np.array(0, np.int32),
            "mask": np.zeros(3, bool)}
METADATA = {"variant": "v", "seeds": [1, 2], "history": {"loss": [[2.5, None]]}}
EPOCH = 3
U64_MAX = 2**64 - 1

# JSON values, including NaN, ±inf, huge integers and deep-ish nesting.
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
           | st.sampled_from([2**40, 2**63 - 1, 2**64, U64_MAX, -1, 0, 1, 1e308, "F32", "U8",
                              "BF16", "bnlab", "sha256", "__metadata__"]))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
# Texts JSON parsers choke on in their own ways.
HOSTILE_TEXTS = st.sampled_from([
    "", "{", "[1, 2]", "3", "null", '"text"', "NaN", "[" * 5000 + "]" * 5000,
    '{"a":' * 5000 + "1" + "}" * 5000, '{"epoch": ' + "9" * 5000 + "}",
    '{"epoch": Infinity}', '{"epoch": -Infinity}', '{"epoch": NaN}', '{"epoch": -1}',
    '{"epoch": "3"}', '{"epoch": 2.5}', '{"epoch": true}', '{"epoch": 1e400}',
    '{"epoch": 3, "x": "\\ud800"}', "\ufeff{}", '{"epoch": 3}\x00',
])


def valid_files(tmp: Path) -> tuple[bytes, bytes]:
    """The bytes of a freshly saved ``STATE`` checkpoint and of its JSON copy."""
    save_checkpoint(tmp / "valid", STATE, epoch=EPOCH, metadata=METADATA)
    return (tmp / "valid.safetensors").read_bytes(), (tmp / "valid.json").read_bytes()


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> tuple[bytes, bytes]:
    return valid_files(tmp_path_factory.mktemp("valid"))


def split(raw: bytes) -> tuple[dict, bytes]:
    """A safetensors file's JSON header and its data buffer."""
    length = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def joined(header_text: str | bytes, data: bytes) -> bytes:
    """A safetensors file: the header's length (u64, little-endian), the header, the data."""
    encoded = header_text.encode() if isinstance(header_text, str) else header_text
    return len(encoded).to_bytes(8, "little") + encoded + data


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` (temporary ones included) and its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def loaded(tmp: Path, raw: bytes):
    """``load_checkpoint`` of ``raw`` as ``<tmp>/ckpt.safetensors``: ``(state, epoch,
    metadata)``, or ``None`` for a one-line ``CheckpointError``; it writes nothing."""
    (tmp / "ckpt.safetensors").write_bytes(raw)
    before = snapshot(tmp)
    try:
        return load_checkpoint(tmp / "ckpt", TEMPLATE)
    except CheckpointError as err:
        assert "\n" not in str(err) and str(err).startswith(str(tmp / "ckpt.safetensors"))
        return None
    finally:
        assert snapshot(tmp) == before


def leaves(tree) -> list[np.ndarray]:
    import jax

    return jax.tree_util.tree_leaves(tree)


def assert_exact(result) -> None:
    state, epoch, metadata, records = result
    assert records == {}  # saved without any
    assert epoch == EPOCH and metadata["variant"] == "v"
    for got, want in zip(leaves(state), leaves(STATE), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def assert_fits_template(result) -> None:
    """What an undigested (pre-digest) checkpoint may give: the template's shapes and
    dtypes and a whole number of epochs."""
    state, epoch, _, _ = result
    assert isinstance(epoch, int) and epoch >= 0
    for got, want in zip(leaves(state), leaves(TEMPLATE), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape


@st.composite
def damaged(draw, valid_bytes: bytes) -> bytes:
    """The valid checkpoint with 1–3 kinds of byte-level damage."""
    raw = bytearray(valid_bytes)
    header_length = int.from_bytes(raw[:8], "little")
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "overwrite", "length", "append"]))
        if kind == "truncate" and raw:
            del raw[draw(st.integers(0, len(raw) - 1)):]
        elif kind == "overwrite" and raw:
            start = draw(st.integers(0, len(raw) - 1))
            piece = draw(st.binary(min_size=1, max_size=24))
            raw[start:start + len(piece)] = piece
        elif kind == "length":
            value = draw(st.sampled_from([0, 1, 2, 7, 8, header_length - 1, header_length + 1,
                                          len(raw), 99_999_999, 100_000_001, 10**12, 2**63,
                                          U64_MAX]) | st.integers(0, U64_MAX))
            raw[:8] = max(value, 0).to_bytes(8, "little")
        elif kind == "append":
            raw += draw(st.binary(min_size=1, max_size=16))
    return bytes(raw)


SHAPES = st.lists(st.sampled_from([0, 1, 2, 3, 6, 2**31, 2**32, 2**40, 2**63 - 1, U64_MAX,
                                   -1]), max_size=4)
OFFSETS = st.lists(st.sampled_from([0, 1, 8, 24, 2**32, 2**40, 2**63 - 1, U64_MAX, -1]),
                   min_size=2, max_size=2)
DTYPES = st.sampled_from(["F16", "BF16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "U16",
                          "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3",
                          "C64", "E8M0", "XYZ", "", "f32"])


SAME_SIZE = {"F32": ["I32", "U32"], "F16": ["BF16", "I16", "U16"], "I32": ["F32", "U32"],
             "BOOL": ["U8", "I8"]}


@st.composite
def rewritten(draw, valid_bytes: bytes) -> tuple[bytes, str]:
    """The valid checkpoint with its JSON header rewritten (structured damage), and what
    loading it may give: ``"exact"`` (the digest still guards it: the saved state or an
    error), ``"fits"`` (no digest is left, so any state that fits the template) or
    ``"refused"`` (an error)."""
    header, data = split(valid_bytes)
    names = sorted(k for k in header if k != "__metadata__")
    kind = draw(st.sampled_from(["shape", "offsets", "dtype", "entry", "bnlab", "metadata",
                                 "legacy", "retyped", "renamed", "extra", "whole",
                                 "nested"]))
    name = draw(st.sampled_from(names))
    want = "exact"
    if kind == "shape":
        header[name]["shape"] = draw(SHAPES | JSON_VALUES)
    elif kind == "offsets":
        header[name]["data_offsets"] = draw(OFFSETS | JSON_VALUES)
    elif kind == "dtype":
        header[name]["dtype"] = draw(DTYPES | JSON_VALUES)
    elif kind == "entry":
        header[name] = draw(JSON_VALUES)
    elif kind == "bnlab":
        header["__metadata__"]["bnlab"] = draw(HOSTILE_TEXTS | JSON_VALUES.map(json.dumps)
                                               | st.text(max_size=20))
        if draw(st.booleans()):
            del header["__metadata__"]["sha256"]  # read unchecked, as before digests
            want = "fits"
    elif kind == "metadata":
        header["__metadata__"] = draw(JSON_VALUES)
        want = "fits"
    elif kind in ("legacy", "retyped"):  # as before digests: read unchecked
        del header["__metadata__"]["sha256"]
        want = "fits"
        if kind == "retyped":  # another dtype of the same size: the bytes still fit
            header[name]["dtype"] = draw(st.sampled_from(SAME_SIZE[header[name]["dtype"]]))
            want = "refused"
    elif kind == "renamed":  # a digest under another name must not pass for no digest
        key = draw(st.sampled_from(["sha257", "Sha256", "sha25", ""]))
        header["__metadata__"][key] = header["__metadata__"].pop("sha256")
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
        want = "refused"
    elif kind == "extra":  # metadata the digest does not cover
        key = draw(st.text(max_size=8).filter(lambda k: k not in ("bnlab", "sha256")))
        header["__metadata__"][key] = draw(st.text(max_size=8))
        want = "refused"
    elif kind == "whole":
        header = draw(JSON_VALUES)
        want = "fits"
    elif kind == "nested":
        depth = draw(st.sampled_from([100, 127, 128, 129, 1000, 100_000]))
        return joined('{"a":' * depth + "1" + "}" * depth, data), "refused"
    return joined(json.dumps(header), data), want


@FUZZ
@given(raw=st.binary(max_size=300)
       | st.tuples(JSON_VALUES.map(json.dumps) | HOSTILE_TEXTS, st.binary(max_size=64)).map(
           lambda parts: joined(*parts)))
def test_arbitrary_bytes_are_a_checkpoint_error(tmp_path, raw):
    assert loaded(tmp_path, raw) is None


@FUZZ
@given(data=st.data())
def test_byte_damage_gives_the_exact_state_or_a_checkpoint_error(tmp_path, valid, data):
    raw = data.draw(damaged(valid[0]))
    result = loaded(tmp_path, raw)
    if raw == valid[0]:
        assert result is not None
    if result is not None:  # the digest lets through only unchanged tensors and metadata
        assert_exact(result)


@FUZZ
@given(data=st.data())
def test_a_rewritten_header_gives_a_fitting_state_or_a_checkpoint_error(tmp_path, valid,
                                                                         data):
    raw, want = data.draw(rewritten(valid[0]))
    result = loaded(tmp_path, raw)
    if want == "refused":
        assert result is None
    elif result is not None and want == "exact":
        assert_exact(result)
    elif result is not None:
        assert_fits_template(result)


CLAIMS = st.sampled_from([2**40, 2**50, 2**63 - 1, U64_MAX, 10**12, 100_000_001])


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_a_header_claiming_terabytes_is_refused_fast_without_allocating_them(tmp_path,
                                                                              valid, data):
    header, buffer = split(valid[0])
    name = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    claim = data.draw(CLAIMS)
    kind = data.draw(st.sampled_from(["length", "shape", "offsets", "both"]))
    if kind == "length":
        raw = claim.to_bytes(8, "little") + valid[0][8:]
    else:
        if kind in ("shape", "both"):
            more = data.draw(st.lists(st.sampled_from([1, claim]), max_size=2))
            header[name]["shape"] = [claim, *more]
        if kind in ("offsets", "both"):
            header[name]["data_offsets"] = [header[name]["data_offsets"][0], claim]
        raw = joined(json.dumps(header), buffer)
    start = time.perf_counter()
    tracemalloc.start()
    try:
        result = loaded(tmp_path, raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result is None
    assert peak < 1 << 20  # < 1 MiB, whatever the header claims (up to 2**64 bytes)
    assert time.perf_counter() - start < 5  # refused, not read: no hang


@FUZZ
@given(copy=st.binary(max_size=200) | HOSTILE_TEXTS.map(str.encode)
       | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_any_json_copy_gives_a_phrase_or_none_and_never_raises(tmp_path, valid, copy):
    (tmp_path / "ckpt.safetensors").write_bytes(valid[0])
    (tmp_path / "ckpt.json").write_bytes(copy)
    _, metadata = read_checkpoint(tmp_path / "ckpt")
    before = snapshot(tmp_path)
    problem = json_copy_problem(tmp_path / "ckpt", metadata)
    assert snapshot(tmp_path) == before
    assert problem is None or (isinstance(problem, str) and "\n" not in problem)
    if copy == valid[1]:
        assert problem is None


@FUZZ
@given(data=st.data())
def test_a_damaged_json_copy_is_named_unless_it_says_the_same(tmp_path, valid, data):
    (tmp_path / "ckpt.safetensors").write_bytes(valid[0])
    copy = bytearray(valid[1])
    start = data.draw(st.integers(0, len(copy) - 1))
    piece = data.draw(st.binary(min_size=1, max_size=8) | st.just(b""))
    copy[start:start + max(len(piece), 1)] = piece  # overwritten, or truncated by a byte
    (tmp_path / "ckpt.json").write_bytes(bytes(copy))
    _, metadata = read_checkpoint(tmp_path / "ckpt")
    problem = json_copy_problem(tmp_path / "ckpt", metadata)
    try:
        same = json.loads(bytes(copy)) == json.loads(valid[1])
    except ValueError:
        same = False
    assert (problem is None) == same


def test_the_loader_refuses_what_pickle_or_numpy_would_misread(tmp_path, valid):
    header, buffer = split(valid[0])
    cases = {
        "a numpy file": b"\x93NUMPY\x01\x00" + bytes(100),
        "a pickle": b"\x80\x04\x95" + bytes(40),
        "no tensors": joined(json.dumps({"__metadata__": header["__metadata__"]}), b""),
        "a bool as the epoch": joined(json.dumps({**header, "__metadata__": {
            "bnlab": json.dumps({"epoch": True})}}), buffer),
    }
    for what, raw in cases.items():
        assert loaded(tmp_path, raw) is None, what
    with pytest.raises(BnlabError):
        read_checkpoint(tmp_path / "missing")
