"""Configuration: TOML into frozen dataclasses, strictly.

Operators sign and push one file to hundreds of gateways, so a typo must never
silently disable a feature: unknown keys, wrong types and bad values are errors
that name the key path and the offending value. Nothing here touches sockets.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal
from urllib.parse import urlsplit

from gateway.config_values import is_valid_host as is_valid_host
from gateway.config_values import parse_devaddr as parse_devaddr
from gateway.config_values import parse_duration as parse_duration
from gateway.config_values import parse_eui as parse_eui
from gateway.config_values import parse_hostport as parse_hostport
from gateway.config_values import parse_ip as parse_ip
from gateway.config_values import parse_key as parse_key
from gateway.config_values import parse_net_id as parse_net_id
from gateway.config_values import parse_prefix as parse_prefix
from gateway.config_values import parse_size as parse_size
from gateway.config_values import safe_url

# --------------------------------------------------------------------------- value types


class ConfigError(ValueError):
    """A configuration problem, with every problem found listed in `problems`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


# Field markers: a converter applied to the raw TOML value.
def _conv(fn: Any, **kw: Any) -> dict[str, Any]:
    return {"conv": fn, **kw}


def _secret_field(default: Any = None, **meta: Any) -> Any:
    """A field whose value never appears in repr(), logs or the status page."""
    return field(default=default, repr=False, metadata={"secret": True, **meta})


# --------------------------------------------------------------------------- the shape


@dataclass(frozen=True, slots=True)
class GatewaySection:
    eui: int = field(metadata=_conv(parse_eui))
    data_dir: Path = Path("/var/lib/schwebe")


@dataclass(frozen=True, slots=True)
class GwmpSource:
    bind: tuple[str, int] = field(default=("127.0.0.1", 1700), metadata=_conv(parse_hostport))
    allowed_euis: tuple[int, ...] = field(default=(), metadata=_conv(parse_eui, each=True))
    allowed_hosts: tuple[str, ...] = field(default=(), metadata=_conv(parse_ip, each=True))
    # Dense traffic (200 datagrams a second and more) is read on this tick instead of datagram
    # by datagram: fewer, warmer wake-ups for at most this much delay. "0s": never.
    read_tick: float = field(default=0.02, metadata=_conv(parse_duration, zero_ok=True))


@dataclass(frozen=True, slots=True)
class ConcentratordSource:
    event_url: str = "ipc:///tmp/concentratord_event"
    command_url: str = "ipc:///tmp/concentratord_command"


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    unit: int
    spot_id: str
    register: int = 0
    function: Literal["holding", "input"] = "holding"
    occupied_values: tuple[int, ...] = (1,)


@dataclass(frozen=True, slots=True)
class ModbusSource:
    port: str
    baudrate: int = 9600
    poll_interval: float = field(default=1.0, metadata=_conv(parse_duration))
    timeout: float = field(default=0.5, metadata=_conv(parse_duration))
    retries: int = 2
    unknown_after: float = field(default=60.0, metadata=_conv(parse_duration))
    devices: tuple[ModbusDevice, ...] = ()


@dataclass(frozen=True, slots=True)
class GnssSource:
    port: str
    baudrate: int = 9600


@dataclass(frozen=True, slots=True)
class SimulatorSource:
    """The demo's stand-in for lora_pkt_fwd: sends to the first gwmp source."""

    sensors: int = 20
    rate: float = 20.0
    seed: int = 1
    wired_spots: int = 0  # simulated RS-485 detectors on a pseudo-terminal
    gnss: bool = False  # a simulated NMEA receiver on a pseudo-terminal
    # A stand-in network server listening here (demo): it answers the OTAA sensors' joins, so
    # they join through the gateway's downlink path; without it they are accepted locally.
    network_server: tuple[str, int] | None = field(default=None, metadata=_conv(parse_hostport))


@dataclass(frozen=True, slots=True)
class Sources:
    gwmp: tuple[GwmpSource, ...] = ()
    concentratord: tuple[ConcentratordSource, ...] = ()
    modbus: tuple[ModbusSource, ...] = ()
    gnss: GnssSource | None = None
    simulator: SimulatorSource | None = None


@dataclass(frozen=True, slots=True)
class MaxAge:
    uplink: float = field(default=7 * 86400.0, metadata=_conv(parse_duration))
    stats: float = field(default=86400.0, metadata=_conv(parse_duration))
    parking: float = field(default=30 * 86400.0, metadata=_conv(parse_duration))
    event: float = field(default=30 * 86400.0, metadata=_conv(parse_duration))


