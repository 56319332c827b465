"""Fuzzing the IDX reader and the chain that reads gzip-compressed IDX files: any bytes give
an array or a one-line ``DataError``, never another exception; a header claiming an absurd
size is refused before anything is allocated; and reading never writes, while a download
writes the whole verified file or nothing.

Inputs: arbitrary bytes; valid IDX files (every dtype, shapes up to 4 axes) truncated, with
bytes flipped, with a wrong magic, dtype code or axis count, or with dimensions replaced by
huge ones; their gzip compressions with the same damage. Examples are derandomized (the
same on every machine) and nothing is kept between runs.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bnlab.data.datasets import load_dataset
from bnlab.data.idx import IDX_DTYPES, gunzip, read_idx, write_idx
from bnlab.data.sources import read_files
from bnlab.data.spec import IdxFile
from bnlab.errors import DataError, GzipError
from tests.data.tinydata import NAMES, make_tiny

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
NATIVE_DTYPES = [dtype.newbyteorder("=") for dtype in IDX_DTYPES.values()]
U32_MAX = 2**32 - 1

VALID_IDX = hnp.arrays(
    dtype=st.sampled_from(NATIVE_DTYPES),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4),
).map(write_idx)


@st.composite
def damaged(draw, files=VALID_IDX) -> bytes:
    """A file from ``files`` with 1–3 kinds of damage."""
    raw = bytearray(draw(files))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "magic", "code", "ndim", "dims",
                                     "append"]))
        if kind == "truncate" and raw:
            del raw[draw(st.integers(0, len(raw) - 1)):]
        elif kind == "flip" and raw:
            at = draw(st.integers(0, len(raw) - 1))
            raw[at] ^= draw(st.integers(1, 255))
        elif kind == "magic" and len(raw) >= 2:
            raw[draw(st.integers(0, 1))] = draw(st.integers(1, 255))
        elif kind == "code" and len(raw) >= 3:
            raw[2] = draw(st.integers(0, 255))
        elif kind == "ndim" and len(raw) >= 4:
            raw[3] = draw(st.sampled_from([0, 1, 5, 32, 64, 65, 255]))
        elif kind == "dims" and len(raw) >= 8:
            ndim = max(1, min(raw[3], (len(raw) - 4) // 4))
            axis = draw(st.integers(0, ndim - 1))
            size = draw(st.sampled_from([0, 1, 2**16, 2**31, U32_MAX]) | st.integers(0, U32_MAX))
            raw[4 + 4 * axis: 8 + 4 * axis] = size.to_bytes(4, "big")
        elif kind == "append":
            raw += draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


def parsed(raw: bytes) -> np.ndarray | None:
    """``read_idx(raw)``, or ``None`` for a one-line ``DataError``; anything else fails."""
    try:
        array = read_idx(raw, name="/d/f.idx", fix="fetch it again")
    except DataError as err:
        message = str(err)
        assert message.startswith("/d/f.idx is not a valid IDX file: ")
        assert message.endswith("; fetch it again") and "\n" not in message
        return None
    assert isinstance(array, np.ndarray) and not array.flags.writeable
    assert write_idx(array) == raw  # every byte accounted for: header, dims and data
    return array


@FUZZ
@given(st.binary(max_size=64))
def test_any_bytes_are_an_array_or_a_data_error(raw):
    parsed(raw)


@FUZZ
@given(st.binary(max_size=40).map(lambda tail: b"\0\0" + tail))
def test_any_bytes_after_a_valid_magic_are_an_array_or_a_data_error(raw):
    parsed(raw)


@FUZZ
@given(damaged())
def test_a_damaged_idx_file_is_an_array_or_a_data_error(raw):
    parsed(raw)


@FUZZ
@given(code=st.sampled_from(sorted(IDX_DTYPES)),
       dims=st.lists(st.sampled_from([0, 1, 7, 2**20, 2**31, U32_MAX]), min_size=1,
                     max_size=255),
       data=st.binary(max_size=32))
def test_a_header_claiming_an_absurd_size_is_refused_without_allocating_it(code, dims, data):
    raw = bytes([0, 0, code, len(dims)]) + np.asarray(dims, ">u4").tobytes() + data
    tracemalloc.start()
    try:
        array = parsed(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # < 1 MiB, whatever the header claims (up to 2**8160 bytes)
    if array is not None:
        assert array.nbytes <= len(data)


def test_numpy_limits_are_data_errors_not_value_errors():
    over_axes = bytes([0, 0, 0x08, 65]) + bytes(4 * 65)  # 65 axes of size 0
    zero_and_huge = bytes([0, 0, 0x08, 3]) + np.asarray([0, U32_MAX, U32_MAX], ">u4").tobytes()
    for raw, what in ((over_axes, r"numpy cannot hold an array of shape \(0, 0, 0, 0, 0, 0, "
                                  r"0, 0, … 65 axes\)"),
                      (zero_and_huge, r"numpy cannot hold an array of shape \(0, 4294967295, "
                                      r"4294967295\)")):
        with pytest.raises(DataError, match=what):
            read_idx(raw, name="f")


def gunzipped(compressed: bytes, max_size: int | None) -> bytes | None:
    """``gunzip``'s bytes, or ``None`` for a one-line ``GzipError``; anything else fails."""
    try:
        raw = gunzip(compressed, name="/d/f.gz", fix="fetch it again", max_size=max_size)
    except GzipError as err:
        assert err.problem in ("empty", "truncated", "corrupt", "too large")
        assert str(err).startswith("/d/f.gz ") and "\n" not in str(err)
        return None
    assert max_size is None or len(raw) <= max_size
    return raw


