"""Where dataset files come from, and the check that they are the right ones.

Each file of a `DatasetSpec` is looked up in this order; the first place holding it wins:

1. `data_dir`, when given, and then ONLY there: a missing or bad file is an error, never a
   silent fallback past what the user asked for.
2. The user cache, `cache_dir / spec.name / file.name`.
3. Each of the system dirs (Debian's `dataset-fashion-mnist` installs
   `/usr/share/datasets/fashion-mnist/`).
4. A download from each mirror in turn, saved atomically into the cache.

Every file is verified before use: the sha256 of its *decompressed* bytes must equal the
registry's (mirrors compress differently; the content is the same). A bad file in `data_dir`
or a system dir is an error naming the path and its repair, not skipped: the user or the OS
put it there, and a damaged copy should be repaired, not masked. A bad copy in the cache,
bnlab's own, does not block the search: the next place holding a verified copy is used (a
download replaces the bad copy), and the record says so in `LocatedFile.notes`; only when no
later place has a verified copy is the bad cached one the error. Nothing here reads
environment variables; callers pass the dirs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from bnlab.data.idx import gunzip
from bnlab.data.spec import DatasetSpec, IdxFile
from bnlab.errors import DataError, GzipError
from bnlab.io import NotAFile, atomic_write_bytes, open_regular, read_regular
from bnlab.limits import DATA_BYTES, LimitExceeded

Origin = Literal["data-dir", "cache", "system", "download"]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class LocatedFile:
    """One dataset file that was found and verified.

    role: "train_images", "train_labels", "test_images" or "test_labels".
    path: where it lies (for a download, its new place in the cache).
    origin: which step of the search order found it.
    sha256: hex digest of its decompressed bytes, equal to the registry's.
    notes: what the user should hear about the search, one line each: a corrupt copy in the
      cache that was skipped (or replaced by a download) for this one.
    """

    role: str
    path: Path
    origin: Origin
    sha256: str
    notes: tuple[str, ...] = ()


Progress = Callable[[str, int, "int | None"], None]
"""A download's progress: ``(file name, bytes received so far, total bytes or None)``."""


class _Rejected(Exception):
    """A mirror served something that is not the expected file; the message is the reason."""


def read_files(
    spec: DatasetSpec,
    *,
    data_dir: Path | None = None,
    cache_dir: Path,
    system_dirs: Sequence[Path] | None = None,
    mirrors: Sequence[str] | None = None,
    download: bool = True,
    timeout: float = 60.0,
    on_progress: Progress | None = None,
) -> dict[str, tuple[LocatedFile, bytes]]:
    """Find, download if needed, and verify every file of `spec` (see the module docstring);
    return `{role: (record, decompressed IDX bytes)}` in `spec.files()` order.

    `system_dirs` and `mirrors` default to the spec's own; `on_progress` hears about each
    download as it arrives. Each file is decompressed and hashed once. Raises `DataError`
    (one line: which file, where, how to fix) at the first unusable file.
    """
    system_dirs = spec.system_dirs if system_dirs is None else tuple(system_dirs)
    mirrors = spec.mirrors if mirrors is None else tuple(mirrors)
    for mirror in mirrors:
        _check_mirror(mirror)
    return {
        role: _read_one(
            spec, role, file, data_dir=data_dir, cache_dir=cache_dir,
            system_dirs=system_dirs, mirrors=mirrors, download=download, timeout=timeout,
            on_progress=on_progress,
        )
        for role, file in spec.files().items()
    }


def check_files(
    spec: DatasetSpec,
    *,
    data_dir: Path | None = None,
    cache_dir: Path,
    download: bool = True,
    timeout: float = 60.0,
    on_progress: Progress | None = None,
) -> dict[str, LocatedFile | DataError]:
    """Every file of `spec` checked on its own, as `read_files` would find and verify it:
    `{role: record, or the DataError that file gives}` — all problems at once, for a report
    (`bnlab data`), where `read_files` stops at the first."""
    if data_dir is not None:
        _check_data_dir(spec, data_dir)  # one problem for all files: said once
    results: dict[str, LocatedFile | DataError] = {}
    for role, file in spec.files().items():
        try:
            results[role] = _read_one(
                spec, role, file, data_dir=data_dir, cache_dir=cache_dir,
                system_dirs=spec.system_dirs, mirrors=spec.mirrors, download=download,
                timeout=timeout, on_progress=on_progress,
            )[0]
        except DataError as err:
            results[role] = err
    return results


