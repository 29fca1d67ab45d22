"""Pushed configs on the gateway: fetch through TUF, apply, confirm or roll back by itself.

Three ways in, one check (gateway/remote/client.py): a jittered poll of the HTTPS
repository, the MQTT broker (a notification, or the repository mirrored as retained
messages), and an on-site bundle uploaded on the local page. A verified, valid config is
staged on flash, applied by restarting only what changed, and watched for
``confirm_window``: a forwarder that delivered before and cannot now, or an input that
received before and went silent, brings the previous config back by itself. Only a
confirmed config becomes last-known-good; the on-site file is the final fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from gateway.config import Config, ConfigError, parse_toml
from gateway.logs import setup_logging
from gateway.remote import client
from gateway.remote.fetchers import FilesFetcher, HttpsFetcher, bundle_files
from gateway.remote.plan import plan
from gateway.remote.sealed import gateway_keypair, key_path
from gateway.remote.state import STATES, StateStore
from gateway.remote.target import MAX_TARGET, gateway_config

log = logging.getLogger("schwebe.remote")

#: Fault injection for the crash tests: the daemon SIGKILLs itself at this step.
KILL_AT_ENV = "SCHWEBE_REMOTE_KILL_AT"
#: Bound on the MQTT mirror (files, bytes): a broker cannot fill the gateway's memory.
MIRROR_FILES, MIRROR_BYTES = 256, 8 << 20


class RemoteConfig:
    """Owns ``<data_dir>/remote/``; one attempt at a time."""

    def __init__(self, local_path: Path, local: Config) -> None:
        self.local = local
        self.local_data = parse_toml(local_path.read_text(encoding="utf-8"), str(local_path))
        self.rc = local.remote_config
        self.eui = local.gateway.eui
        self.store = StateStore(Path(local.gateway.data_dir) / "remote")
        self.key_file = key_path(Path(local.gateway.data_dir))
        self.st = self.store.load()
        self.gw: Any = None
        self.restart_with: Config | None = None
        self.mirror: dict[str, bytes] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._attached = asyncio.Event()
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=64)
        self._running_text: str | None = None
        self._https = None
        from gateway.update.stage import Releases

        self.releases = Releases(local)
        self.exit_code: int | None = None  # EXIT_UPDATE: the daemon stops for the root step
        if self.rc.repository is not None:
            self._https = HttpsFetcher(ca_file=self.rc.ca,
                                       timeout=max(2.0, min(20.0, self.rc.poll_interval / 3)))

    # ------------------------------------------------------------------ start-up

    def boot_config(self) -> Config:
        """The config to start with: last confirmed, else the on-site file.

        A gateway stopped while confirming a version rolls it back here (and never tries
        it again: if that config killed the daemon, retrying would kill it in a loop).
        """
        self.store.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            gateway_keypair(Path(self.local.gateway.data_dir))
        except (OSError, ValueError) as exc:  # sealed secrets then refuse; the gateway runs
            log.error("remote config: the gateway key cannot be read or made: %s", exc)
        st = self.st
        if st.state == "staged":  # never ran: drop it, the next check fetches it again
            self.store.drop_candidate()
            self._set("confirmed" if st.running is not None else "none", st.running, None, st.source)
        elif st.state == "confirming" and self.store.candidate() is None and st.version is not None:
            # killed between promoting the file and saying so: the window had passed
            st.running = st.version
            self._set("confirmed", st.version, None, st.source)
            self.store.audit(version=st.version, source=st.source, outcome="confirmed",
                             reason="confirmed before a restart")
        elif st.state == "confirming":
            failed = st.version
            if failed is not None:
                st.rejected.append(failed)
            self.store.drop_candidate()
            self._set("rolled-back", failed, f"the gateway restarted before version {failed} "
                      f"was confirmed; back to {self._running_name()}", st.source)
            self.store.audit(version=failed, source=st.source, outcome="rolled-back",
                             reason="restarted while confirming")
        text = self.store.confirmed()
        if text is None:
            st.running = None
            return self.local
        try:
            cfg = gateway_config(text, self.local, self.local_data, self.key_file,
                                 source=str(self.store.confirmed_path))
        except ConfigError as exc:
            log.error("last confirmed config no longer loads; running the on-site file",
                      extra={"fields": {"problems": exc.problems[:5]}})
            st.running = None
            return self.local
        self._running_text = text
        return cfg

    def _running_name(self) -> str:
        return "the on-site config" if self.st.running is None else f"version {self.st.running}"

    def attach(self, gw: Any) -> None:
        """A (re)built Gateway: report through it, listen on its MQTT forwarder."""
        self.gw = gw
        gw.remote = self
        gw.metrics.add_gauges(self._gauges)
        self._hook_mqtt()
        self._attached.set()

    def rehook(self) -> None:
        """The MQTT forwarder was replaced (a restart from the page): listen on the new one."""
        self._hook_mqtt()

    def _hook_mqtt(self) -> None:
        if self.rc.mqtt is None or self.gw is None:
            return
        fwd = self.gw.forwarder(self.rc.mqtt)
        if fwd is None or not hasattr(fwd, "listen"):
            return
        p = fwd.prefix
        fwd.listen((f"{p}/fleet/#", f"{p}/gateway/{self.eui:016x}/command/config"),
                   self._on_mqtt, max_bytes=MAX_TARGET + 4096)
        fwd.set_retained(self._state_topic(p), orjson.dumps(self.public()))
        self._publish_update()

    def _publish_update(self) -> None:
        """The self-update state, retained on ``{prefix}/gateway/{eui}/state/update`` (at each
        start, after a verdict, after staging): a fleet's releases watched from one broker."""
        if self.rc.mqtt is None or self.gw is None or not self.releases.enabled:
            return
        fwd = self.gw.forwarder(self.rc.mqtt)
        if fwd is not None and hasattr(fwd, "set_retained"):
            fwd.set_retained(f"{fwd.prefix}/gateway/{self.eui:016x}/state/update",
                             orjson.dumps({"eui": f"{self.eui:016x}", **self.releases.public()}))

    def _state_topic(self, prefix: str) -> str:
        return f"{prefix}/gateway/{self.eui:016x}/state/config"

    # ------------------------------------------------------------------ reporting

    def public(self) -> dict[str, Any]:
        return self.store.public(self.st, self.eui)

    def _set(self, state: str, version: int | None, reason: str | None, source: str | None) -> None:
        assert state in STATES
        self.st.state, self.st.version, self.st.reason = state, version, reason
        self.st.source, self.st.at = source, time.time()
        self.store.save(self.st)
        level = logging.WARNING if state in ("rolled-back", "refused") else logging.INFO
        log.log(level, "remote config %s", state, extra={"fields": {
            "version": version, "reason": reason, "source": source}})
        if self.gw is not None and self.rc.mqtt is not None:
            fwd = self.gw.forwarder(self.rc.mqtt)
            if fwd is not None and hasattr(fwd, "set_retained"):
                fwd.set_retained(self._state_topic(fwd.prefix), orjson.dumps(self.public()))

    def _gauges(self) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
        out: list[tuple[str, tuple[tuple[str, str], ...], float]] = [
            ("remote_config_version", (), float(self.st.running or 0))]
        out += [("remote_config_state", (("state", s),), 1.0 if s == self.st.state else 0.0)
                for s in STATES]
        return out

    @staticmethod
    def _step(name: str) -> None:
        if os.environ.get(KILL_AT_ENV) == name:
            os.kill(os.getpid(), signal.SIGKILL)

    # ------------------------------------------------------------------ ways in

    def _on_mqtt(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if parts[-2:] == ["command", "config"] or parts[-2:] == ["fleet", "notify"]:
            self._wake.set()
            return
        try:
            at = parts.index("fleet")
        except ValueError:
            return
        rel = "/".join(parts[at + 1:])
        if not rel.startswith(("metadata/", "targets/")):
            return
        if rel.startswith("targets/") and not rel.endswith((f".{self.eui:016x}.toml", ".all.toml")):
            return  # another gateway's config: a fleet of thousands must not fill this memory
        if not payload:
            self.mirror.pop(rel, None)  # a cleared retained message: the file is gone
            return
        if rel not in self.mirror and (len(self.mirror) >= MIRROR_FILES or
                                       sum(map(len, self.mirror.values())) + len(payload) > MIRROR_BYTES):
            log.warning("remote config: MQTT mirror full; ignoring %s", rel)
            return
        again = self.mirror.get(rel) == payload
        self.mirror[rel] = payload
        if rel == "metadata/timestamp.json" and not again:
            # a new publish ends with its timestamp; the same one redelivered at a reconnect
            # (retained) is nothing new
            self._wake.set()

    def _exit_for_update(self) -> None:
        from gateway.update import EXIT_UPDATE

        self.exit_code = EXIT_UPDATE
        self.restart_with = None
        if self.gw is not None:
            self.gw.supervisor.request_stop()

    async def _trial(self) -> None:
        failed = await self.releases.trial(self.gw.supervisor.ready, self._watch)
        self._publish_update()
        if failed:
            self._exit_for_update()

    async def run(self) -> None:
        await self._attached.wait()
        if self.releases.on_trial():
            # a new release proves itself first (and no other is staged meanwhile)
            await self._trial()
        loop = asyncio.get_running_loop()
        first = min(30.0, self.rc.poll_interval) * random.uniform(0.1, 1.0)
        next_poll = loop.time() + first
        while True:
            self._sample()
            wait = next_poll - loop.time() if self._https is not None else 5.0
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, min(wait, 5.0)))
            except TimeoutError:
                if self._https is None or loop.time() < next_poll:
                    continue
                next_poll = loop.time() + self.rc.poll_interval * random.uniform(0.8, 1.2)
                await self.check("https", self._https, str(self.rc.repository))
                continue
            await asyncio.sleep(0.5)  # the rest of a publish arrives together
            self._wake.clear()
            if "metadata/timestamp.json" in self.mirror:
                await self.check("mqtt", FilesFetcher(self.mirror, "MQTT mirror"), "mqtt://mirror/")
            elif self._https is not None:
                await self.check("https", self._https, str(self.rc.repository))

    async def upload(self, blob: bytes) -> dict[str, Any]:
        """An on-site bundle: verified like a download; returns once applied or refused."""
        try:
            files = bundle_files(blob)
        except ValueError as exc:
            self._set("refused", None, f"bundle: {exc}", "bundle")
            self.store.audit(version=None, source="bundle", outcome="refused", reason=str(exc))
            return self.public()
        started = asyncio.Event()
        task = asyncio.create_task(self.check("bundle", FilesFetcher(files, "bundle"),
                                              "bundle://local/", started=started))
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        return self.public()

    # ------------------------------------------------------------------ one attempt

    async def check(self, source: str, fetcher: Any, base_url: str, *,
                    started: asyncio.Event | None = None) -> None:
        async with self._lock:
            try:
                await self._attempt(source, fetcher, base_url, started)
            except Exception:  # a bug must not end remote configuration for good
                log.exception("remote config: check from %s failed", source)
            finally:
                if started is not None:
                    started.set()
            if source != "bundle" and self._https is not None and self.releases.enabled:
                try:
                    if await self.releases.check(self._https, str(self.rc.repository), self.store.dir,
                                                 self._baseline_before()):
                        self._publish_update()
                        self._exit_for_update()
                except Exception:
                    log.exception("update: release check failed")

    def _refuse(self, version: int | None, source: str, reason: str) -> None:
        if (self.st.state, self.st.version, self.st.reason) == ("refused", version, reason):
            return  # the same answer at every poll: said once (and not rewritten on flash)
        if version is not None and version not in self.st.rejected:
            self.st.rejected.append(version)
        self._set("refused", version, reason, source)
        self.store.audit(version=version, source=source, outcome="refused", reason=reason)

    async def _attempt(self, source: str, fetcher: Any, base_url: str,
                       started: asyncio.Event | None) -> None:
        try:
            offer = await asyncio.to_thread(
                client.check, fetcher=fetcher, base_url=base_url, state_dir=self.store.dir,
                trusted_root=Path(str(self.rc.root)), eui=self.eui,
                skip=lambda v: v in self.st.rejected or (self.st.running or 0) >= v)
        except client.Refused as exc:
            self._refuse(exc.version, source, str(exc))
            return
        if offer is None:
            return
        v = offer.version
        confirmed = self.st.running
        if confirmed is not None and v <= confirmed:
            if v < confirmed:
                self._refuse(v, source, f"version {v} is older than the confirmed version "
                             f"{confirmed} (a replay?)")
            return
        if v in self.st.rejected or offer.text is None:
            return  # rolled back or refused once: the operator publishes a new version
        signed = ",".join(offer.signed_by)
        try:
            new = gateway_config(offer.text, self.local, self.local_data, self.key_file,
                                 source=f"{offer.target} version {v}")
        except ConfigError as exc:
            self._refuse(v, source, "; ".join(exc.problems)[:400])
            return
        gw = self.gw
        if offer.text == self._running_text or new == gw.cfg:
            # same config under a new version number (a rollout's last wave): nothing to try
            self.store.write_candidate(offer.text)
            self.store.promote()
            self._confirmed(v, offer.text, source, signed, "unchanged config")
            return
        changes = plan(gw.cfg, new)
        self.store.write_candidate(offer.text)
        self._step("candidate-written")
        self._set("staged", v, None, source)
        self._step("staged")
        before = self._baseline_before()
        previous = gw.cfg
        self._set("confirming", v, f"applying: {changes.describe()}; confirm window "
                  f"{self.rc.confirm_window:g}s", source)
        self.store.audit(version=v, source=source, outcome="applying", signed_by=signed,
                         changes=changes.describe())
        self._step("confirming")
        if started is not None:
            started.set()
        try:
            await self._apply(new)
        except Exception as exc:  # a component that cannot start under the new config
            await self._roll_back(v, source, f"could not apply: {exc}", previous)
            return
        self._step("applied")
        problems = await self._watch(before)
        if problems:
            await self._roll_back(v, source, "; ".join(problems), previous)
            return
        self._step("window-passed")
        self.store.promote()
        self._step("promoted")
        self._confirmed(v, offer.text, source, signed, changes.describe())

    def _confirmed(self, v: int, text: str, source: str, signed: str, what: str) -> None:
        self.st.running = v
        self._running_text = text
        self._set("confirmed", v, None, source)
        self.store.audit(version=v, source=source, outcome="confirmed", signed_by=signed,
                         changes=what)

    async def _roll_back(self, v: int, source: str, why: str, previous: Config) -> None:
        self.st.rejected.append(v)
        reason = f"version {v} rolled back: {why}; back to {self._running_name()}"
        self._set("rolled-back", v, reason, source)  # a kill from here on boots the old one
        self.store.audit(version=v, source=source, outcome="rolled-back", reason=why)
        self.store.drop_candidate()
        try:
            await self._apply(previous)
        except Exception:
            log.exception("remote config: the previous config did not come back cleanly")

    # ------------------------------------------------------------------ applying

    async def _apply(self, new: Config) -> None:
        gw = self.gw
        changes = plan(gw.cfg, new)
        if changes.restart:
            # the caller's loop rebuilds every component from ``new`` and attaches again
            self._attached.clear()
            self.restart_with = new
            gw.supervisor.request_stop()
            await self._attached.wait()
            return
        for name in changes.removed:
            await gw.replace_forwarder(name, None)
        for name in (*changes.changed, *changes.added):
            await gw.replace_forwarder(name, changes.forwarders[name])
        if changes.web:
            await gw.replace_web(new.web)
        if changes.log:
            setup_logging(new.log.level, new.log.format)
        gw.adopt(new)
        self._hook_mqtt()

    # ------------------------------------------------------------------ the window

    def _sample(self) -> None:
        if self.gw is not None:
            self._samples.append((time.monotonic(), dict(self.gw.received_by_source)))

    def _baseline_before(self) -> tuple[frozenset[str], frozenset[str]]:
        gw = self.gw
        working = frozenset(n for n, loop in gw.deliveries.items() if loop.health()["connected"])
        now = dict(gw.received_by_source)
        horizon = time.monotonic() - self.rc.confirm_window
        earlier = next((c for t, c in self._samples if t >= horizon), None)
        if earlier is None and self._samples:
            earlier = self._samples[-1][1]
        receiving = frozenset(s for s, n in now.items()
                              if s != "parking" and earlier is not None and n > earlier.get(s, 0))
        return working, receiving

    async def _watch(self, before: tuple[frozenset[str], frozenset[str]]) -> list[str]:
        """Wait the confirm window; what no longer works under the new config (empty: fine)."""
        working, receiving = before
        start_counts = dict(self.gw.received_by_source)
        deadline = time.monotonic() + self.rc.confirm_window
        while (left := deadline - time.monotonic()) > 0:
            self._sample()
            await asyncio.sleep(min(1.0, left))
        gw = self.gw
        problems = []
        for name in sorted(working):
            loop = gw.deliveries.get(name)
            if loop is None:
                continue  # removed on purpose
            h = loop.health()
            if not h["connected"]:
                detail = h.get("last_error") or "its backend never answered"
                problems.append(f"forwarder {name} cannot deliver ({' '.join(str(detail).split())[:160]})")
        now = gw.received_by_source
        for src in sorted(receiving):
            if now.get(src, 0) <= start_counts.get(src, 0):
                problems.append(f"input {src} went silent")
        return problems


async def serve_with_remote(local_path: Path, local: Config,
                            run_gateway: Callable[[Config, RemoteConfig | None], Awaitable[bool]]
                            ) -> int | None:
    """Run gateways one after another: the first from the boot config, then each config a
    restart-needing change brings. ``run_gateway`` returns True when asked to stop for good.
    Returns the daemon's exit code when self-update needs the root step (else None)."""
    manager = RemoteConfig(local_path, local)
    cfg = manager.boot_config()
    task = asyncio.create_task(manager.run(), name="remote-config")
    try:
        while True:
            manager.restart_with = None
            stop = await run_gateway(cfg, manager)
            if stop or manager.restart_with is None:
                return manager.exit_code
            cfg = manager.restart_with
            log.warning("remote config: restarting all components for the new config")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

