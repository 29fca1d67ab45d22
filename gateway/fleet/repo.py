"""The fleet repository on disk: a TUF repository (python-tuf) plus fleet.json bookkeeping.

``init`` makes the keys and the first root; ``add_target`` stores a config file under
its consistent-snapshot name (``targets/configs/<sha256>.<name>``) and notes it in
fleet.json without signing (no keys needed); ``publish`` signs targets, snapshot and
timestamp from fleet.json's target list. ngclient on the gateway fetches exactly these
names (``N.targets.json``, ``N.snapshot.json``, ``timestamp.json``, ``N.root.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# The payload classes are defined in _payload; tuf.api.metadata re-exports them implicitly.
from tuf.api._payload import (
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata
from tuf.api.serialization.json import JSONSerializer

from gateway.fleet import FleetError
from gateway.fleet.keys import generate, load_signer
from gateway.remote.target import MAX_TARGET  # the gateway refuses larger: refuse here first

ROLES = ("root", "targets", "snapshot", "timestamp")
DAY = 86400.0
DEFAULT_EXPIRY = {"root": 365 * DAY, "targets": 90 * DAY, "snapshot": 7 * DAY, "timestamp": 1 * DAY}
EUI_RE = re.compile(r"[0-9a-f]{16}")
BOOK = "fleet.json"

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def config_target(eui: str | None) -> str:
    """The target path of a gateway's own config, or of the fleet-wide one (eui None)."""
    return "configs/all.toml" if eui is None else f"configs/{eui}.toml"


def normalise_eui(text: str) -> str:
    eui = text.strip().lower().replace(":", "").replace("-", "")
    if not EUI_RE.fullmatch(eui):
        raise FleetError(f"gateway EUI {text!r} is not 16 hex digits (e.g. b827ebfffe000001)")
    return eui


def hashed_name(target_path: str, sha256: str) -> str:
    """Where a target lives below targets/ with consistent snapshots (as ngclient asks for it)."""
    dirname, sep, base = target_path.rpartition("/")
    return f"{dirname}{sep}{sha256}.{base}"


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write-then-rename with fsync: a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class Published:
    """Versions written by one ``publish``."""

    targets: int
    snapshot: int
    timestamp: int
    config_targets: dict[str, int]
    releases: dict[str, str]  # releases/<who>/schwebe_<arch>.deb -> package version


