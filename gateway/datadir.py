"""One gateway per data directory: an exclusive lock taken before anything in it is opened.

Two daemons writing one buffer and one spot-state file would each believe the other's records
were its own. The lock is `fcntl.flock` on `<data_dir>/lock` (released by the kernel when the
process dies, so kill -9 never leaves a stale lock); the file holds the holder's PID so the
second process can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "lock"


class DataDirBusy(Exception):
    """Another process holds the data directory's lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"held by {who} (another schwebe on the same data_dir; "
                         f"stop it or give this one its own gateway.data_dir)")


class DataDirLock:
    """Holds the lock for the life of the process (or until `release`)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = holder_pid(self.path)
            os.close(fd)
            raise DataDirBusy(self.path, pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def holder_pid(lock_path: Path) -> int | None:
    """The PID written by the lock's holder, or None if there is none (or it is unreadable)."""
    try:
        text = lock_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def live_holder(data_dir: Path) -> int | None:
    """The PID of a running process holding `data_dir`'s lock, else None (never takes it)."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder_pid(path) or -1
    finally:
        os.close(fd)
    return None
