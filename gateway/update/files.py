"""The files the daemon and the root step leave each other, and the status made of them.

Root-owned, ``<install_dir>/update/`` (the daemon reads, never writes):
``state.json`` (UpdateState: what runs, what is on trial, the last outcome) and ``metadata/``
(the root step's own TUF metadata, bootstrapped from ``[remote_config] root``).

Daemon-owned, ``<data_dir>/update/`` (the root step reads them as requests, never as truth):
``staged/`` (the package and the TUF metadata that vouched for it), ``staged.json`` (written
last: the request to install), ``baseline.json`` (what worked before the switch: the window
of the new release compares with it), ``verdict.json`` (the release on trial says confirmed
or asks to be rolled back), ``daemon.json`` (the daemon's own last refusal).
Every file is replaced whole (temp file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.fsio import write_atomic

OUTCOMES = ("confirmed", "rolled-back", "refused")
REJECTED_KEEP = 20


def running_version() -> str:
    """The version of the release this process runs: the name of its slot
    (``<install_dir>/releases/<version>``, the venv it runs from), as the root step names it;
    outside a slot (a development checkout) the installed distribution's version."""
    prefix = Path(sys.prefix)
    if prefix.parent.name == "releases":
        return prefix.name
    try:
        return metadata.version("schwebe")
    except metadata.PackageNotFoundError:
        return __version__


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class UpdateState:
    """The root step's record; ``running`` runs whenever nothing is on trial."""

    running: str | None = None
    trying: str | None = None
    previous: str | None = None  # what ran before ``running`` (the slot kept one back)
    starts: int = 0  # starts of the release on trial so far
    outcome: str | None = None  # of the last attempt: confirmed, rolled-back, refused
    version: str | None = None  # the version the outcome is about
    reason: str | None = None
    at: float | None = None
    rejected: list[str] = field(default_factory=list)

    def said(self, outcome: str | None, version: str | None, reason: str | None) -> None:
        self.outcome, self.version, self.reason, self.at = outcome, version, reason, time.time()


#: Largest JSON file read (the root step reads the daemon's files: bounded, no FIFO, no link).
MAX_JSON = 64 << 10


def open_regular(path: Path, *, dir_fd: int | None = None) -> int:
    """A read-only descriptor of a regular file, never through a symlink at the last step and
    never blocking on a FIFO a daemon could leave in its place; OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            data = json.loads(f.read(MAX_JSON + 1)[:MAX_JSON])
    except (OSError, ValueError):
        return None  # absent, or damaged from outside (written atomically): treated as absent
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any], mode: int = 0o600) -> None:
    write_atomic(path, json.dumps(data, sort_keys=True).encode() + b"\n")
    path.chmod(mode)


def load_state(install_dir: Path) -> UpdateState | None:
    raw = read_json(install_dir / "update" / "state.json")
    if raw is None:
        return None
    try:
        st = UpdateState(**{k: raw[k] for k in asdict(UpdateState()) if k in raw})
    except TypeError:
        return None
    return st


def save_state(install_dir: Path, st: UpdateState) -> None:
    st.rejected = st.rejected[-REJECTED_KEEP:]
    # world-readable: the unprivileged daemon reports it; it holds no secret
    write_json(install_dir / "update" / "state.json", asdict(st), 0o644)


class DaemonFiles:
    """``<data_dir>/update/``: what the daemon stages and says."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "update"
        self.staged_dir = self.dir / "staged"
        self.request = self.dir / "staged.json"
        self.baseline = self.dir / "baseline.json"
        self.verdict = self.dir / "verdict.json"
        self.own = self.dir / "daemon.json"

    def package(self, version: str, arch: str) -> Path:
        return self.staged_dir / f"schwebe_{version}_{arch}.deb"

    def staged(self) -> dict[str, Any] | None:
        return read_json(self.request)

    def drop_staged(self) -> None:
        """Forget the request and its files (the request first: half a drop is no request).

        Root runs this in a directory the daemon owns: every step goes through directory
        descriptors opened without following links, so a link planted there can only be
        removed itself, never lead root's unlink elsewhere."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            top = os.open(self.dir, flags)
        except OSError:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink("staged.json", dir_fd=top)
            _empty("staged", top, flags)
        finally:
            os.close(top)

    def drop(self, name: str) -> None:
        """Remove one of the daemon's files (``verdict.json``) as root may: no link followed."""
        try:
            top = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(name, dir_fd=top)
        finally:
            os.close(top)

    def verdict_for(self, version: str) -> dict[str, Any] | None:
        v = read_json(self.verdict)
        return v if v is not None and v.get("version") == version else None


def _empty(name: str, parent: int, flags: int) -> None:
    """Unlink the files of directory ``name`` (and of its ``metadata``) below ``parent``."""
    try:
        fd = os.open(name, flags, dir_fd=parent)
    except OSError:
        return
    try:
        for entry in os.listdir(fd):
            if entry == "metadata":
                _empty(entry, fd, flags)
                continue
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)


def status(install_dir: Path, data_dir: Path, running: str) -> dict[str, Any]:
    """The ``update`` object of /api/status and `schwebe update status`."""
    st = load_state(install_dir) or UpdateState()
    files = DaemonFiles(data_dir)
    staged = files.staged()
    outcome, version, reason, at = st.outcome, st.version, st.reason, st.at
    own = read_json(files.own)
    if own is not None and (at is None or float(own.get("at") or 0) > at):
        outcome, version, reason, at = own.get("outcome"), own.get("version"), own.get("reason"), own.get("at")
    trying = st.trying
    if trying is not None:
        verdict = files.verdict_for(trying)
        if verdict is not None:  # said by the release on trial; the next start records it
            outcome, version, reason, at = verdict.get("outcome"), trying, verdict.get("reason"), verdict.get("at")
            if outcome == "confirmed":
                trying = None
    return {"running": running, "trying": trying,
            "staged": None if staged is None else staged.get("version"),
            "outcome": outcome, "version": version, "reason": reason, "at": iso(at)}
