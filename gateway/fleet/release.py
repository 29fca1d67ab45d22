"""`schwebe fleet release`: a Debian package of schwebe as a target of the fleet repository.

A gateway looks its release up by name, as it does its config (ngclient finds targets by
path, it does not list them): ``releases/<its EUI>/schwebe_<arch>.deb`` when there is one,
else ``releases/all/schwebe_<arch>.deb``. The signed custom fields say which package it is
(``version``, ``arch``, ``package``), so a gateway knows the version before downloading.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from gateway.fleet import FleetError
from gateway.fleet.repo import Repository, hashed_name
from gateway.update import MAX_RELEASE
from gateway.update.deb import DebError, DebInfo, inspect


def release_target(eui: str | None, arch: str) -> str:
    return f"releases/{eui or 'all'}/schwebe_{arch}.deb"


def add_release(repo: Repository, deb: Path, eui: str | None) -> tuple[DebInfo, str]:
    """Check ``deb`` and store it as the release for ``eui`` (None: every gateway of its arch)."""
    try:
        size = deb.stat().st_size
    except OSError as exc:
        raise FleetError(f"{deb}: cannot read: {exc.strerror}") from None
    if size > MAX_RELEASE:
        raise FleetError(f"{deb}: {size} bytes; gateways take releases of at most {MAX_RELEASE}")
    try:
        info = inspect(deb)
    except DebError as exc:
        raise FleetError(f"not released: {exc}") from None
    target = release_target(eui, info.arch)
    digest = hashlib.sha256()
    with deb.open("rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    sha, length = digest.hexdigest(), size
    final = repo.path / "targets" / hashed_name(target, sha)
    dest = final.with_name(".upload.tmp")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    # the same package for many gateways (a rollout's waves): one file, hard links
    same = next((p for p in (repo.path / "targets" / "releases").glob(f"*/{sha}.*") if p.is_file()), None)
    if same is not None:
        os.link(same, dest)
    else:
        with deb.open("rb") as src, dest.open("wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    os.replace(dest, final)
    repo.book["targets"][target] = {"sha256": sha, "length": length, "version": info.version,
                                    "arch": info.arch, "package": info.file_name}
    repo.save()
    return info, target
