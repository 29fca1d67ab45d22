"""The fleet repository on an MQTT broker: retained mirror, notifications, gateway states.

Topic layout (docs/INTERFACES.md, the remote-config contract):

- ``{prefix}/fleet/<path below the repository>``: the files of the last publish (every root,
  timestamp, the current snapshot and targets, the configs they name), retained, QoS 1,
  payload = the file's bytes. A gateway's MQTT fetcher serves ngclient's
  requests from these, so a city with only a broker needs no web server.
- ``{prefix}/fleet/notify`` and ``{prefix}/gateway/{eui}/command/config``: ``{"version": N}``,
  not retained: refresh now.
- ``{prefix}/gateway/{eui}/state/config``: each gateway's retained state (read here).

Uses the project's own MQTT client (gateway/forward/mqtt_wire.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from gateway.config_values import safe_url
from gateway.fleet import FleetError
from gateway.fleet.repo import EUI_RE, Repository
from gateway.forward.mqtt_wire import MqttConnection, MqttWireError
from gateway.forward.tls import client_tls_context
from gateway.remote.manager import MIRROR_BYTES, MIRROR_FILES  # the gateway's bounds

DEFAULT_PREFIX = "eu868"
#: Largest retained message read back (a targets.json of a big fleet, a 1 MiB config).
MAX_PAYLOAD = 16 << 20
#: Largest gateway state message taken (it is a small JSON object).
MAX_STATE = 16 << 10
STATES = ("none", "staged", "confirming", "confirmed", "rolled-back", "refused")
FAILED = ("rolled-back", "refused")


@dataclass(frozen=True, slots=True)
class Broker:
    """Where to connect, parsed from a ``[[forward.mqtt]] url``-style URL."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    url: str

    @property
    def shown(self) -> str:
        """The URL without its password (for messages and logs)."""
        return safe_url(self.url)


