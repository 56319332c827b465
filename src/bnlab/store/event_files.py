"""A variant's TensorBoard event files as its record lists them (``store.record``): each
file's length when the record was written and the SHA-256 of those bytes. TensorBoard files
cannot be rebuilt from a record, and the file of a process still training grows past the
record's length; a finished variant's must have exactly the bytes its record lists."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from bnlab.io import NotAFile, open_regular


def event_files(log_dir: Path) -> list[Path]:
    """Every TensorBoard event file under a variant's ``log_dir``, in name order."""
    return sorted(log_dir.rglob("events.out.tfevents.*"))


def event_digests(log_dir: Path) -> dict[str, tuple[int, str]]:
    """``{file relative to log_dir: (bytes, SHA-256 of them)}`` of every event file of a
    variant, for its record (``store.record``)."""
    digests = {}
    for path in event_files(log_dir):
        data = path.read_bytes()
        digests[path.relative_to(log_dir).as_posix()] = (len(data),
                                                         hashlib.sha256(data).hexdigest())
    return digests


def event_damage(log_dir: Path, recorded: Mapping[str, tuple[int, str]], *,
                       finished: bool) -> list[tuple[str, str]]:
    """``(file relative to log_dir, what is wrong)`` for each event file a record lists
    (``recorded``: ``event_digests`` when it was written) that is missing, shorter, or
    whose first bytes differ; or, when the variant has ``finished``, that has more bytes
    (while it trains, a killed process may have written past its last record)."""
    damage = []
    for name, (size, sha256) in recorded.items():
        try:
            with os.fdopen(open_regular(log_dir / name), "rb") as handle:
                data = handle.read(size + 1)
        except FileNotFoundError:
            damage.append((name, "is missing"))
            continue
        except NotAFile as err:
            damage.append((name, err.reason))
            continue
        except OSError as err:
            damage.append((name, f"cannot be read ({err.strerror})"))
            continue
        if len(data) < size:
            damage.append((name, f"is truncated ({len(data):,} of the {size:,} bytes its "
                                 "record holds)"))
        elif hashlib.sha256(data[:size]).hexdigest() != sha256:
            damage.append((name, "is damaged: its bytes do not match the digest in its "
                                 "record"))
        elif finished and len(data) > size:
            damage.append((name, "holds more than its finished record (bytes were added)"))
    return damage
