"""The IDX file format of (Fashion-)MNIST, and the gzip layer the files ship in.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the
array in C order, big-endian::

    byte 0, 1   0x00 0x00
    byte 2      dtype code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte 3      ndim (>= 1)
    4 * ndim    the dimensions, uint32 big-endian
    rest        prod(dims) * itemsize bytes of data, nothing more

Reference: http://yann.lecun.com/exdb/mnist/ ("THE IDX FILE FORMAT").
"""

from __future__ import annotations

import gzip
import io
import math
import zlib

import numpy as np

from bnlab.errors import DataError, GzipError

# IDX dtype code -> on-disk (big-endian) dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES: dict[np.dtype, int] = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
_REPLACE = "replace it with an intact copy of the original file"


def read_idx(raw: bytes, *, name: str, fix: str = _REPLACE) -> np.ndarray:
    """Parse the bytes of one (decompressed) IDX file.

    Args:
      raw: the whole file; its length must be exactly header + data.
      name: how the error message names the file (its path).
      fix: how the error message tells the user to fix it.

    Returns:
      A read-only array of shape `dims` in native byte order (a view of `raw` for
      one-byte dtypes, a converted copy otherwise).

    Raises:
      DataError: one line naming `name`, what is malformed, and `fix`.
    """

    def invalid(what: str) -> DataError:
        return DataError(f"{name} is not a valid IDX file: {what}; {fix}")

    if len(raw) < 4:
        raise invalid(f"header needs 4 bytes, found {len(raw)}")
    if raw[0] != 0 or raw[1] != 0:
        raise invalid(f"magic bytes are {raw[:2].hex()}, expected 0000")
    if raw[2] not in IDX_DTYPES:
        raise invalid(f"unknown dtype code 0x{raw[2]:02X}")
    ndim = raw[3]
    if ndim == 0:
        raise invalid("it declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise invalid(f"header of {ndim} dimensions needs {header} bytes, found {len(raw)}")
    dtype = IDX_DTYPES[raw[2]]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = math.prod(dims) * dtype.itemsize
    found = len(raw) - header
    if found < expected:
        raise invalid(f"truncated: expected {expected} bytes of data, found {found}")
    if found > expected:
        raise invalid(f"{found - expected} trailing bytes after {expected} bytes of data")
    try:
        array = np.frombuffer(raw, dtype, count=math.prod(dims), offset=header).reshape(dims)
    except ValueError:  # more than numpy's 64 axes, or axes whose product overflows (with a 0)
        raise invalid(f"numpy cannot hold an array of shape {_shape_text(dims)}") from None
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
        array.flags.writeable = False
    return array


def _shape_text(dims: tuple[int, ...]) -> str:
    """``dims`` for a message: in full up to 8 axes, else the first 8 and the count."""
    if len(dims) <= 8:
        return str(dims)
    return f"({', '.join(map(str, dims[:8]))}, … {len(dims)} axes)"


def write_idx(array: np.ndarray) -> bytes:
    """Encode `array` (ndim >= 1, a dtype listed in `IDX_DTYPES`) as IDX bytes.

    Raises:
      ValueError: for a 0-d array, an unsupported dtype, or a dimension >= 2**32.
    """
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    if not 1 <= array.ndim <= 255 or max(array.shape) >= 2**32:
        raise ValueError(f"IDX cannot store shape {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(IDX_DTYPES[code], copy=False).tobytes(order="C")


def gunzip(compressed: bytes, *, name: str, fix: str = _REPLACE,
           max_size: int | None = None) -> bytes:
    """Decompress a whole gzip file (all members); with `max_size`, never more than that
    many bytes (a file that would decompress to more is rejected, not held in memory).

    Raises:
      GzipError: one line naming `name`, whether it is empty, truncated, corrupt or too
        large, and `fix`; `.problem` says which.
    """
    if not compressed:
        raise GzipError(f"{name} is empty (0 bytes); {fix}", problem="empty")
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(compressed)) as stream:
            raw = stream.read(-1 if max_size is None else max_size + 1)
    except EOFError as err:
        raise GzipError(f"{name} is truncated: the gzip stream ends early; {fix}",
                        problem="truncated") from err
    except (gzip.BadGzipFile, zlib.error) as err:
        raise GzipError(f"{name} is corrupt: not a valid gzip stream ({err}); {fix}",
                        problem="corrupt") from err
    if max_size is not None and len(raw) > max_size:
        raise GzipError(f"{name} decompresses to more than the expected {max_size:,} bytes; "
                        f"{fix}", problem="too large")
    return raw
