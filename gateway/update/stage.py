"""The daemon's half of self-update: find and stage a release, and judge one on trial.

Finding: the same TUF client and trusted metadata as configs (gateway/remote/client.py), over
HTTPS only (packages are tens of MB: the MQTT mirror carries metadata and configs, a
notification there still makes the gateway look). Staging: ngclient downloads and verifies the
package into ``<data_dir>/update/staged/``; the metadata that vouched for it is copied beside
it (the root step checks the package again with it); ``baseline.json`` records what works now;
``staged.json`` last. Then the daemon exits with EXIT_UPDATE and systemd starts it again
through the root step. Judging: a release on trial (the root state's ``trying`` is this
process's version) passes the same window as a pushed config: READY, and every forwarder that
delivered and every input that received under the old release do so again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.remote import client
from gateway.update.files import (
    DaemonFiles,
    load_state,
    read_json,
    running_version,
    status,
    write_json,
)

log = logging.getLogger("schwebe.update")

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "armhf", "armv6l": "armhf",
         "i686": "i386"}


def debian_arch() -> str:
    """Debian's name for this machine's architecture (what `dpkg --print-architecture` says)."""
    m = platform.machine()
    return _ARCH.get(m, m.lower())


def copy_metadata(state_dir: Path, dest: Path) -> None:
    """The trusted metadata the download was checked with, under the names a fetcher serves
    (``N.root.json`` for every root version known, ``timestamp.json``, ``N.snapshot.json``,
    ``N.targets.json``)."""
    dest.mkdir(parents=True, exist_ok=True)
    meta = state_dir / "metadata"
    for p in sorted((meta / "root_history").glob("*.root.json")):
        (dest / p.name).write_bytes(p.read_bytes())
    (dest / "timestamp.json").write_bytes((meta / "timestamp.json").read_bytes())
    for role in ("snapshot", "targets"):
        data = (meta / f"{role}.json").read_bytes()
        version = json.loads(data)["signed"]["version"]
        (dest / f"{version}.{role}.json").write_bytes(data)


class Releases:
    """Self-update as seen from the daemon; off unless ``install_dir/current`` is a link
    (a packaged install) and configs come from an HTTPS repository."""

    def __init__(self, local: Config, *, arch: str | None = None, version: str | None = None) -> None:
        rc = local.remote_config
        self.install_dir = Path(rc.install_dir)
        self.data_dir = Path(local.gateway.data_dir)
        self.trusted_root = Path(str(rc.root))
        self.eui = local.gateway.eui
        self.window = rc.confirm_window
        self.arch = arch or debian_arch()
        self.running = version or running_version()
        self.files = DaemonFiles(self.data_dir)
        self.enabled = (rc.self_update and rc.repository is not None
                        and (self.install_dir / "current").is_symlink())

    def public(self) -> dict[str, Any]:
        out = status(self.install_dir, self.data_dir, self.running)
        out["enabled"] = self.enabled
        out["arch"] = self.arch
        return out

    def on_trial(self) -> bool:
        st = load_state(self.install_dir)
        return (self.enabled and st is not None and st.trying == self.running
                and self.files.verdict_for(self.running) is None)

    # ------------------------------------------------------------------ finding and staging

    def _refused(self, version: str | None, reason: str) -> None:
        own = read_json(self.files.own) or {}
        if (own.get("version"), own.get("reason")) == (version, reason):
            return  # the same answer at every poll: said once
        write_json(self.files.own, {"outcome": "refused", "version": version, "reason": reason,
                                    "at": time.time()})
        log.warning("update: release refused", extra={"fields": {"version": version, "reason": reason}})

    async def check(self, fetcher: Any, base_url: str, state_dir: Path,
                    baseline: tuple[frozenset[str], frozenset[str]]) -> bool:
        """Look for a release; True when one is staged (the caller then exits for the switch)."""
        if not self.enabled:
            return False
        st = load_state(self.install_dir)
        rejected = set(st.rejected) if st is not None else set()
        staged = self.files.staged()

        def skip(v: str) -> bool:
            return (v == self.running or v in rejected or (staged or {}).get("version") == v
                    or (st is not None and st.trying == v))

        try:
            offer = await asyncio.to_thread(
                client.check_release, fetcher=fetcher, base_url=base_url, state_dir=state_dir,
                trusted_root=self.trusted_root, eui=self.eui, arch=self.arch,
                dest=lambda v: self.files.package(v, self.arch), skip=skip)
        except client.Refused as exc:
            self._refused(None, str(exc))
            return False
        if offer is None or offer.path is None:
            return False
        self.files.request.unlink(missing_ok=True)
        meta = self.files.staged_dir / "metadata"
        for old in meta.glob("*") if meta.is_dir() else ():
            old.unlink()
        await asyncio.to_thread(copy_metadata, state_dir, meta)
        working, receiving = baseline
        write_json(self.files.baseline, {"version": self.running, "forwarders": sorted(working),
                                         "sources": sorted(receiving)})
        write_json(self.files.request, {"version": offer.version, "arch": offer.arch,
                                        "target": offer.target, "at": time.time()})
        log.warning("update: release staged; restarting into it", extra={"fields": {
            "version": offer.version, "running": self.running, "target": offer.target}})
        return True

    # ------------------------------------------------------------------ a release on trial

    def baseline(self) -> tuple[frozenset[str], frozenset[str]]:
        b = read_json(self.files.baseline) or {}
        return (frozenset(str(x) for x in b.get("forwarders") or ()),
                frozenset(str(x) for x in b.get("sources") or ()))

    async def trial(self, ready: asyncio.Event,
                    watch: Callable[[tuple[frozenset[str], frozenset[str]]], Awaitable[list[str]]]) -> bool:
        """Judge this release; True when it failed (the caller exits so the root step rolls back)."""
        log.warning("update: release %s on trial; confirm window %gs", self.running, self.window)
        await ready.wait()
        problems = await watch(self.baseline())
        if problems:
            reason = f"release {self.running} rolled back: " + "; ".join(problems)
            write_json(self.files.verdict, {"version": self.running, "outcome": "rolled-back",
                                            "reason": reason[:400], "at": time.time()})
            log.warning("update: %s", reason)
            return True
        write_json(self.files.verdict, {"version": self.running, "outcome": "confirmed",
                                        "reason": None, "at": time.time()})
        log.warning("update: release %s confirmed", self.running)
        return False
