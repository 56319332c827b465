"""Checks of the files in a run folder that have no digest of their own.

Each check returns ``None`` for a good file or a phrase that says what is wrong with it
("is not UTF-8 text (byte 12)"), never raises for a damaged file: ``store.runs`` gathers
the phrases as ``Damage`` and decides what they mean for the run.

- TensorBoard event files are TFRecord files: every record is ``length (u64) ·
  masked CRC-32C of length (u32) · data · masked CRC-32C of data (u32)``; both CRCs are
  checked (``google_crc32c``), so any changed byte is found.
- Learning-curve images: a PNG must decode (Pillow); an SVG must parse as XML.
"""

from __future__ import annotations

import csv
import io
import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import google_crc32c
import numpy as np
from PIL import Image, UnidentifiedImageError

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C: ``((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2³²)``."""
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def event_file_problem(path: Path, *, complete: bool) -> str | None:
    """What is wrong with the TensorBoard event file ``path``, or ``None``. A truncated last
    record is a problem only when ``complete`` (the file of a process that was killed while
    writing ends mid-record, and TensorBoard reads it up to there)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    offset, records = 0, 0
    while offset < len(data):
        header = data[offset:offset + 12]
        if len(header) < 12:
            break
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        if masked_crc32c(header[:8]) != length_crc:
            return f"is damaged (record {records + 1} at byte {offset}: bad length checksum)"
        body = data[offset + 12:offset + 12 + length + 4]
        if len(body) < length + 4:
            break
        (data_crc,) = struct.unpack("<I", body[length:])
        if masked_crc32c(body[:length]) != data_crc:
            return f"is damaged (record {records + 1} at byte {offset}: bad data checksum)"
        offset += 12 + length + 4
        records += 1
    if offset < len(data) and complete:
        return f"is truncated (a partial record after {records} whole ones)"
    if records == 0 and complete:
        return "holds no event"
    return None


def image_problem(path: Path) -> str | None:
    """What is wrong with a saved figure (``.png`` decodes, ``.svg`` parses), or ``None``."""
    try:
        if path.suffix == ".svg":
            ElementTree.fromstring(path.read_bytes())
        else:
            with Image.open(path) as image:
                image.load()
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError,
            Image.DecompressionBombError) as err:
        return f"is not a readable image ({type(err).__name__}: {err})"
    return None


def text_problem(path: Path) -> tuple[str | None, str | None]:
    """``(text, None)`` for a UTF-8 file, else ``(None, what is wrong)``."""
    try:
        return path.read_text(encoding="utf-8"), None
    except FileNotFoundError:
        return None, "is missing"
    except UnicodeDecodeError as err:
        return None, f"is not UTF-8 text (byte {err.start})"
    except OSError as err:
        return None, f"cannot be read ({err.strerror})"


def parse_csv(text: str, columns: tuple[str, ...]) -> tuple[dict[str, np.ndarray] | None,
                                                            str | None]:
    """The float columns of a CSV text with exactly the header ``columns`` and an ``epoch``
    column counting 0, 1, …: ``({column: (rows,)}, None)``, or ``(None, what is wrong)``."""
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        return None, f"is not valid CSV ({err})"
    if not rows or tuple(rows[0]) != columns:
        return None, f"does not start with the header {','.join(columns)}"
    values = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(columns):
            return None, f"has {len(row)} fields on line {number}, not {len(columns)}"
        try:
            values.append([float(field) for field in row])
        except ValueError:
            return None, f"holds a value that is not a number on line {number}"
    table = np.array(values, np.float64).reshape(len(values), len(columns))
    if not np.array_equal(table[:, 0], np.arange(len(values))):
        return None, "does not number its epochs 0, 1, 2, …"
    return {column: table[:, i] for i, column in enumerate(columns)}, None