@dataclass(frozen=True, slots=True)
class BufferSection:
    max_bytes: int = field(default=256 * 2**20, metadata=_conv(parse_size))
    commit_interval: float = field(default=1.0, metadata=_conv(parse_duration))
    min_free: int = field(default=64 * 2**20, metadata=_conv(parse_size, zero_ok=True))
    memory_reserve: int = field(default=8 * 2**20, metadata=_conv(parse_size))
    synchronous: Literal["normal", "full"] = "normal"
    max_age: MaxAge = MaxAge()


@dataclass(frozen=True, slots=True)
class ForwardCommon:
    """Keys every forwarder has (filters, batch bounds)."""

    name: str
    kinds: tuple[str, ...] = ()  # empty: the forwarder's natural kinds
    dev_addr_prefixes: tuple[tuple[int, int], ...] = field(
        default=(), metadata=_conv(parse_prefix, each=True)
    )
    net_ids: tuple[int, ...] = field(default=(), metadata=_conv(parse_net_id, each=True))
    max_batch: int = 500
    start: Literal["newest", "oldest"] = "newest"
    # live_first: after an outage, new records go out beside the backlog (a network server
    # needs a fresh uplink within a second); strict: everything in sequence order
    order: Literal["live_first", "strict"] = "live_first"


@dataclass(frozen=True, slots=True)
class GwmpForward(ForwardCommon):
    server: tuple[str, int] = field(default=("", 0), metadata=_conv(parse_hostport))
    gateway_eui: int | None = field(default=None, metadata=_conv(parse_eui))
    # local packet forwarder's gateway EUI -> the EUI this server knows it by; unmapped gateways
    # go out as `gateway_eui` if set, else under their own EUI
    eui_map: dict[int, int] = field(default_factory=dict, metadata=_conv(parse_eui, each=True, key_conv=parse_eui))
    max_replay_age: float = field(default=300.0, metadata=_conv(parse_duration, zero_ok=True))
    keepalive: float = field(default=10.0, metadata=_conv(parse_duration))

    #: Server-side gateway EUIs (one UDP socket each) per server; more go out as the fallback EUI.
    MAX_GATEWAYS: ClassVar[int] = 64


@dataclass(frozen=True, slots=True)
class StationForward(ForwardCommon):
    """A network server over the LoRa Basics Station LNS protocol (websocket, TLS)."""

    uri: str = ""  # the tc.uri: wss://host:port (discovery at {uri}/router-info)
    trust: Path | None = None  # tc.trust: the server's CA (PEM); required for wss://
    crt: Path | None = None  # tc.crt: client certificate (PEM), with key
    key: Path | None = None  # tc.key: client key, or token header lines when crt is absent
    # router id when no eui_map entry names a local gateway (default: that gateway's own EUI)
    gateway_eui: int | None = field(default=None, metadata=_conv(parse_eui))
    # local packet forwarder's gateway EUI -> the router id (EUI) this server knows it by
    eui_map: dict[int, int] = field(default_factory=dict, metadata=_conv(parse_eui, each=True, key_conv=parse_eui))
    max_replay_age: float = field(default=300.0, metadata=_conv(parse_duration, zero_ok=True))
    # how long the server may take to answer (router-info, router_config, a ping after a batch)
    timeout: float = field(default=10.0, metadata=_conv(parse_duration))
    # a websocket ping while idle: a server gone without a word shows as disconnected
    keepalive: float = field(default=30.0, metadata=_conv(parse_duration))

    #: Routers (one websocket each) per server; more go out under the fallback router id.
    MAX_GATEWAYS: ClassVar[int] = 64


@dataclass(frozen=True, slots=True)
class MqttForward(ForwardCommon):
    url: str = ""
    topic_prefix: str = "eu868"
    username: str | None = None
    password: str | None = _secret_field()
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str | None = None
    keepalive: float = field(default=30.0, metadata=_conv(parse_duration))


@dataclass(frozen=True, slots=True)
class HttpForward(ForwardCommon):
    url: str = ""
    format: Literal["json", "cbor"] = "json"
    token: str | None = _secret_field()
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    timeout: float = field(default=10.0, metadata=_conv(parse_duration))
    # put-aside (permanently rejected) records go to <data_dir>/http-<name>.rejected.jsonl,
    # up to this size; "0B" keeps none (they are only counted)
    dead_letter_max: int = field(default=16 * 2**20, metadata=_conv(parse_size))


