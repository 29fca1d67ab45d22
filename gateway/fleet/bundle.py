"""On-site bundle: the part of the repository one gateway needs, as a tar.

The members mirror the repository (``metadata/1.root.json``, ``metadata/timestamp.json``,
``targets/configs/<sha256>.all.toml``...), so the gateway verifies the bundle with ngclient
exactly as a download: every root version (for key rotations since its trusted root), the
timestamp, the published snapshot and targets, and its config target(s).
Only what has been published (signed) goes in: an unpublished set-config is not in a bundle.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata

from gateway.fleet import FleetError
from gateway.fleet.repo import Repository, config_target, hashed_name


@dataclass(frozen=True, slots=True)
class Bundle:
    members: list[str]
    targets: list[str]
    timestamp_expires: datetime


def _signed(repo: Repository, rel: str) -> Metadata:  # type: ignore[type-arg]
    path = repo.path / rel
    try:
        return Metadata.from_bytes(path.read_bytes())
    except OSError as exc:
        raise FleetError(f"{path}: cannot read: {exc.strerror}") from None
    except RepositoryError as exc:
        raise FleetError(f"{path}: not TUF metadata: {exc}") from None


def make_bundle(repo: Repository, eui: str, out: Path, *, now: datetime | None = None) -> Bundle:
    """Write the bundle for gateway ``eui`` to ``out`` (whole or not at all)."""
    now = now or datetime.now(UTC)
    tv, sv = repo.published_version("targets"), repo.published_version("snapshot")
    if tv == 0:
        raise FleetError(f"{repo.path}: nothing published yet: run schwebe fleet publish {repo.path}")
    members = [f"metadata/{n}.root.json" for n in repo.root_versions()]
    members += ["metadata/timestamp.json", f"metadata/{sv}.snapshot.json", f"metadata/{tv}.targets.json"]
    signed = _signed(repo, f"metadata/{tv}.targets.json").signed
    ts = _signed(repo, "metadata/timestamp.json").signed
    if ts.expires <= now:
        # the gateway would refuse it as expired metadata: say so here, not at the lamp post
        raise FleetError(f"{repo.path}/metadata/timestamp.json expired at {ts.expires.isoformat()}: "
                         f"run schwebe fleet publish {repo.path} first")
    wanted = []
    for name in (config_target(eui), config_target(None)):
        info = signed.targets.get(name)
        if info is not None:
            wanted.append(name)
            members.append(f"targets/{hashed_name(name, info.hashes['sha256'])}")
    if not wanted:
        raise FleetError(f"{repo.path}: no published config for gateway {eui} (neither "
                         f"{config_target(eui)} nor {config_target(None)}): store one with "
                         "fleet set-config, then fleet publish")
    when = int(now.timestamp())
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for rel in members:
                data = (repo.path / rel).read_bytes()
                info = tarfile.TarInfo(rel)
                info.size, info.mode, info.mtime = len(data), 0o644, when
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FleetError(f"{exc.filename or out}: cannot write the bundle: {exc.strerror}") from None
    return Bundle(members, wanted, ts.expires)