class Repository:
    """One repository directory; every method leaves fleet.json and metadata/ consistent."""

    def __init__(self, path: Path, book: dict[str, Any], *, now: Clock = utcnow) -> None:
        self.path = path
        self.book = book
        self.now = now

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, now: Clock = utcnow) -> Repository:
        try:
            book = json.loads((path / BOOK).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FleetError(f"{path}: no {BOOK} here: not a fleet repository "
                             f"(make one with: schwebe fleet init {path})") from None
        except (OSError, ValueError) as exc:
            raise FleetError(f"{path / BOOK}: unreadable: {exc}") from None
        if not isinstance(book, dict) or book.get("format") != 1:
            raise FleetError(f"{path / BOOK}: not a fleet.json of format 1")
        return cls(path, book, now=now)

    @classmethod
    def init(cls, path: Path, *, thresholds: Mapping[str, int] | None = None,
             key_dirs: Mapping[str, Path] | None = None, expiry: Mapping[str, float] | None = None,
             now: Clock = utcnow) -> Repository:
        """Make keys and the first root; the repository has no targets yet."""
        thresholds = {r: 1 for r in ROLES} | dict(thresholds or {})
        expiry = DEFAULT_EXPIRY | dict(expiry or {})
        key_dirs = dict(key_dirs or {})
        for role, n in thresholds.items():
            if role not in ROLES:
                raise FleetError(f"--threshold {role}={n}: unknown role (one of {', '.join(ROLES)})")
            if not 1 <= n <= 16:
                raise FleetError(f"--threshold {role}={n}: must be 1..16 keys")
        if (path / BOOK).exists() or (path / "metadata").exists():
            raise FleetError(f"{path} already holds a repository: refusing to overwrite its keys")
        path.mkdir(parents=True, exist_ok=True)
        when = now()
        root = Root(expires=when + timedelta(seconds=expiry["root"]), consistent_snapshot=True)
        roles_book: dict[str, Any] = {}
        for role in ROLES:
            n = thresholds[role]
            key_dir = Path(key_dirs.get(role, path / "keys"))
            paths = []
            for i in range(n):
                stem = role if i == 0 else f"{role}.{i + 1}"
                public = generate(key_dir / f"{stem}.key", path / "keys" / f"{stem}.pub")
                root.add_key(public, role)
                paths.append(str(_relative(key_dir / f"{stem}.key", path)))
            root.roles[role] = Role(root.roles[role].keyids, n)
            roles_book[role] = {"threshold": n, "keys": paths}
        book = {"format": 1, "config_version": 0, "expiry_seconds": expiry, "roles": roles_book,
                "targets": {}, "published": {"root": 1, "targets": 0, "snapshot": 0, "timestamp": 0}}
        repo = cls(path, book, now=now)
        md = Metadata(root)
        for signer in repo._signers("root"):
            md.sign(signer, append=True)
        data = md.to_bytes(JSONSerializer(compact=False))
        atomic_write(path / "metadata" / "1.root.json", data)
        atomic_write(path / "metadata" / "root.json", data)
        (path / "targets").mkdir(exist_ok=True)
        repo.save()
        return repo

    def save(self) -> None:
        atomic_write(self.path / BOOK, (json.dumps(self.book, indent=1, sort_keys=True) + "\n").encode())

    def _signers(self, role: str) -> list[Any]:
        paths = self.book["roles"][role]["keys"]
        return [load_signer(self.path / p) for p in paths]

    # ---- targets -------------------------------------------------------------------------
    @property
    def config_version(self) -> int:
        return int(self.book["config_version"])

    def bump_version(self) -> int:
        self.book["config_version"] = self.config_version + 1
        return self.config_version

    def targets(self) -> dict[str, dict[str, Any]]:
        """target path -> {"sha256", "length", "version"} as the next publish will sign them."""
        return dict(self.book["targets"])

    def add_target(self, target_path: str, data: bytes, version: int) -> Path:
        if len(data) > MAX_TARGET:
            raise FleetError(f"{target_path}: oversized target ({len(data)} bytes; gateways accept "
                             f"at most {MAX_TARGET} bytes)")
        sha = hashlib.sha256(data).hexdigest()
        dest = self.path / "targets" / hashed_name(target_path, sha)
        atomic_write(dest, data)
        self.book["targets"][target_path] = {"sha256": sha, "length": len(data), "version": version}
        return dest

    def remove_target(self, target_path: str, *, delete: bool = False) -> None:
        """Leave ``target_path`` out of the next publish; ``delete`` also removes its file
        (the mirror then clears its retained copy)."""
        info = self.book["targets"].pop(target_path, None)
        if delete and info is not None:
            (self.path / "targets" / hashed_name(target_path, info["sha256"])).unlink(missing_ok=True)

    def published_version(self, role: str) -> int:
        return int(self.book["published"][role])

    def target_bytes(self, target_path: str) -> bytes:
        info = self.book["targets"].get(target_path)
        if info is None:
            raise FleetError(f"{self.path}: no target {target_path} (store one with fleet set-config)")
        return (self.path / "targets" / hashed_name(target_path, info["sha256"])).read_bytes()

    # ---- signing -------------------------------------------------------------------------
    def _expires(self, role: str) -> datetime:
        return self.now().replace(microsecond=0) + timedelta(seconds=float(self.book["expiry_seconds"][role]))

    def _sign(self, md: Metadata[Any], role: str) -> bytes:
        for signer in self._signers(role):
            md.sign(signer, append=True)
        return md.to_bytes(JSONSerializer(compact=False))

    def publish(self) -> Published:
        """Sign a new targets, snapshot and timestamp; a cron run keeps timestamp fresh."""
        pub = self.book["published"]
        tv, sv, stv = pub["targets"] + 1, pub["snapshot"] + 1, pub["timestamp"] + 1
        files = {}
        for name, info in sorted(self.book["targets"].items()):
            # custom: the config version (int), or a release's version, arch and file name
            custom = {k: info[k] for k in ("version", "arch", "package") if k in info}
            files[name] = TargetFile(info["length"], {"sha256": info["sha256"]}, name,
                                     unrecognized_fields={"custom": custom})
        meta = self.path / "metadata"
        # Order matters for a client reading while we write: targets, then snapshot, then
        # the timestamp that points at them; each file lands whole (atomic rename).
        targets = self._sign(Metadata(Targets(version=tv, expires=self._expires("targets"),
                                              targets=files)), "targets")
        atomic_write(meta / f"{tv}.targets.json", targets)
        snapshot = self._sign(Metadata(Snapshot(version=sv, expires=self._expires("snapshot"),
                                                meta={"targets.json": MetaFile(version=tv)})), "snapshot")
        atomic_write(meta / f"{sv}.snapshot.json", snapshot)
        timestamp = self._sign(Metadata(Timestamp(version=stv, expires=self._expires("timestamp"),
                                                  snapshot_meta=MetaFile(version=sv))), "timestamp")
        atomic_write(meta / "timestamp.json", timestamp)
        self.book["published"] = {**pub, "targets": tv, "snapshot": sv, "timestamp": stv}
        self.save()
        targets = self.book["targets"].items()
        return Published(tv, sv, stv, {n: int(i["version"]) for n, i in targets if n.startswith("configs/")},
                         {n: str(i["version"]) for n, i in targets if n.startswith("releases/")})

    def root_versions(self) -> list[int]:
        return list(range(1, int(self.book["published"]["root"]) + 1))

    def read_metadata(self, rel: str) -> Metadata[Any]:
        path = self.path / rel
        try:
            return Metadata.from_bytes(path.read_bytes())
        except OSError as exc:
            raise FleetError(f"{path}: cannot read: {exc.strerror}") from None
        except RepositoryError as exc:
            raise FleetError(f"{path}: not TUF metadata: {exc}") from None

    def published_files(self) -> dict[str, str | None]:
        """What a client needs of the last publish: path below the repository -> target name
        (None for metadata). Every root version (a client walks them after a key rotation),
        timestamp.json, the snapshot and targets it leads to, the files those targets name.
        Superseded metadata and configs stay on disk for clients still on the last publish
        but are no use to a new one.
        """
        tv, sv = self.published_version("targets"), self.published_version("snapshot")
        if tv == 0:
            raise FleetError(f"{self.path}: nothing published yet: run schwebe fleet publish {self.path}")
        out: dict[str, str | None] = {f"metadata/{n}.root.json": None for n in self.root_versions()}
        out.update({"metadata/timestamp.json": None, f"metadata/{sv}.snapshot.json": None,
                    f"metadata/{tv}.targets.json": None})
        signed = self.read_metadata(f"metadata/{tv}.targets.json").signed
        assert isinstance(signed, Targets)
        for name, info in sorted(signed.targets.items()):
            out[f"targets/{hashed_name(name, info.hashes['sha256'])}"] = name
        return out


def _relative(p: Path, base: Path) -> Path:
    try:
        return p.resolve().relative_to(base.resolve())
    except ValueError:
        return p.resolve()
