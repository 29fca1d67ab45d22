"""What the gateway remembers about pushed configs, in ``<data_dir>/remote/``, power-cut safe.

Files (each replaced whole: temp file, fsync, rename, fsync the directory):

- ``state.json``: the last attempt and what runs (see RemoteState);
- ``candidate.toml``: the target being tried (staged or confirming);
- ``confirmed.toml``: the last confirmed target, the last-known-good config;
- ``audit.jsonl``: one line per attempt, bounded (the newest AUDIT_KEEP lines survive).

Order of writes for one attempt, so a kill at any point leaves a loadable config:
candidate.toml, then state staged, then state confirming (the new config runs), then
confirmed.toml, then state confirmed. At start, ``staged`` means the candidate never ran
(it is dropped and fetched again); ``confirming`` means the gateway stopped while trying
it: that version is rolled back and never tried again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.fsio import fsync_dir, write_atomic

log = logging.getLogger("schwebe.remote")

STATES = ("none", "staged", "confirming", "confirmed", "rolled-back", "refused")
AUDIT_KEEP = 200
#: Versions remembered as rolled back or refused (never tried again), newest last.
REJECTED_KEEP = 50


@dataclass
class RemoteState:
    state: str = "none"
    version: int | None = None  # the version this state is about
    reason: str | None = None
    source: str | None = None  # https, mqtt, bundle, local
    at: float | None = None
    running: int | None = None  # the version in effect (None: the on-site file)
    rejected: list[int] = field(default_factory=list)

    def public(self, eui: int) -> dict[str, Any]:
        """The state part of what `StateStore.public` reports."""
        return {
            "eui": f"{eui:016x}", "version": self.version, "state": self.state,
            "reason": self.reason, "source": self.source, "last_confirmed": self.running,
            "at": None if self.at is None else
            datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.state_path = directory / "state.json"
        self.candidate_path = directory / "candidate.toml"
        self.confirmed_path = directory / "confirmed.toml"
        self.audit_path = directory / "audit.jsonl"

    def public(self, st: RemoteState, eui: int) -> dict[str, Any]:
        """The object of `schwebe config status`, /api/status and the retained MQTT state."""
        return {**st.public(eui), "history": self.audit_tail(5)}

    def load(self) -> RemoteState:
        try:
            raw = json.loads(self.state_path.read_bytes())
            st = RemoteState(**{k: raw[k] for k in asdict(RemoteState()) if k in raw})
            if st.state not in STATES:
                raise ValueError(f"unknown state {st.state!r}")
            return st
        except FileNotFoundError:
            return RemoteState()
        except (OSError, ValueError, TypeError) as exc:
            # Written atomically, so this is outside damage: start from the on-site file.
            log.error("remote config state unreadable; starting from the on-site config",
                      extra={"fields": {"path": str(self.state_path), "detail": str(exc)[:200]}})
            return RemoteState()

    def save(self, st: RemoteState) -> None:
        st.rejected = st.rejected[-REJECTED_KEEP:]
        write_atomic(self.state_path, json.dumps(asdict(st), sort_keys=True).encode() + b"\n")

    def write_candidate(self, text: str) -> None:
        write_atomic(self.candidate_path, text.encode("utf-8"))

    def candidate(self) -> str | None:
        return _read(self.candidate_path)

    def confirmed(self) -> str | None:
        return _read(self.confirmed_path)

    def promote(self) -> None:
        """The candidate becomes the last-known-good config (one rename)."""
        os.replace(self.candidate_path, self.confirmed_path)
        fsync_dir(self.dir)

    def drop_candidate(self) -> None:
        self.candidate_path.unlink(missing_ok=True)

    def audit(self, **entry: Any) -> None:
        """One line per attempt; the file is cut to the newest AUDIT_KEEP lines when it grows."""
        line = json.dumps({"at": round(time.time(), 3), **entry}, sort_keys=True) + "\n"
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > AUDIT_KEEP * 2 * 400:
            lines = self.audit_path.read_bytes().splitlines(keepends=True)
            write_atomic(self.audit_path, b"".join(lines[-AUDIT_KEEP:]))

    def audit_tail(self, n: int = 20) -> list[dict[str, Any]]:
        try:
            lines = self.audit_path.read_bytes().splitlines()[-n:]
        except OSError:
            return []
        out = []
        for raw in lines:
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue  # a line cut by a power loss
        return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.error("remote config file unreadable", extra={"fields": {"path": str(path),
                                                                    "detail": str(exc)[:200]}})
        return None
