"""One process at a time per run folder: ``<run>/.lock``, held while the run trains.

The lock is an exclusive ``flock`` on ``<run>/.lock``, a file that holds the holder's PID,
host and start time as JSON. The operating system releases a ``flock`` when its process
dies, however it dies, so a lock file left by a killed process is *stale* by construction:
the next process takes it over (and says whose it was). A second live process is refused,
after retrying for ``PATIENCE_SECONDS``, with one line naming the holder. The file is
removed when the lock is released.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from bnlab.errors import BnlabError

LOCK_NAME = ".lock"
PATIENCE_SECONDS = 0.5  # how long RunLock retries a held lock before refusing


class RunLocked(BnlabError):
    """Another live process holds the run's lock."""


def lock_holder(run_dir: Path) -> dict | None:
    """What ``<run>/.lock`` says about its holder (``{"pid", "host", "since"}``), or
    ``None`` without a readable lock file. It may be stale: only ``RunLock`` can tell."""
    try:
        holder = json.loads((run_dir / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def holder_alive(holder: dict) -> bool:
    """Whether the process ``holder`` names still runs on this host (for display; the
    lock itself never relies on PIDs)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def training_holder(run_dir: Path) -> dict | None:
    """The holder record (``lock_holder``) of a live process that holds ``run_dir``'s lock
    now, or ``None``: asked of the ``flock`` itself with a non-blocking shared lock, which
    a stale file grants; nothing is written. (``RunLock`` retries for ``PATIENCE_SECONDS``,
    so this brief shared lock never refuses a trainer.)"""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return lock_holder(run_dir) or {}
    finally:
        os.close(fd)  # closing releases a shared lock it took
    return None


class RunLock:
    """``with RunLock(run_dir):`` — hold ``run_dir``'s lock; a ``RunLocked`` error when a
    live process holds it. ``took_over`` is the stale holder's record, if there was one."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self.took_over: dict | None = None
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        patience = time.monotonic() + PATIENCE_SECONDS
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() < patience:  # a reader's brief shared lock, maybe
                    time.sleep(0.02)
                    continue
                holder = lock_holder(self.path.parent) or {}
                raise RunLocked(
                    f"{self.path.parent} is being trained by another process (PID "
                    f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since "
                    f"{holder.get('since', '?')}); wait for it to finish or stop it, then "
                    "resume") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its last holder unlinked while we waited for it
                break
            os.close(fd)
        previous = os.read(fd, 65536)
        if previous:
            try:
                self.took_over = json.loads(previous)
            except ValueError:
                self.took_over = {}
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: no one can lock it meanwhile
        finally:
            os.close(self._fd)
            self._fd = None