def parse_broker(url: str) -> Broker:
    """``mqtt://[user:password@]host[:port]`` or ``mqtts://...``; FleetError saying the forms."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        port, host, parts = None, None, None
    scheme = parts.scheme.lower() if parts else ""
    if parts is None or scheme not in ("mqtt", "tcp", "mqtts", "ssl", "tls") or not host:
        raise FleetError(f"--mqtt {safe_url(url)}: not a broker URL; use mqtt://[user:password@]host[:port] "
                         "or mqtts://[user:password@]host[:port]")
    tls = scheme in ("mqtts", "ssl", "tls")
    return Broker(host, port or (8883 if tls else 1883), tls,
                  unquote(parts.username) if parts.username is not None else None,
                  unquote(parts.password) if parts.password is not None else None, url)


def normalise_prefix(prefix: str) -> str:
    p = prefix.strip("/")
    if not p or any(c in p for c in "+#\0"):
        raise FleetError(f"--prefix {prefix!r}: not a topic prefix (the [[forward.mqtt]] "
                         "topic_prefix of the gateways, e.g. eu868)")
    return p


class FleetLink:
    """One operator session on the broker: every message seen is kept, newest per topic.

    Waiters (``watch``) are woken on each message; ``retained`` subscribes and returns what
    the broker holds once it has sent all of it (a sync message to ourselves marks the end:
    the broker queues the retained messages of a subscription before anything published later).
    """

    def __init__(self, broker: Broker, prefix: str) -> None:
        self.broker = broker
        self.prefix = prefix
        self.client_id = f"schwebe-fleet-{secrets.token_hex(6)}"
        self.messages: dict[str, bytes | None] = {}  # None: too large to keep, but it exists
        self._conn: MqttConnection | None = None
        self._changed = asyncio.Event()
        self._subscribed: set[str] = set()

    @classmethod
    async def open(cls, broker: Broker, prefix: str = DEFAULT_PREFIX, *, ca: Path | None = None,
                   timeout: float = 10.0) -> FleetLink:  # noqa: ASYNC109
        link = cls(broker, normalise_prefix(prefix))
        ctx: ssl.SSLContext | None = None
        if broker.tls:
            try:
                ctx = client_tls_context("--mqtt", ca_file=ca, cert_file=None, key_file=None)
            except ValueError as exc:
                raise FleetError(f"--ca: {exc}") from None
        try:
            link._conn = await MqttConnection.open(
                broker.host, broker.port, client_id=link.client_id, keepalive=30,
                username=broker.username, password=broker.password, ssl_context=ctx,
                timeout=timeout, max_payload=MAX_PAYLOAD, on_message=link._on_message,
                on_oversize=link._on_oversize, on_lost=link._on_lost)
        except MqttWireError as exc:
            raise link._error(exc) from None
        return link

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def __aenter__(self) -> FleetLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def conn(self) -> MqttConnection:
        assert self._conn is not None
        return self._conn

    def _on_message(self, topic: str, payload: bytes) -> None:
        self.messages[topic] = payload
        self._changed.set()

    def _on_lost(self, err: MqttWireError) -> None:
        self._changed.set()  # wake watchers: they raise the connection's error

    def _on_oversize(self, topic: str, size: int) -> None:
        self.messages[topic] = None
        self._changed.set()

    def _error(self, exc: BaseException) -> FleetError:
        if isinstance(exc, TimeoutError):
            return FleetError(f"MQTT broker {self.broker.shown}: no answer in time")
        # the client's own messages start with host:port, which the URL already says
        why = str(exc).removeprefix(f"{self.broker.host}:{self.broker.port}: ")
        why = why.replace("check ca_file", "check --ca")  # the hint is worded for the config file
        return FleetError(f"MQTT broker {self.broker.shown}: {why}")

    # ---- reading ---------------------------------------------------------------------------
    async def subscribe(self, *filters: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                for f in filters:
                    if f not in self._subscribed:
                        await self.conn.subscribe(f, qos=1)
                        self._subscribed.add(f)
        except (MqttWireError, TimeoutError) as exc:
            raise self._error(exc) from None

    async def sync(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Return once every message the broker queued for us before now has arrived."""
        topic = f"{self.prefix}/fleet/sync/{self.client_id}"
        await self.subscribe(topic, timeout=timeout)
        nonce = secrets.token_hex(8).encode()
        try:
            async with asyncio.timeout(timeout):
                await self.conn.publish(topic, nonce)
                while self.messages.get(topic) != nonce:
                    self._changed.clear()
                    if self.conn.error is not None:
                        raise self.conn.error
                    await self._changed.wait()
        except (MqttWireError, TimeoutError) as exc:
            raise self._error(exc) from None

    async def retained(self, *filters: str) -> dict[str, bytes | None]:
        """Topic -> payload of every retained message under ``filters`` (empty ones left out)."""
        await self.subscribe(*filters)
        await self.sync()
        return {t: p for t, p in self.messages.items()
                if p != b"" and any(_matches(f, t) for f in filters)}

    async def watch(self, done: Callable[[], bool], timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until ``done()`` holds (checked after each message); False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    self._changed.clear()
                    if self.conn.error is not None:
                        raise self._error(self.conn.error)
                    await self._changed.wait()
        except TimeoutError:
            return done()
        return True

    # ---- writing ---------------------------------------------------------------------------
    async def publish(self, messages: Iterable[tuple[str, bytes, bool]], timeout: float = 60.0) -> None:  # noqa: ASYNC109
        batch = list(messages)
        try:
            async with asyncio.timeout(timeout):
                await self.conn.publish_many(batch)
        except (MqttWireError, TimeoutError) as exc:
            raise self._error(exc) from None


def _matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    p, t = pattern.split("/"), topic.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(p) == len(t)


# ---- the retained mirror -----------------------------------------------------------------------
def mirror_files(repo: Repository) -> dict[str, bytes]:
    """Path below the repository -> bytes, for the files of the last publish a gateway needs.

    Only those: a gateway keeps the mirror in memory (a bounded number of files), and a
    cron ``fleet publish`` adds a snapshot and a targets file each time.
    """
    out: dict[str, bytes] = {}
    for rel, name in repo.published_files().items():
        if name is not None and name.startswith("releases/"):
            continue  # packages (tens of MB) come over HTTPS only; the metadata naming them is here
        try:
            out[rel] = (repo.path / rel).read_bytes()
        except OSError as exc:
            raise FleetError(f"{repo.path / rel}: cannot read: {exc.strerror}") from None
    return out


@dataclass(frozen=True, slots=True)
class MirrorResult:
    published: int
    unchanged: int
    cleared: int
    warning: str | None = None


def mirror_warning(files: Mapping[str, bytes]) -> str | None:
    """Why gateways could not hold this mirror (their in-memory copy is bounded), or None."""
    size = sum(map(len, files.values()))
    if len(files) <= MIRROR_FILES and size <= MIRROR_BYTES:
        return None
    return (f"the mirror holds {len(files)} files, {size} bytes; a gateway keeps at most "
            f"{MIRROR_FILES} files, {MIRROR_BYTES} bytes of it and ignores the rest, so updates "
            "over MQTT may stall: give gateways [remote_config] repository (HTTPS), or use fewer "
            "per-gateway configs (smaller rollout waves)")


def _publish_order(rel: str) -> int:
    """Targets first, timestamp (which points at the rest) last: a gateway reading meanwhile
    finds every file that the metadata it sees names."""
    if rel.startswith("targets/"):
        return 0
    if rel == "metadata/timestamp.json":
        return 3
    if rel == "metadata/root.json":
        return 2
    return 1


async def mirror(link: FleetLink, repo: Repository) -> MirrorResult:
    """Make the broker's retained ``{prefix}/fleet/...`` hold the last publish (mirror_files).

    Files whose retained copy already has the same bytes are not sent again; every other
    retained message there (a removed config, superseded metadata) is cleared (empty payload)
    once the new files are in.
    """
    base = f"{link.prefix}/fleet"
    have = await link.retained(f"{base}/metadata/#", f"{base}/targets/#")
    files = mirror_files(repo)
    want = {f"{base}/{rel}": data for rel, data in files.items()}
    changed = sorted((rel for rel in files if have.get(f"{base}/{rel}") != files[rel]),
                     key=lambda r: (_publish_order(r), r))
    for stage in (0, 1, 2, 3):
        batch = [(f"{base}/{r}", files[r], True) for r in changed if _publish_order(r) == stage]
        if batch:
            await link.publish(batch)
    stale = sorted(t for t in have if t not in want)
    if stale:
        await link.publish((t, b"", True) for t in stale)
    return MirrorResult(len(changed), len(files) - len(changed), len(stale), mirror_warning(files))


async def notify(link: FleetLink, version: int, euis: Iterable[str], *, broadcast: bool) -> None:
    """Tell gateways to refresh now (not retained: a gateway offline polls or hears the next one)."""
    body = json.dumps({"version": version}).encode()
    msgs = [(f"{link.prefix}/gateway/{eui}/command/config", body, False) for eui in euis]
    if broadcast:
        msgs.append((f"{link.prefix}/fleet/notify", body, False))
    if msgs:
        await link.publish(msgs)


# ---- gateway states ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GatewayState:
    """One gateway's retained ``state/config`` message."""

    eui: str
    version: int | None
    state: str
    reason: str | None
    source: str | None
    at: str | None
    last_confirmed: int | None = None  # what runs after a rollback (the gateway reports it)

    def as_dict(self) -> dict[str, Any]:
        return {"eui": self.eui, "version": self.version, "state": self.state,
                "reason": self.reason, "source": self.source, "at": self.at,
                "last_confirmed": self.last_confirmed}


def state_filter(prefix: str) -> str:
    return f"{prefix}/gateway/+/state/config"


def parse_state(topic: str, payload: bytes | None) -> GatewayState | None:
    """The state a message says, None for a cleared one or a topic without an EUI level.

    A malformed message still gives a row (state ``unreadable``): a gateway that reports
    nonsense is something the operator must see, not a gateway that vanished.
    """
    levels = topic.split("/")
    if len(levels) < 4 or not EUI_RE.fullmatch(levels[-3]):
        return None
    eui = levels[-3]

    def bad(why: str) -> GatewayState:
        return GatewayState(eui, None, "unreadable", f"state message {why}", None, None)

    if payload is None or len(payload) > MAX_STATE:
        return bad(f"larger than {MAX_STATE} bytes")
    if payload == b"":
        return None
    try:
        obj = json.loads(payload)
    except ValueError:
        return bad("is not JSON")
    if not isinstance(obj, dict):
        return bad("is not a JSON object")
    version, state = obj.get("version"), obj.get("state")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        return bad(f"has version {version!r}, not a number")
    if state not in STATES:
        return bad(f"has state {state!r}, not one of {', '.join(STATES)}")

    def text(key: str) -> str | None:
        v = obj.get(key)
        return None if v is None else str(v)[:500]

    last = obj.get("last_confirmed")
    last = last if isinstance(last, int) and not isinstance(last, bool) else None
    return GatewayState(eui, version, str(state), text("reason"), text("source"), text("at"), last)


def gateway_states(messages: Mapping[str, bytes | None], prefix: str) -> dict[str, GatewayState]:
    """EUI -> state from the messages seen under ``{prefix}/gateway/+/state/config``."""
    pattern = state_filter(prefix)
    out: dict[str, GatewayState] = {}
    for topic, payload in messages.items():
        if _matches(pattern, topic):
            st = parse_state(topic, payload)
            if st is not None:
                out[st.eui] = st
            else:
                out.pop(topic.split("/")[-3], None)
    return dict(sorted(out.items()))


async def read_states(link: FleetLink) -> dict[str, GatewayState]:
    await link.retained(state_filter(link.prefix))
    return gateway_states(link.messages, link.prefix)


def settled(st: GatewayState, version: int) -> bool:
    """Whether a gateway has finished with ``version`` (confirmed it, a later one, or failed it)."""
    if st.version is None:
        return False
    if st.state == "confirmed":
        return st.version >= version
    return st.state in FAILED and st.version >= version
