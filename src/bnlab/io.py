"""Files on disk, the ground floor every layer may use: atomic writes and JSON.

Every file bnlab writes goes through ``atomic_write_bytes``: the bytes go to a temporary file
in the target's folder, are fsynced, and the temporary file is renamed over the target, so a
crash at any moment leaves the old file or the new one, never half of one. Nothing bnlab
writes or reads is pickled.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.errors import BnlabError
from bnlab.limits import RUN_FILE_BYTES, Limit, LimitExceeded

_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_folder(path: Path | str | None = None) -> Path:
    """bnlab's cache folder: ``path`` when given, else the user cache (``~/.cache/bnlab`` on
    Linux). It holds downloaded datasets (``datasets/``) and compiled programs (``jax/``)."""
    if path is not None:
        return Path(path)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("bnlab"))


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (temp file + fsync + ``os.replace``); the
    folder is created if needed. An ``OSError`` names ``path``, never the temporary file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a size limit, …: named by the target file
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def to_json(data: Any) -> str:
    """``data`` as indented JSON text; NumPy arrays and scalars and paths become plain
    values (``json_default``)."""
    return json.dumps(data, indent=2, default=json_default) + "\n"


def atomic_write_json(path: Path, data: Any) -> None:
    """``to_json(data)`` written with ``atomic_write_bytes``."""
    atomic_write_bytes(path, to_json(data).encode())


def parse_json(text: str) -> Any:
    """``json.loads(text)`` whose every failure is a ``ValueError`` saying why in a few
    words: malformed JSON (``"Expecting value at line 1"``), nested too deeply for Python's
    parser, or an integer too long for Python to convert (over 4,300 digits)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{err.msg} at line {err.lineno}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError:  # sys.get_int_max_str_digits
        raise ValueError("a number has too many digits") from None


class NotAFile(BnlabError):
    """A path bnlab was to read that is not a regular file (a FIFO, a device, a folder, a
    socket): reading it could block forever or never end, so it is refused unread;
    ``reason`` is the message without the path."""

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        self.reason = reason


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def open_regular(path: Path, *, limit: Limit | None = None) -> int:
    """A read-only descriptor of the regular file at ``path`` (a link to one is followed),
    checked before a byte is read: ``NotAFile`` for anything else, ``LimitExceeded`` when
    its size is over ``limit``; ``OSError`` (e.g. ``FileNotFoundError``) as ``os.open``
    raises it. Opened with ``O_NONBLOCK``, so a FIFO never waits for a writer."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            reason = f"is {kind}, not a regular file; bnlab reads only regular files"
            raise NotAFile(f"{path} {reason}", reason=reason)
        if limit is not None:
            limit.check(info.st_size, str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, *, limit: Limit) -> bytes:
    """The bytes of the regular file at ``path`` (``open_regular``'s checks), never more
    than ``limit`` allows even if the file grows while it is read."""
    fd = open_regular(path, limit=limit)
    chunks, total, cap = [], 0, limit.value + 1
    with os.fdopen(fd, "rb", buffering=0) as handle:
        size = os.fstat(fd).st_size  # read as one piece (a read of n allocates n first),
        while total < cap:  # then 64 KiB at a time if it grows or a read comes back short
            chunk = handle.read(min(max(size + 1 - total, 1 << 16), cap - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    limit.check(total, str(path))
    return b"".join(chunks)


def check_regular(path: Path, *, limit: Limit | None = None) -> None:
    """``open_regular``'s checks of ``path`` for a library that opens the file itself."""
    os.close(open_regular(path, limit=limit))


def read_problem(path: Path, *, limit: Limit = RUN_FILE_BYTES) -> tuple[bytes | None, str | None]:
    """``(bytes, None)`` of a regular file within ``limit``, else ``(None, what is wrong)``
    as a phrase after the file's name: ``"is missing"``, ``"is a FIFO (named pipe), …"``,
    ``"cannot be read (Permission denied)"``."""
    try:
        return read_regular(path, limit=limit), None
    except FileNotFoundError:
        return None, "is missing"
    except (NotAFile, LimitExceeded) as err:
        return None, err.reason
    except OSError as err:
        return None, f"cannot be read ({err.strerror})"


def read_json(path: Path, *, fix: str, limit: Limit = RUN_FILE_BYTES) -> Any:
    """The JSON document in ``path`` (a regular file within ``limit``); a missing, unusual,
    oversized, non-UTF-8 or malformed file is a one-line ``BnlabError`` naming the file and
    ending with ``fix``."""
    data, problem = read_problem(path, limit=limit)
    if problem:
        raise BnlabError(f"{path} {problem}; {fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BnlabError(f"{path} is not UTF-8 text (byte {err.start}); {fix}") from None
    try:
        return parse_json(text)
    except ValueError as err:
        raise BnlabError(f"{path} is not valid JSON ({err}); {fix}") from None


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)``: arrays as lists, NumPy scalars as Python numbers, paths
    as strings; anything else is a ``TypeError``."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")