def _read_one(
    spec: DatasetSpec,
    role: str,
    file: IdxFile,
    *,
    data_dir: Path | None,
    cache_dir: Path,
    system_dirs: Sequence[Path],
    mirrors: Sequence[str],
    download: bool,
    timeout: float,
    on_progress: Progress | None = None,
) -> tuple[LocatedFile, bytes]:
    if data_dir is not None:
        _check_data_dir(spec, data_dir)
        path = data_dir / file.name
        fix = f"put the original {file.name} in {data_dir}, or leave out {{data_dir}}"
        if not path.exists():  # anything else there is judged by _read_verified
            raise DataError(f"{file.name} is missing from the data directory {data_dir}; {fix}")
        return _read_verified(role, path, "data-dir", file, fix=fix)
    cache = cache_dir / spec.name
    cached = cache / file.name
    if not cached.is_file():
        return _read_past_cache(spec, role, file, cache=cache, system_dirs=system_dirs,
                                mirrors=mirrors, download=download, timeout=timeout,
                                on_progress=on_progress)
    fix = f"delete it (rm {cached}) and run again to fetch a fresh copy"
    try:
        return _read_verified(role, cached, "cache", file, fix=fix)
    except DataError as damaged:  # bnlab's own copy: a verified one further on may do
        try:
            record, raw = _read_past_cache(spec, role, file, cache=cache,
                                           system_dirs=system_dirs, mirrors=mirrors,
                                           download=download, timeout=timeout,
                                           on_progress=on_progress)
        except DataError:
            raise damaged from None  # the first problem on the way, and its fix
        return _with_note(record, str(damaged).removesuffix(f"; {fix}"), cached), raw


def _with_note(record: LocatedFile, problem: str, cached: Path) -> LocatedFile:
    """``record`` noting that the cached copy ``cached`` was unusable (``problem``)."""
    if record.path == cached:  # downloaded over it
        note = f"{problem}; replaced it with a fresh download"
    else:
        note = (f"{problem}; skipped it and used the verified {record.path} instead "
                f"(rm {cached} to clear this warning)")
    return dataclasses.replace(record, notes=(*record.notes, note))


def _read_past_cache(
    spec: DatasetSpec,
    role: str,
    file: IdxFile,
    *,
    cache: Path,
    system_dirs: Sequence[Path],
    mirrors: Sequence[str],
    download: bool,
    timeout: float,
    on_progress: Progress | None,
) -> tuple[LocatedFile, bytes]:
    """The search after the cache: the system dirs, then a download into ``cache``."""
    for directory in system_dirs:
        path = directory / file.name
        if path.is_file():
            return _read_verified(role, path, "system", file, fix=_reinstall(spec))
    searched = ", ".join(str(d) for d in (cache, *system_dirs))
    if not download:
        raise DataError(
            f"{file.name} is not in {searched} and downloading is off; {_how_to_get(spec)}"
        )
    if not mirrors:
        raise DataError(
            f"{file.name} is not in {searched} and there is no mirror to download it from; "
            f"{_how_to_get(spec)}"
        )
    return _download(role, file, cache=cache, mirrors=mirrors, timeout=timeout, spec=spec,
                     on_progress=on_progress)


