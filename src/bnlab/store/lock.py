"""One process at a time per run folder: ``<run>/.lock``, held while the run trains.

The lock is an exclusive ``flock`` on ``<run>/.lock``, a file that holds the holder's PID,
host and start time as JSON. The operating system releases a ``flock`` when its process
dies, however it dies, so a lock file left by a killed process is *stale* by construction:
the next process takes it over (and says whose it was). A second live process is refused,
after retrying for ``PATIENCE_SECONDS``, with one line naming the holder. The file is
removed when the lock is released.

A run folder is written only through its lock, and the lock refuses a folder with a link in
it: ``.lock`` is opened with ``O_NOFOLLOW`` (a ``.lock`` that links elsewhere would have
that file overwritten with the lock record), and a symbolic link anywhere inside the folder
(a seed folder, ``.replaced/``, a checkpoint) is refused before anything is written, so
training, resume, repair and recalibration never write outside the run folder. (The run
folder itself may be reached through a link: the runs folder is the user's to arrange.)
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from types import TracebackType

from bnlab.errors import BnlabError

LOCK_NAME = ".lock"
PATIENCE_SECONDS = 0.5  # how long RunLock retries a held lock before refusing


class RunLocked(BnlabError):
    """Another live process holds the run's lock."""


class LinkInRunFolder(BnlabError):
    """A symbolic link inside a run folder, which bnlab will not write through."""


def _open_lock(path: Path, flags: int) -> int:
    """``os.open(path, flags)`` of a lock file that is a regular file, never through a link
    and never waiting on a FIFO; a link or anything but a regular file is a
    ``LinkInRunFolder`` or ``BnlabError``."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise LinkInRunFolder(f"{path} is a symbolic link; bnlab never writes through a "
                                  "link in a run folder: remove the link") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BnlabError(f"{path} is not a regular file; remove it (bnlab keeps its lock "
                         "record there)")
    return fd


def first_link(run_dir: Path) -> Path | None:
    """The first symbolic link found inside ``run_dir`` (not following any), or ``None``."""
    folders = [run_dir]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    return Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
    return None


def lock_holder(run_dir: Path) -> dict | None:
    """What ``<run>/.lock`` says about its holder (``{"pid", "host", "since"}``), or
    ``None`` without a readable lock file. It may be stale: only ``RunLock`` can tell."""
    try:
        fd = _open_lock(run_dir / LOCK_NAME, os.O_RDONLY)
    except (OSError, BnlabError):
        return None
    try:
        holder = json.loads(os.read(fd, 65536))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
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
        fd = _open_lock(run_dir / LOCK_NAME, os.O_RDONLY)
    except (OSError, BnlabError):
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
            fd = _open_lock(self.path, os.O_RDWR | os.O_CREAT)
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
        linked = first_link(self.path.parent)
        if linked is not None:
            self.path.unlink(missing_ok=True)  # held, so no one else's
            os.close(fd)
            raise LinkInRunFolder(
                f"{linked} is a symbolic link to {os.readlink(linked)}; bnlab never writes "
                "through a link in a run folder (it could write outside it): replace the "
                "link by the files themselves, or remove it")
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
