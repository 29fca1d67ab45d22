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

# Defined in _payload; tuf.api.metadata re-exports it implicitly (mypy strict).
from tuf.api._payload import Timestamp

from gateway.fleet import FleetError
from gateway.fleet.repo import Repository, config_target
from gateway.remote import MAX_BUNDLE  # the gateway refuses larger uploads


@dataclass(frozen=True, slots=True)
class Bundle:
    members: list[str]
    targets: list[str]
    timestamp_expires: datetime


def make_bundle(repo: Repository, eui: str, out: Path, *, now: datetime | None = None) -> Bundle:
    """Write the bundle for gateway ``eui`` to ``out`` (whole or not at all)."""
    now = now or datetime.now(UTC)
    files = repo.published_files()
    wanted = [name for name in (config_target(eui), config_target(None)) if name in files.values()]
    members = [rel for rel, name in files.items() if name is None or name in wanted]
    ts = repo.read_metadata("metadata/timestamp.json").signed
    assert isinstance(ts, Timestamp)
    if ts.expires <= now:
        # the gateway would refuse it as expired metadata: say so here, not at the lamp post
        raise FleetError(f"{repo.path}/metadata/timestamp.json expired at {ts.expires.isoformat()}: "
                         f"run schwebe fleet publish {repo.path} first")
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
        size = tmp.stat().st_size
        if size > MAX_BUNDLE:
            tmp.unlink()
            raise FleetError(f"{out}: the bundle would be {size} bytes; gateways take at most "
                             f"{MAX_BUNDLE} (too many root versions or an oversized config)")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FleetError(f"{exc.filename or out}: cannot write the bundle: {exc.strerror}") from None
    return Bundle(members, wanted, ts.expires)