@FUZZ
@given(st.binary(max_size=64), st.none() | st.integers(0, 64))
def test_any_bytes_gunzip_to_bytes_or_a_gzip_error(compressed, max_size):
    gunzipped(compressed, max_size)


@FUZZ
@given(damaged(VALID_IDX.map(lambda raw: gzip.compress(raw, mtime=0))),
       st.none() | st.integers(0, 300))
def test_a_damaged_gzip_file_gunzips_to_bytes_or_a_gzip_error_then_parses_or_not(
        compressed, max_size):
    raw = gunzipped(compressed, max_size)
    if raw is not None:
        parsed(raw)


def test_a_gzip_bomb_is_refused_holding_no_more_than_its_limit():
    bomb = gzip.compress(bytes(64 << 20))  # 64 MiB of zeros in 64 KiB
    tracemalloc.start()
    try:
        assert gunzipped(bomb, 1000) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` (temporary ones included) and its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def registered(spec, role: str, compressed: bytes):
    """``spec`` whose entry for ``role`` has the digest and size of ``compressed``'s
    content when it decompresses (so that the IDX parser, not the digest, judges it)."""
    try:
        raw = gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error):  # gunzip will say what is wrong
        return spec
    entry = spec.files()[role]
    return dataclasses.replace(spec, **{role: IdxFile(entry.name, hashlib.sha256(raw).hexdigest(),
                                                      len(raw), entry.shape)})


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    tiny = make_tiny()
    return tiny, tiny.put(tmp_path_factory.mktemp("system"))


@FUZZ
@given(role=st.sampled_from(sorted(NAMES)), data=st.data())
def test_a_damaged_dataset_file_loads_or_is_a_data_error_and_nothing_is_written(
        tiny_files, tmp_path_factory, role, data):
    tiny, system = tiny_files
    name = NAMES[role]
    good = tiny.gz[name]
    compressed = data.draw(damaged(st.just(gzip.decompress(good))).map(
        lambda raw: gzip.compress(raw, mtime=0)) | damaged(st.just(good)))
    cache = tmp_path_factory.mktemp("cache")
    (system / name).write_bytes(compressed)
    before = snapshot(system)
    try:
        splits = load_dataset("tiny", cache_dir=cache, system_dirs=[system], download=False,
                              registry={"tiny": registered(tiny.spec, role, compressed)})
    except DataError as err:
        assert "\n" not in str(err)
    else:
        assert splits.x_train.shape == tiny.arrays["train_images"][3:].shape
    finally:
        (system / name).write_bytes(good)
    assert snapshot(cache) == {}
    assert {k: v for k, v in before.items() if k != name} == \
        {k: v for k, v in snapshot(system).items() if k != name}


@pytest.fixture(scope="module")
def mirror() -> Iterator[dict]:
    """A loopback HTTP mirror serving ``served["payload"]`` for any path."""
    served: dict = {"payload": b""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = served["payload"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    served["url"] = f"http://127.0.0.1:{httpd.server_port}/"
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_a_damaged_download_is_saved_whole_and_verified_or_not_at_all(
        mirror, tmp_path_factory, data):
    tiny = make_tiny()
    name = NAMES["test_labels"]
    cache = tmp_path_factory.mktemp("cache")
    tiny.put(cache / "tiny", skip=(name,))
    before = snapshot(cache)
    mirror["payload"] = data.draw(damaged(st.just(tiny.gz[name])))
    try:
        found = read_files(tiny.spec, cache_dir=cache, system_dirs=[], mirrors=[mirror["url"]],
                           timeout=5)
    except DataError as err:
        assert "\n" not in str(err)
        assert snapshot(cache) == before  # nothing saved, no temporary file left
    else:
        assert found["test_labels"][0].origin == "download"
        after = snapshot(cache)
        assert set(after) == {*before, f"tiny/{name}"}
        assert gzip.decompress(after[f"tiny/{name}"]) == gzip.decompress(tiny.gz[name])