@dataclass(frozen=True, slots=True)
class NgsiLdForward(ForwardCommon):
    url: str = ""
    api: Literal["ngsi-ld", "ngsi-v2"] = "ngsi-ld"
    context: str = "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld"
    service: str | None = None
    service_path: str | None = None
    token: str | None = _secret_field()
    timeout: float = field(default=10.0, metadata=_conv(parse_duration))


@dataclass(frozen=True, slots=True)
class FileForward(ForwardCommon):
    """A local JSON Lines sink (the demo's backend, or a USB stick)."""

    path: Path = Path("forwarded.jsonl")


@dataclass(frozen=True, slots=True)
class Forward:
    gwmp: tuple[GwmpForward, ...] = ()
    station: tuple[StationForward, ...] = ()
    mqtt: tuple[MqttForward, ...] = ()
    http: tuple[HttpForward, ...] = ()
    ngsi_ld: tuple[NgsiLdForward, ...] = ()
    file: tuple[FileForward, ...] = ()


@dataclass(frozen=True, slots=True)
class WebUser:
    """One login for the page: a technician works on site, an operator may also change config."""

    name: str
    role: Literal["technician", "operator"]
    # scrypt hash made by `schwebe web hash-password`; never a plain password
    password_hash: str = _secret_field(default=dataclasses.MISSING)


@dataclass(frozen=True, slots=True)
class WebSection:
    bind: tuple[str, int] = field(default=("0.0.0.0", 8080), metadata=_conv(parse_hostport))
    # the single login of older configs: an operator named `username`
    username: str | None = None
    # scrypt hash made by `schwebe web hash-password`; never a plain password
    password_hash: str | None = _secret_field()
    users: tuple[WebUser, ...] = ()
    # a page session ends after this long without a request
    session_idle: float = field(default=900.0, metadata=_conv(parse_duration))
    metrics_token: str | None = _secret_field()
    open_read_only: bool = False  # demo: read-only endpoints without a login
    # HTTPS with the gateway's own certificate (made on first start; `schwebe web cert`)
    tls: bool = False

    def logins(self) -> tuple[WebUser, ...]:
        """Every configured login; `[web] username/password_hash` is one operator."""
        legacy: tuple[WebUser, ...] = ()
        if self.username and self.password_hash:
            legacy = (WebUser(self.username, "operator", self.password_hash),)
        return legacy + self.users


@dataclass(frozen=True, slots=True)
class ParkingDevice:
    dev_eui: int = field(metadata=_conv(parse_eui))
    model: str
    spot_id: str
    dev_addr: int | None = field(default=None, metadata=_conv(parse_devaddr))
    nwk_s_key: bytes | None = _secret_field(conv=parse_key)
    app_s_key: bytes | None = _secret_field(conv=parse_key)
    app_key: bytes | None = _secret_field(conv=parse_key)
    category: Literal["onStreet", "offStreet"] = "onStreet"
    # FIWARE ParkingSpot `location` (GeoJSON Point, WGS 84) and `refParkingSite` (the
    # OnStreetParking/OffStreetParking entity id); both required by the model for a new entity
    location: tuple[float, ...] | None = None  # [longitude, latitude]
    parking_site: str | None = None


@dataclass(frozen=True, slots=True)
class ParkingSection:
    heartbeat_timeout: float = field(default=2 * 3600.0, metadata=_conv(parse_duration))
    record_heartbeats: bool = False
    # Spots an operator closed (roadworks, an event): reported as "closed" whatever their
    # sensor says, until taken off the list.
    closed_spots: tuple[str, ...] = ()
    devices: tuple[ParkingDevice, ...] = ()


@dataclass(frozen=True, slots=True)
class RemoteConfigSection:
    """Where signed configs come from (TUF); set on site only, a pushed config cannot change it."""

    root: Path | None = None  # the trusted TUF root.json (from `schwebe fleet init`)
    repository: str | None = None  # https://.../ with metadata/ and targets/ below it
    mqtt: str | None = None  # a [[forward.mqtt]] name whose broker carries notifications
    ca: Path | None = None  # PEM trust anchor for a repository with a private CA
    poll_interval: float = field(default=300.0, metadata=_conv(parse_duration))
    confirm_window: float = field(default=300.0, metadata=_conv(parse_duration))
    # Releases (`schwebe fleet release`) from the same repository, installed beside the
    # running one in install_dir/releases/ by the root step `schwebe update apply`.
    self_update: bool = True
    install_dir: Path = Path("/opt/schwebe")


@dataclass(frozen=True, slots=True)
class LogSection:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "text", "json"] = "auto"


