"""The root step: `schwebe update apply`, run by systemd before every start of the daemon.

It owns ``<install_dir>`` (/opt/schwebe): ``releases/<version>/`` slots, the ``current`` link
(what runs), the ``confirmed`` link (the last release that proved itself; the unit runs this
step from it, so a broken release cannot break its own rollback) and ``update/state.json``.
Every switch is one ``rename(2)`` of a link; every slot appears by one rename of a fully
unpacked, synced tree. The state is written before the link it describes is moved, and each
run first repairs the links to what the state says, so a power cut at any step leaves
``current`` on a complete slot and the next run finishes the step or rolls it back.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gateway.fsio import fsync_dir
from gateway.remote.client import Refused
from gateway.update import KILL_AT_ENV
from gateway.update.deb import VERSION_RE, DebError, inspect
from gateway.update.files import DaemonFiles, UpdateState, load_state, save_state
from gateway.update.verify import copy_package, fresh_dir, verify_copy

log = logging.getLogger("schwebe.update")

#: Starts a release on trial gets before it is rolled back without a verdict (a crash loop,
#: a release that never reaches READY and is killed by TimeoutStartSec, a hang).
MAX_STARTS = 3


@dataclass(frozen=True)
class Site:
    """What the root step needs from the on-site config (root-owned /etc/schwebe/schwebe.toml)."""

    install_dir: Path
    data_dir: Path
    trusted_root: Path
    eui: int
    arch: str


class Slots:
    def __init__(self, site: Site, *, max_starts: int = MAX_STARTS) -> None:
        self.site = site
        self.dir = site.install_dir
        self.releases = self.dir / "releases"
        self.max_starts = max_starts
        self.files = DaemonFiles(site.data_dir)

    # ------------------------------------------------------------------ links and slots

    def link(self, name: str) -> str | None:
        """The version a link names (``releases/<v>``), or None."""
        try:
            target = os.readlink(self.dir / name)
        except OSError:
            return None
        v = Path(target).name
        return v if VERSION_RE.fullmatch(v) else None

    def complete(self, version: str | None) -> bool:
        return version is not None and (self.releases / version / "bin" / "schwebe").is_file()

    def flip(self, name: str, version: str) -> None:
        """Point link ``name`` at ``releases/<version>`` with one rename."""
        if self.link(name) == version:
            return
        tmp = self.dir / f".{name}.new"
        tmp.unlink(missing_ok=True)
        os.symlink(f"releases/{version}", tmp)
        os.replace(tmp, self.dir / name)
        fsync_dir(self.dir)
        log.info("update: %s -> releases/%s", name, version)

    @staticmethod
    def _step(name: str) -> None:
        if os.environ.get(KILL_AT_ENV) == name:
            os.kill(os.getpid(), signal.SIGKILL)

    def save(self, st: UpdateState, step: str) -> None:
        save_state(self.dir, st)
        self._step(step)

    # ------------------------------------------------------------------ the run

    def apply(self) -> UpdateState:
        """One run: repair, judge a release on trial, install a staged one. Returns the state."""
        (self.dir / "update").mkdir(parents=True, exist_ok=True, mode=0o755)
        st = load_state(self.dir)
        confirmed = self.link("confirmed")
        current = self.link("current")
        if st is None or (confirmed is not None and confirmed not in (st.running, st.trying)):
            # first run, or a release installed from outside (apt install: postinst moves both
            # links): that one runs, nothing is on trial
            running = current if self.complete(current) else confirmed
            st = UpdateState(running=running, rejected=[] if st is None else st.rejected)
            if running is not None and confirmed != running:
                self.flip("confirmed", running)
            self.save(st, "adopted")
        if st.trying is not None and (self.files.staged() or {}).get("version") == st.trying:
            self.files.drop_staged()  # stopped between switching and dropping the request
        if st.trying is not None and self._judge(st):
            return st
        self._repair(st)
        request = self.files.staged()
        if request is not None:
            self._install(st, request)
        return st

    def _repair(self, st: UpdateState) -> None:
        """``current`` names the release the state says runs (finishing an interrupted flip)."""
        want = st.trying or st.running
        if self.complete(want):
            assert want is not None
            self.flip("current", want)
        elif not self.complete(self.link("current")):
            fallback = next((v for v in (st.running, self.link("confirmed"), st.previous)
                             if self.complete(v)), None)
            if fallback is not None:
                self.flip("current", fallback)
        self.prune(st)  # a slot left by a run stopped while rolling back

    def _judge(self, st: UpdateState) -> bool:
        """A release on trial: confirmed, asked back, or one more start. True: it runs now."""
        v = st.trying
        assert v is not None
        if self.link("confirmed") == v:  # stopped between moving the link and saying so
            self._confirm(st)
            return False
        verdict = self.files.verdict_for(v)
        if verdict is not None and verdict.get("outcome") == "confirmed":
            self._confirm(st)
            return False
        if verdict is not None and verdict.get("outcome") == "rolled-back":
            self._roll_back(st, str(verdict.get("reason") or "the release asked to be rolled back"))
            return False
        if not self.complete(v):
            self._roll_back(st, f"release {v} is not complete in {self.releases / v}")
            return False
        st.starts += 1
        if st.starts > self.max_starts:
            self._roll_back(st, f"release {v} did not confirm within {self.max_starts} starts "
                                "(it crashed, never reached READY or hung)")
            return False
        self.save(st, "counted")
        self.flip("current", v)
        return True

    def _confirm(self, st: UpdateState) -> None:
        v = st.trying
        assert v is not None
        self.flip("confirmed", v)
        self._step("confirm-link")
        st.previous = st.running
        st.running, st.trying, st.starts = v, None, 0
        st.said("confirmed", v, None)
        self.save(st, "confirmed")
        self.files.drop("verdict.json")
        self.prune(st)
        log.info("update: release %s confirmed", v)

    def _roll_back(self, st: UpdateState, reason: str) -> None:
        v = st.trying
        assert v is not None
        back = st.running if self.complete(st.running) else self.link("confirmed")
        st.rejected.append(v)
        st.trying, st.starts = None, 0
        st.said("rolled-back", v, f"{reason}; back to {back}")
        self.save(st, "rolled-back")
        if back is not None:
            self.flip("current", back)
        self._step("flipped-back")
        if v not in (back, self.link("confirmed")):
            shutil.rmtree(self.releases / v, ignore_errors=True)
        self.files.drop("verdict.json")
        log.warning("update: release %s rolled back: %s", v, reason)

    def prune(self, st: UpdateState) -> None:
        """Keep what runs and one back; older slots go."""
        keep = {st.running, st.previous, st.trying, self.link("current"), self.link("confirmed")}
        if self.releases.is_dir():
            for slot in self.releases.iterdir():
                if slot.name not in keep and not slot.is_symlink():
                    shutil.rmtree(slot, ignore_errors=True)

    # ------------------------------------------------------------------ a staged release

    def _refuse(self, st: UpdateState, version: str | None, reason: str) -> None:
        if version is not None and version not in st.rejected:
            st.rejected.append(version)
        st.said("refused", version, reason)
        self.save(st, "refused")
        self.files.drop_staged()
        log.warning("update: staged release refused: %s", reason)

    def _install(self, st: UpdateState, request: dict[str, object]) -> None:
        version, target = request.get("version"), request.get("target")
        if not isinstance(version, str) or not VERSION_RE.fullmatch(version) or not isinstance(target, str):
            self._refuse(st, None, "staged.json names no valid version and target")
            return
        if version == st.running or version in st.rejected:
            self.files.drop_staged()  # nothing new, or failed once: never tried again
            return
        work = self.dir / ".unpack"
        fresh_dir(work)
        copy = work / "release.deb"
        try:
            copy_package(self.files.package(version, self.site.arch), copy)
            verify_copy(copy=copy, staged_metadata=self.files.staged_dir / "metadata",
                        trusted_root=self.site.trusted_root, metadata_dir=self.dir / "update" / "metadata",
                        eui=self.site.eui, arch=self.site.arch, target=target, version=version)
            info = inspect(copy, check_tree=False)
            if (info.version, info.arch) != (version, self.site.arch):
                raise Refused(f"the package is {info.file_name}, signed as {version} for {self.site.arch}")
        except (Refused, DebError) as exc:
            shutil.rmtree(work, ignore_errors=True)
            self._refuse(st, version, str(exc))
            return
        self._step("verified")
        tree = work / "tree"
        done = subprocess.run(["dpkg-deb", "-x", str(copy), str(tree)], capture_output=True, text=True)
        slot = tree / "opt" / "schwebe" / "releases" / version
        if done.returncode != 0 or not (slot / "bin" / "schwebe").is_file():
            shutil.rmtree(work, ignore_errors=True)
            self._refuse(st, version, f"the package does not unpack to /opt/schwebe/releases/{version}"
                         f"/bin/schwebe: {done.stderr.strip()[:200]}")
            return
        self._step("unpacked")
        os.sync()  # every file of the slot on flash before the rename makes it count
        dest = self.releases / version
        if dest.exists() and version not in (st.running, self.link("confirmed")):
            shutil.rmtree(dest)  # a leftover of an interrupted run
        self.releases.mkdir(parents=True, exist_ok=True)
        os.rename(slot, dest)
        fsync_dir(self.releases)
        shutil.rmtree(work, ignore_errors=True)
        self._step("slot-ready")
        st.trying, st.starts = version, 1
        st.said(None, version, None)
        self.save(st, "trying")
        self.flip("current", version)
        self._step("switched")
        self.files.drop_staged()
        log.warning("update: trying release %s (was %s)", version, st.running)