def _check_data_dir(spec: DatasetSpec, data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise DataError(f"the data directory {data_dir} does not exist; give a folder "
                        f"holding the {len(spec.files())} .gz files of {spec.name}, or "
                        "leave out {data_dir}")


#: Decompressed bytes of files verified in this process, by what identifies the file's
#: current content (``_identity``); a dataset's files are read again only when they changed.
#: A few entries (two datasets' files): about 55 MB for Fashion-MNIST.
_VERIFIED: dict[tuple, bytes] = {}
_VERIFIED_ENTRIES = 8


def _identity(info: os.stat_result, file: IdxFile) -> tuple:
    """The file (device, inode), its content's version (size, modification and change
    times: a write moves ``st_ctime_ns``, which no user call can set back) and the digest it
    was verified against."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
            file.sha256)


def _read_verified(
    role: str, path: Path, origin: Origin, file: IdxFile, *, fix: str
) -> tuple[LocatedFile, bytes]:
    """The decompressed, verified bytes of ``path`` (from ``_VERIFIED`` when this process
    verified the same unchanged file before: decompressing Fashion-MNIST takes ~0.3 s)."""
    try:
        with os.fdopen(open_regular(path, limit=DATA_BYTES), "rb") as handle:
            head = handle.read(2)  # a file that is not gzip is refused before it is read
            identity = _identity(os.fstat(handle.fileno()), file)
        if identity in _VERIFIED:
            return LocatedFile(role, path, origin, file.sha256), _VERIFIED[identity]
        if head and head != b"\x1f\x8b":
            raise GzipError(f"{path} is corrupt: not a valid gzip stream (it starts with "
                            f"{head!r}, not gzip's 1f 8b); "
                            f"{fix}", problem="corrupt")
        compressed = read_regular(path, limit=DATA_BYTES)
    except (NotAFile, LimitExceeded) as err:
        raise DataError(f"{path} {err.reason}; {fix}") from None
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror}); {fix}") from err
    raw = gunzip(compressed, name=str(path), fix=fix, max_size=file.size)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != file.sha256:
        raise DataError(f"{path} has the wrong content ({_mismatch(file, raw, digest)}); {fix}")
    if len(_VERIFIED) >= _VERIFIED_ENTRIES:
        _VERIFIED.pop(next(iter(_VERIFIED)))  # the oldest
    _VERIFIED[identity] = raw
    return LocatedFile(role, path, origin, digest), raw


def _mismatch(file: IdxFile, raw: bytes, digest: str) -> str:
    return (
        f"decompressed: {len(raw):,} bytes, sha256 {digest[:12]}…; "
        f"expected: {file.size:,} bytes, sha256 {file.sha256[:12]}…"
    )


def _reinstall(spec: DatasetSpec) -> str:
    if spec.debian_package:
        return f"reinstall it: sudo apt-get install --reinstall {spec.debian_package}"
    return "replace it with the original file"


def _how_to_get(spec: DatasetSpec) -> str:
    apt = f"sudo apt-get install {spec.debian_package}, or " if spec.debian_package else ""
    return (f"{apt}pass {{data_dir=DIR}} holding the {len(spec.files())} .gz files of "
            f"{spec.name}")


def _check_mirror(mirror: str) -> None:
    """Allow https:// anywhere, and plain http:// only on this machine (the tests' server)."""
    parts = urlsplit(mirror)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return
    raise DataError(
        f"mirror {mirror!r} is not an https:// URL (plain http:// is allowed only for "
        f"127.0.0.1, localhost and ::1); give an https:// mirror"
    )


def _download(
    role: str,
    file: IdxFile,
    *,
    cache: Path,
    mirrors: Sequence[str],
    timeout: float,
    spec: DatasetSpec,
    on_progress: Progress | None = None,
) -> tuple[LocatedFile, bytes]:
    """Try each mirror in turn; the first verified copy is saved into `cache` atomically."""
    reasons = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + file.name
        try:
            compressed, raw = _fetch(url, file, timeout=timeout, on_progress=on_progress)
        except urllib.error.HTTPError as err:
            reasons.append(f"{url}: HTTP {err.code} {err.reason}")
        except urllib.error.URLError as err:
            reasons.append(f"{url}: {err.reason}")
        except (_Rejected, OSError, http.client.HTTPException) as err:
            reasons.append(f"{url}: {str(err) or type(err).__name__}")
        else:
            path = cache / file.name
            _write_atomic(path, compressed)
            return LocatedFile(role, path, "download", file.sha256), raw
    raise DataError(
        f"could not download {file.name} [{'; '.join(reasons)}]; {_how_to_get(spec)}"
    )


def max_download_bytes(file: IdxFile) -> int:
    """The most a mirror may send for `file`: its decompressed size plus 1% and 64 KiB (gzip
    never grows data by more than a few bytes per 16 KiB block, plus its header)."""
    return file.size + file.size // 100 + 65_536


def _fetch(url: str, file: IdxFile, *, timeout: float,
           on_progress: Progress | None = None) -> tuple[bytes, bytes]:
    """Download `url` into memory; return (compressed, decompressed) once both check out.

    `timeout` bounds each wait on the server, in seconds. A response shorter than its
    Content-Length, or longer than `max_download_bytes(file)` (the rest is not read), is
    rejected.
    """
    limit = max_download_bytes(file)
    # Loopback never goes through a proxy; elsewhere urllib's standard proxy settings apply.
    proxies = {} if urlsplit(url).hostname in LOOPBACK_HOSTS else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))
    with opener.open(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > limit:
            raise _Rejected(f"announces {total:,} bytes, more than {file.name} can be "
                            f"({limit:,})")
        chunks, received = [], 0
        while chunk := response.read(1 << 20):
            received += len(chunk)
            if received > limit:
                raise _Rejected(f"sent more than {limit:,} bytes, more than {file.name} can be")
            chunks.append(chunk)
            if on_progress:
                on_progress(file.name, received, total)
    if total is not None and received < total:
        raise _Rejected(f"the connection closed after {received:,} of {total:,} bytes")
    compressed = b"".join(chunks)
    if not compressed:
        raise _Rejected("an empty response (0 bytes)")
    try:
        raw = gunzip(compressed, name=url, max_size=file.size)
    except GzipError as err:  # not "empty": an empty response is rejected above
        if err.problem == "too large":
            raise _Rejected(f"gzip data that decompresses to more than {file.size:,} bytes "
                            f"({len(compressed):,} bytes)") from err
        raise _Rejected(f"{err.problem} gzip data ({len(compressed):,} bytes)") from err
    digest = hashlib.sha256(raw).hexdigest()
    if digest != file.sha256:
        raise _Rejected(f"wrong content ({_mismatch(file, raw, digest)})")
    return compressed, raw


def _write_atomic(path: Path, payload: bytes) -> None:
    """``io.atomic_write_bytes`` with a disk or permission problem as a DataError."""
    try:
        atomic_write_bytes(path, payload)
    except OSError as err:
        raise DataError(
            f"cannot save {path} ({err.strerror}); make {path.parent} writable "
            f"or choose another cache directory"
        ) from err