@dataclass(frozen=True, slots=True)
class Config:
    gateway: GatewaySection
    sources: Sources = Sources()
    buffer: BufferSection = BufferSection()
    forward: Forward = Forward()
    web: WebSection = WebSection()
    parking: ParkingSection = ParkingSection()
    remote_config: RemoteConfigSection = RemoteConfigSection()
    log: LogSection = LogSection()

    @property
    def forwarders(self) -> list[ForwardCommon]:
        f = self.forward
        return [*f.gwmp, *f.station, *f.mqtt, *f.http, *f.ngsi_ld, *f.file]


# --------------------------------------------------------------------------- the loader

_MISSING = object()
#: Marks a value sealed to one gateway's key (libsodium sealed box, gateway/remote/sealed.py).
SEALED_PREFIX = "enc:v1:"


#: Longest problem message shown (characters); longer ones are cut.
MAX_PROBLEM: Final = 300


class _Builder:
    """Walks the TOML tree against the dataclasses, collecting every problem."""

    def __init__(self, *, sealed_ok: bool = False) -> None:
        self.problems: list[str] = []
        self.sealed_ok = sealed_ok

    def fail(self, path: str, msg: str) -> None:
        # A problem is one readable line: a value pasted by mistake (megabytes) is cut.
        if len(msg) > MAX_PROBLEM:
            msg = f"{msg[:MAX_PROBLEM]}... ({len(msg)} characters, cut)"
        self.problems.append(f"{path}: {msg}")

    def build(self, cls: type[Any], data: Any, path: str) -> Any:
        if not isinstance(data, Mapping):
            self.fail(path or "<top>", f"expected a table, got {_tname(data)}")
            return _MISSING
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                known = ", ".join(sorted(fields))
                self.fail(_join(path, key), f"unknown key (known keys here: {known})")
        kwargs: dict[str, Any] = {}
        ok = True
        for name, f in fields.items():
            p = _join(path, name)
            if name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    self.fail(p, "required key is missing")
                    ok = False
                continue
            value = self.value(hints[name], data[name], p, f.metadata)
            if value is _MISSING:
                ok = False
            else:
                kwargs[name] = value
        return cls(**kwargs) if ok else _MISSING

    def value(self, tp: Any, raw: Any, path: str, meta: Mapping[str, Any]) -> Any:
        conv = meta.get("conv")
        secret = meta.get("secret", False)
        if secret and self.sealed_ok and isinstance(raw, str) and raw.startswith(SEALED_PREFIX):
            # Sealed to one gateway's key (gateway/remote/sealed.py): only that gateway can
            # check the clear value, so an operator validates everything around it.
            return raw
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            return self.value(inner[0], raw, path, meta)
        if conv is not None and not meta.get("each"):
            if not isinstance(raw, str):
                self.fail(path, f"expected a string, got {_tname(raw)}")
                return _MISSING
            try:
                out = conv(raw)
            except ValueError as exc:
                self.fail(path, str(exc))  # converters of secrets never echo the value
                return _MISSING
            if conv in (parse_duration, parse_size) and out <= 0 and not meta.get("zero_ok"):
                self.fail(path, f"{raw!r} must be more than zero")
                return _MISSING
            return out
        if origin is dict:
            if not isinstance(raw, Mapping):
                self.fail(path, f"expected a table, got {_show(raw, secret)}")
                return _MISSING
            key_conv = meta.get("key_conv")
            table: dict[Any, Any] = {}
            seen: dict[Any, str] = {}
            for k, item in raw.items():
                p = _join(path, k)
                try:
                    key = key_conv(k) if key_conv is not None else k
                except ValueError as exc:
                    self.fail(p, str(exc))
                    continue
                if key in seen:
                    self.fail(p, f"{k!r} is the same key as {seen[key]!r}")
                    continue
                seen[key] = k
                v = self.value(args[1], item, p, {**meta, "each": False})
                if v is not _MISSING:
                    table[key] = v
            return table
        if origin is tuple:
            if not isinstance(raw, list):
                self.fail(path, f"expected an array, got {_show(raw, secret)}")
                return _MISSING
            item_tp = args[0]
            out = []
            for i, item in enumerate(raw):
                v = self.value(item_tp, item, f"{path}[{i}]", {**meta, "each": False})
                if v is not _MISSING:
                    out.append(v)
            return tuple(out)
        if origin is Literal:
            if raw not in args:
                choices = ", ".join(repr(a) for a in args)
                shown = "the value" if secret else repr(raw)
                self.fail(path, f"{shown} is not one of {choices}")
                return _MISSING
            return raw
        if dataclasses.is_dataclass(tp):
            return self.build(typing.cast(type, tp), raw, path)
        if tp is Path:
            if not isinstance(raw, str) or not raw:
                self.fail(path, f"expected a path string, got {_show(raw, secret)}")
                return _MISSING
            return Path(raw)
        if tp is bool:
            if not isinstance(raw, bool):
                self.fail(path, f"expected true or false, got {_show(raw, secret)}")
                return _MISSING
            return raw
        if tp is int:
            if isinstance(raw, bool) or not isinstance(raw, int):
                self.fail(path, f"expected an integer, got {_show(raw, secret)}")
                return _MISSING
            return raw
        if tp is float:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                self.fail(path, f"expected a number, got {_show(raw, secret)}")
                return _MISSING
            return float(raw)
        if tp is str:
            if not isinstance(raw, str):
                self.fail(path, f"expected a string, got {_show(raw, secret)}")
                return _MISSING
            return raw
        raise TypeError(f"config schema bug: no rule for {tp!r} at {path}")


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _tname(v: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _show(v: Any, secret: bool) -> str:
    return _tname(v) if secret else f"{v!r} ({_tname(v)})"


def _check(cfg: Config, b: _Builder) -> None:
    """Cross-field rules that the types alone cannot say."""
    names: dict[str, str] = {}
    for kind in ("gwmp", "station", "mqtt", "http", "ngsi_ld", "file"):
        for i, fw in enumerate(getattr(cfg.forward, kind)):
            p = f"forward.{kind}[{i}]"
            if not fw.name or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", fw.name):
                b.fail(f"{p}.name", f"{fw.name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
            elif fw.name in names:
                b.fail(f"{p}.name", f"{fw.name!r} is already used by {names[fw.name]}")
            else:
                names[fw.name] = p
            for j, k in enumerate(fw.kinds):
                if k not in ("uplink", "parking", "stats", "event"):
                    b.fail(f"{p}.kinds[{j}]", f"{k!r} is not one of uplink, parking, stats, event")
            if fw.max_batch < 1 or fw.max_batch > 10000:
                b.fail(f"{p}.max_batch", f"{fw.max_batch} out of range 1..10000")
        for i, fw in enumerate(getattr(cfg.forward, kind)):
            url = getattr(fw, "url", None)
            if url is not None:
                schemes = {"mqtt": ("mqtt://", "mqtts://"), "http": ("http://", "https://"),
                           "ngsi_ld": ("http://", "https://")}[kind]
                if not url.startswith(schemes):
                    b.fail(f"forward.{kind}[{i}].url",
                           f"{safe_url(url)!r} must start with {' or '.join(schemes)}")
                else:
                    _check_url_host(b, f"forward.{kind}[{i}].url", url)
                if "@" in url.partition("://")[2].partition("/")[0] and getattr(fw, "token", None):
                    b.fail(f"forward.{kind}[{i}].url", "credentials in the URL and a token: the "
                           "two would contradict each other at every request; give one of them")
    for i, st in enumerate(cfg.forward.station):
        _check_station(b, f"forward.station[{i}]", st)
    for i, fwd in enumerate(cfg.forward.gwmp):
        if not fwd.server[0] or not fwd.server[1]:
            b.fail(f"forward.gwmp[{i}].server", "required key is missing (e.g. \"lns.example.org:1700\")")
        targets: dict[int, int] = {}
        for local, server_eui in fwd.eui_map.items():
            p = f"forward.gwmp[{i}].eui_map.{local:016x}"
            if server_eui in targets:
                b.fail(p, f"\"{server_eui:016x}\" is already the server EUI of {targets[server_eui]:016x}; "
                       "the server could not tell the two gateways apart")
            elif server_eui == fwd.gateway_eui:
                b.fail(p, f"\"{server_eui:016x}\" is this server's gateway_eui, which every unmapped "
                       "gateway goes out as; map each gateway to an EUI of its own")
            targets.setdefault(server_eui, local)
        if len(fwd.eui_map) > GwmpForward.MAX_GATEWAYS:
            b.fail(f"forward.gwmp[{i}].eui_map", f"{len(fwd.eui_map)} gateways, at most "
                   f"{GwmpForward.MAX_GATEWAYS} per server (one UDP socket each)")
    if cfg.web.password_hash is not None and not cfg.web.password_hash.startswith(SEALED_PREFIX):
        why = _weak_password_hash(cfg.web.password_hash)
        if why:  # never echo the value: it may be the password itself
            b.fail("web.password_hash", f"{why}; make one with: schwebe web hash-password")
    seen_users = {cfg.web.username} if cfg.web.username else set()
    for i, user in enumerate(cfg.web.users):
        p = f"web.users[{i}]"
        if not user.name or len(user.name) > 64 or not user.name.isprintable():
            b.fail(f"{p}.name", "a login name of 1 to 64 printable characters")
        elif user.name in seen_users:
            b.fail(f"{p}.name", f"{user.name!r} is already a login (names must differ)")
        seen_users.add(user.name)
        why = _weak_password_hash(user.password_hash)
        if why:
            b.fail(f"{p}.password_hash", f"{why}; make one with: schwebe web hash-password")
    spots: dict[str, str] = {}
    for i, dev in enumerate(cfg.parking.devices):
        p = f"parking.devices[{i}]"
        abp = (dev.dev_addr, dev.nwk_s_key, dev.app_s_key)
        if any(x is not None for x in abp) and not all(x is not None for x in abp):
            b.fail(p, "ABP needs all of dev_addr, nwk_s_key and app_s_key")
        if dev.location is not None and (len(dev.location) != 2 or not -180 <= dev.location[0] <= 180
                                         or not -90 <= dev.location[1] <= 90):
            b.fail(f"{p}.location", f"{list(dev.location)} is not [longitude, latitude] "
                   "(-180..180, -90..90), e.g. [7.1507, 51.2562]")
        if dev.parking_site is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"'=;()]+",
                                                             dev.parking_site):
            b.fail(f"{p}.parking_site", f"{dev.parking_site!r} is not an entity id URI "
                   "(e.g. \"urn:ngsi-ld:OnStreetParking:wuppertal:friedrich-ebert-str\")")
        if dev.spot_id in spots:
            b.fail(f"{p}.spot_id", f"{dev.spot_id!r} is already used by {spots[dev.spot_id]}")
        spots[dev.spot_id] = p
    for i, gsrc in enumerate(cfg.sources.gwmp):
        if not 0 <= gsrc.read_tick <= 0.1:
            # lora_pkt_fwd waits 100 ms for a PUSH_ACK before it counts the datagram lost
            b.fail(f"sources.gwmp[{i}].read_tick", f"{gsrc.read_tick * 1000:g} ms out of range 0..100 ms "
                   "(\"0s\" reads every datagram as it comes)")
    for i, src in enumerate(cfg.sources.modbus):
        _check_baudrate(b, f"sources.modbus[{i}].baudrate", src.baudrate)
        if not 0 <= src.retries <= 10:
            b.fail(f"sources.modbus[{i}].retries", f"{src.retries} out of range 0..10")
        for j, d in enumerate(src.devices):
            dp = f"sources.modbus[{i}].devices[{j}]"
            if not 0 <= d.register <= 0xFFFF:
                b.fail(f"{dp}.register", f"{d.register} out of range 0..65535")
            for k, v in enumerate(d.occupied_values):
                if not 0 <= v <= 0xFFFF:
                    b.fail(f"{dp}.occupied_values[{k}]", f"{v} out of range 0..65535")
            if not 1 <= d.unit <= 247:
                b.fail(f"sources.modbus[{i}].devices[{j}].unit", f"{d.unit} out of range 1..247")
            if d.spot_id in spots:
                b.fail(f"sources.modbus[{i}].devices[{j}].spot_id",
                       f"{d.spot_id!r} is already used by {spots[d.spot_id]}")
            spots[d.spot_id] = f"sources.modbus[{i}].devices[{j}]"
    if cfg.sources.gnss is not None:
        _check_baudrate(b, "sources.gnss.baudrate", cfg.sources.gnss.baudrate)
    for i, conc in enumerate(cfg.sources.concentratord):
        for key in ("event_url", "command_url"):
            _check_zmq_url(b, f"sources.concentratord[{i}].{key}", getattr(conc, key))
    sim = cfg.sources.simulator
    if sim is not None:
        if not cfg.sources.gwmp:
            b.fail("sources.simulator", "needs a [[sources.gwmp]] to send to")
        if not 0 <= sim.sensors <= 100_000:
            b.fail("sources.simulator.sensors", f"{sim.sensors} out of range 0..100000")
        if not 0 < sim.rate <= 1_000_000:
            b.fail("sources.simulator.rate", f"{sim.rate:g} must be more than zero (frames/s)")
        if not 0 <= sim.wired_spots <= 247:
            b.fail("sources.simulator.wired_spots", f"{sim.wired_spots} out of range 0..247")
    for i, mqtt in enumerate(cfg.forward.mqtt):
        if mqtt.keepalive > 65535:
            b.fail(f"forward.mqtt[{i}].keepalive",
                   f"{mqtt.keepalive:g} s is over MQTT's limit of 65535 s")
    if cfg.web.open_read_only and cfg.web.bind[0] not in ("127.0.0.1", "::1", "localhost"):
        b.fail("web.open_read_only", f"only allowed with a loopback bind, not {cfg.web.bind[0]!r}: "
               "anyone on the network could read the page; set username and password_hash")
    if cfg.buffer.commit_interval <= 0 or cfg.buffer.commit_interval > 60:
        b.fail("buffer.commit_interval", "must be between 1ms and 60s")
    _check_remote(cfg, b)


def _check_station(b: _Builder, p: str, st: StationForward) -> None:
    """The four authentication modes of Basics Station credentials, and a usable tc.uri."""
    scheme = st.uri.partition("://")[0].lower()
    if not st.uri:
        b.fail(f"{p}.uri", "required key is missing (the tc.uri, e.g. \"wss://eu1.cloud.thethings.network:8887\")")
    elif scheme not in ("ws", "wss"):
        b.fail(f"{p}.uri", f"{safe_url(st.uri)!r} must start with wss:// (or ws:// without TLS)")
    else:
        _check_url_host(b, f"{p}.uri", st.uri)
        if scheme == "wss" and st.trust is None:
            b.fail(f"{p}.trust", "required for a wss:// uri: the server's CA certificate (tc.trust)")
        if scheme == "ws" and (st.trust or st.crt or st.key):
            b.fail(f"{p}.uri", "ws:// has no TLS, so trust/crt/key would not be used; use wss:// "
                   "or remove them")
    if st.crt is not None and st.key is None:
        b.fail(f"{p}.key", f"crt {st.crt} given without key (tc.key); set both")
    if len(st.eui_map) > StationForward.MAX_GATEWAYS:
        b.fail(f"{p}.eui_map", f"{len(st.eui_map)} gateways, at most {StationForward.MAX_GATEWAYS} "
               "per server (one websocket each)")
    routers: dict[int, int] = {}
    for local, router in st.eui_map.items():
        if router in routers:
            b.fail(f"{p}.eui_map.{local:016x}", f"\"{router:016x}\" is already the router id of "
                   f"{routers[router]:016x}; the server could not tell the two gateways apart")
        routers.setdefault(router, local)


def _check_remote(cfg: Config, b: _Builder) -> None:
    rc = cfg.remote_config
    if rc.root is None:
        for key in ("repository", "mqtt"):
            if getattr(rc, key) is not None:
                b.fail(f"remote_config.{key}", "needs remote_config.root, the trusted root.json "
                       "from `schwebe fleet init` (without it nothing pushed can be trusted)")
        return
    if rc.repository is None and rc.mqtt is None:
        b.fail("remote_config", "root is set but neither repository nor mqtt says where configs come from")
    if rc.repository is not None:
        if not rc.repository.startswith(("https://", "http://")):
            b.fail("remote_config.repository", f"{safe_url(rc.repository)!r} must be an https:// "
                   "(or http://: TUF signatures protect it either way) URL")
        else:
            _check_url_host(b, "remote_config.repository", rc.repository)
    if rc.mqtt is not None and rc.mqtt not in {m.name for m in cfg.forward.mqtt}:
        b.fail("remote_config.mqtt", f"{rc.mqtt!r} is not the name of a [[forward.mqtt]]")
    if not 10 <= rc.poll_interval <= 7 * 86400:
        b.fail("remote_config.poll_interval", "must be between 10s and 7d")
    if not 1 <= rc.confirm_window <= 86400:
        b.fail("remote_config.confirm_window", "must be between 1s and 1d")


# Linux termios rates (B50..B4000000): anything else is most likely a typo (96000, 1920).
STANDARD_BAUDRATES = (
    50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600,
    115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000,
    2500000, 3000000, 3500000, 4000000,
)


def _check_baudrate(b: _Builder, path: str, rate: int) -> None:
    if rate not in STANDARD_BAUDRATES:
        b.fail(path, f"{rate} is not a standard baud rate (e.g. 9600, 19200, 38400, 115200)")


def _weak_password_hash(value: str) -> str | None:
    """Why ``value`` is not a usable scrypt hash (a plain password, weak parameters), or None."""
    parts = value.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return "not a scrypt hash (a plain password is never accepted)"
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return "not a scrypt hash (its parameters or hex fields do not parse)"
    if n < 2**14 or r < 8 or p < 1 or n & (n - 1):
        return f"scrypt parameters N={n}, r={r}, p={p} are too weak (at least N=16384, r=8, p=1)"
    if len(salt) < 16 or len(digest) < 32:
        return "scrypt salt or digest too short (16 and 32 bytes at least)"
    return None


def _check_url_host(b: _Builder, path: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError as exc:
        b.fail(path, f"{safe_url(url)!r}: {exc}")
        return
    host = parts.hostname
    if not host:
        b.fail(path, f"{safe_url(url)!r} has no host (e.g. \"{parts.scheme}://broker.example.org\")")
    elif not is_valid_host(host):
        b.fail(path, f"{safe_url(url)!r}: {host!r} is neither an IP address nor a host name")
    elif port == 0:
        b.fail(path, f"{safe_url(url)!r}: port 0")


def _check_zmq_url(b: _Builder, path: str, url: str) -> None:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("ipc", "tcp"):
        b.fail(path, f"{url!r} must start with ipc:// or tcp://")
    elif not rest:
        b.fail(path, f"{url!r} has no address")
    elif scheme == "tcp":
        try:
            parse_hostport(rest)
        except ValueError as exc:
            b.fail(path, str(exc))


def config_warnings(cfg: Config) -> list[str]:
    """Settings that load but cannot work as meant, in the errors' key-path style."""
    out: list[str] = []
    if not cfg.gateway.data_dir.is_absolute():
        out.append(f'gateway.data_dir = "{cfg.gateway.data_dir}": a relative path depends on the '
                   "directory schwebe starts in (systemd starts it in /); give an absolute path")
    if not cfg.web.logins() and not cfg.web.open_read_only:
        if cfg.web.password_hash is not None:
            out.append("web.username: not set, so web.password_hash logs no one in and every "
                       "page but /healthz answers 401; name the login, or use [[web.users]]")
        else:
            out.append("web.password_hash: not set and no [[web.users]], so every page but "
                       "/healthz answers 401 (no one can log in); make one with: "
                       "schwebe web hash-password")
    for i, dev in enumerate(cfg.parking.devices):
        abp = dev.dev_addr is not None and dev.nwk_s_key is not None and dev.app_s_key is not None
        if not abp and dev.app_key is None:
            out.append(f"parking.devices[{i}] (dev_eui {dev.dev_eui:016x}): no keys, so its "
                       "uplinks are forwarded but never decoded at the edge; give dev_addr, "
                       "nwk_s_key and app_s_key (ABP) or app_key (OTAA)")
    return out


def demo_config_text(data_dir: str, web_port: int, network_server_port: int) -> str:
    """`schwebe demo`'s embedded configuration with its data directory and ports filled in."""
    from importlib import resources

    text = resources.files("gateway").joinpath("demo.toml").read_text("utf-8")
    return (text.replace("{data_dir}", data_dir).replace("{web_port}", str(web_port))
            .replace("{lns_port}", str(network_server_port)))


def load_config_text(text: str, *, source: str = "<config>", sealed_ok: bool = False) -> Config:
    """Parse and check a config; ``sealed_ok`` lets secret fields hold ``enc:v1:`` sealed values.

    A config loaded with ``sealed_ok=True`` is for validation only (``fleet set-config``):
    its sealed secrets are still the ``enc:v1:`` strings, not usable values.
    """
    return load_config_data(parse_toml(text, source), sealed_ok=sealed_ok)


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None


def load_config_data(data: dict[str, Any], *, sealed_ok: bool = False) -> Config:
    """Check parsed TOML (a dict) against the shape; ConfigError lists every problem."""
    b = _Builder(sealed_ok=sealed_ok)
    cfg = b.build(Config, data, "")
    if cfg is _MISSING or b.problems:
        raise ConfigError(b.problems or ["<top>: invalid configuration"])
    _check(cfg, b)
    if b.problems:
        raise ConfigError(b.problems)
    return typing.cast(Config, cfg)


def load_config(path: Path, *, sealed_ok: bool = False) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return load_config_text(text, source=str(path), sealed_ok=sealed_ok)


def redacted(cfg: Any) -> Any:
    """The config as plain data with every secret replaced: safe to show or log."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cfg):
            v = getattr(cfg, f.name)
            if f.metadata.get("secret") and v is not None:
                out[f.name] = "***"
            else:
                out[f.name] = redacted(v)
        return out
    if isinstance(cfg, tuple | list):
        return [redacted(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    if isinstance(cfg, bytes):
        return "***"
    return cfg
