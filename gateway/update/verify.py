"""The root step's own check of a staged release: the daemon's word is not enough.

The unprivileged daemon downloaded the package through ngclient, but anything in its data
directory could have been changed since (a compromised daemon runs as the user who owns it).
So the root step copies the package into a root-owned directory first and verifies that copy
with its own ngclient instance: its trusted metadata in ``<install_dir>/update/metadata``
(root-owned; bootstrapped from ``[remote_config] root``, normally /etc/schwebe/root.json), the
metadata files the daemon staged as the only input (signatures, thresholds, expiry and version
rollback are checked as on any refresh), then length and sha256 of the copy against the
signed target. Nothing the daemon wrote is trusted unless TUF vouches for it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tuf.api import exceptions

from gateway.remote.client import Refused, open_updater, release_info, release_names
from gateway.remote.client import _reason as tuf_reason
from gateway.remote.fetchers import FilesFetcher
from gateway.update import MAX_RELEASE
from gateway.update.files import open_regular

#: Bound on the staged metadata read by root (files, bytes each).
MAX_META_FILES, MAX_META_BYTES = 64, 1 << 20


def _read_bounded(path: Path, limit: int) -> bytes:
    with os.fdopen(open_regular(path), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Refused(f"{path}: larger than {limit} bytes")
    return data


def copy_package(src: Path, dest: Path) -> None:
    """Copy the daemon's file (no symlink followed, at most MAX_RELEASE bytes) to root's place."""
    try:
        fd = open_regular(src)
    except OSError as exc:
        raise Refused(f"staged package {src}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f, dest.open("wb") as out:
        n = 0
        while chunk := f.read(1 << 20):
            n += len(chunk)
            if n > MAX_RELEASE:
                raise Refused(f"staged package {src}: larger than {MAX_RELEASE} bytes")
            out.write(chunk)


def verify_copy(*, copy: Path, staged_metadata: Path, trusted_root: Path, metadata_dir: Path,
                eui: int, arch: str, target: str, version: str) -> None:
    """Raise Refused unless ``copy`` is the signed release ``target`` at ``version`` for this
    gateway and architecture, as root's own TUF client sees the staged metadata."""
    if target not in release_names(eui, arch):
        raise Refused(f"staged target {target!r} is not a release for gateway {eui:016x} on {arch}")
    files: dict[str, bytes] = {}
    try:
        names = sorted(os.listdir(staged_metadata))[:MAX_META_FILES]
    except OSError as exc:
        raise Refused(f"staged metadata {staged_metadata}: {exc.strerror}") from None
    for name in names:
        try:
            files[f"metadata/{name}"] = _read_bounded(staged_metadata / name, MAX_META_BYTES)
        except OSError:
            continue
    updater = open_updater(fetcher=FilesFetcher(files, "staged metadata"), base_url="staged://local/",
                           metadata_dir=metadata_dir, trusted_root=trusted_root)
    try:
        updater.refresh()
        info, signed_version = release_info(updater, target, arch)
    except Refused:
        raise
    except (exceptions.RepositoryError, exceptions.DownloadError, OSError, ValueError) as exc:
        raise Refused(tuf_reason(exc)) from None
    if signed_version != version:
        raise Refused(f"{target}: staged as {version} but the signed metadata says {signed_version}")
    if updater.find_cached_target(info, str(copy)) is None:
        raise Refused(f"{target} release {version}: tampered: the staged package does not match "
                      "the signed length and sha256")


def fresh_dir(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o755)
