"""The IDX parser and writer: exact bytes, round trips, and every way a file can be bad."""

import gzip

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bnlab.data.idx import IDX_DTYPES, gunzip, read_idx, write_idx
from bnlab.errors import DataError, GzipError

NATIVE_DTYPES = [dtype.newbyteorder("=") for dtype in IDX_DTYPES.values()]


def header(code: int, *dims: int) -> bytes:
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, ">u4").tobytes()


def test_write_idx_emits_the_documented_header_and_big_endian_data():
    assert write_idx(np.array([1, 2], np.uint8)) == b"\0\0\x08\x01" b"\0\0\0\x02" b"\x01\x02"
    assert write_idx(np.array([[1], [256]], np.int16)) == (
        b"\0\0\x0b\x02" b"\0\0\0\x02\0\0\0\x01" b"\x00\x01\x01\x00"
    )


@given(
    hnp.arrays(
        dtype=st.sampled_from(NATIVE_DTYPES),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    )
)
def test_read_idx_inverts_write_idx_for_every_dtype_and_shape(array):
    out = read_idx(write_idx(array), name="x")
    assert out.dtype == array.dtype and out.dtype.isnative
    assert out.shape == array.shape
    assert out.tobytes() == array.tobytes()  # bitwise, so NaN payloads and -0.0 count too
    assert not out.flags.writeable


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b"\0\0\x08", "header needs 4 bytes, found 3"),
        (b"\x01\0\x08\x01\0\0\0\x01\x07", "magic bytes are 0100"),
        (header(0x0A, 1) + b"\0", "unknown dtype code 0x0A"),
        (b"\0\0\x08\x00", "0 dimensions"),
        (header(0x08, 2, 3)[:9], "header of 2 dimensions needs 12 bytes, found 9"),
        (header(0x08, 2, 3) + bytes(5), "truncated: expected 6 bytes of data, found 5"),
        (header(0x0C, 2) + bytes(7), "truncated: expected 8 bytes of data, found 7"),
        (header(0x08, 2, 3) + bytes(8), "2 trailing bytes after 6 bytes of data"),
    ],
    ids=["short-header", "bad-magic", "unknown-dtype", "zero-dims", "short-dims",
         "truncated", "truncated-int32", "trailing-bytes"],
)
def test_read_idx_rejects_malformed_files_with_one_line_naming_the_file(raw, what):
    with pytest.raises(DataError) as err:
        read_idx(raw, name="/data/f.idx", fix="fetch it again")
    message = str(err.value)
    assert message.startswith("/data/f.idx is not a valid IDX file: ")
    assert what in message
    assert message.endswith("; fetch it again") and "\n" not in message


def test_write_idx_refuses_what_idx_cannot_store():
    with pytest.raises(ValueError, match="dtype"):
        write_idx(np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="shape"):
        write_idx(np.array(3, np.uint8))


def test_gunzip_decompresses_every_member():
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), name="x") == b"abcd"


@pytest.mark.parametrize(
    ("compressed", "max_size", "what", "problem"),
    [
        (gzip.compress(bytes(range(256)) * 40)[:-20], None,
         "is truncated: the gzip stream ends early", "truncated"),
        (b"this is not gzip", None, "is corrupt: not a valid gzip stream", "corrupt"),
        (gzip.compress(b"payload")[:-8] + bytes(8), None, "is corrupt: not a valid gzip stream",
         "corrupt"),
        (gzip.compress(b"payload"), 6, "decompresses to more than the expected 6 bytes",
         "too large"),
        (b"", None, "is empty (0 bytes)", "empty"),
    ],
    ids=["truncated", "not-gzip", "bad-crc", "too-large", "empty"],
)
def test_gunzip_maps_gzip_failures_to_one_line_data_errors(compressed, max_size, what, problem):
    with pytest.raises(GzipError) as err:
        gunzip(compressed, name="/data/f.gz", fix="fetch it again", max_size=max_size)
    assert isinstance(err.value, DataError) and err.value.problem == problem
    message = str(err.value)
    assert message.startswith(f"/data/f.gz {what}")
    assert message.endswith("; fetch it again") and "\n" not in message
