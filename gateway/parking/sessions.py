"""LoRaWAN 1.0.x device sessions for the city's own sensors: who sent a frame, is it genuine, is it new.

ABP sessions come from config; OTAA sessions are derived by watching a join request go up and
its join accept come down. Crypto is gateway.frames.lorawan's; this room never logs or exports a key
except into the 0600 state file its owner writes.
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from gateway.config import ParkingDevice

if TYPE_CHECKING:
    from gateway.frames import lorawan

# gateway.frames.lorawan is imported where a key is first used: it loads the cryptography
# package (~8 MiB resident), which a daemon with no parking devices (or none with keys)
# never needs.

#: Join requests remembered per device: a device that hears no accept retries with a new
#: DevNonce, and the network answers one of them; every remembered one yields a candidate.
MAX_PENDING_JOINS: Final = 4

STATE_VERSION: Final = 1

Verdict = Literal["ok", "replay", "mic", "unknown_device"]


@dataclass(slots=True)
class Session:
    """One LoRaWAN 1.0 session: DevAddr, its two keys and the last accepted FCntUp."""

    dev_addr: int
    nwk_s_key: bytes = field(repr=False)
    app_s_key: bytes = field(repr=False)
    origin: Literal["abp", "otaa"]
    fcnt_up: int | None = None  # 32-bit; None until the first frame of the session
    dev_nonce: int | None = None  # OTAA: the join this session came from (not secret)
    # Key schedules made once per session, not per frame (most of an uplink's crypto cost);
    # DevAddr and keys never change within a session, so it cannot go stale.
    crypto: lorawan.SessionCrypto10 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from gateway.frames import lorawan

        self.crypto = lorawan.SessionCrypto10(self.dev_addr, self.nwk_s_key, self.app_s_key)

    def to_state(self) -> dict[str, Any]:
        return {
            "dev_addr": self.dev_addr,
            "nwk_s_key": self.nwk_s_key.hex(),
            "app_s_key": self.app_s_key.hex(),
            "origin": self.origin,
            "fcnt_up": self.fcnt_up,
            "dev_nonce": self.dev_nonce,
        }

    @classmethod
    def from_state(cls, obj: Any) -> Session:
        if not isinstance(obj, dict):
            raise ValueError(f"session entry must be an object, got {type(obj).__name__}")
        fcnt = obj.get("fcnt_up")
        nonce = obj.get("dev_nonce")
        origin = obj.get("origin")
        if origin not in ("abp", "otaa"):
            raise ValueError(f"session origin must be 'abp' or 'otaa', got {origin!r}")
        if fcnt is not None and not (isinstance(fcnt, int) and 0 <= fcnt <= 0xFFFFFFFF):
            raise ValueError(f"session fcnt_up must be a 32-bit integer, got {fcnt!r}")
        nwk, app = bytes.fromhex(obj["nwk_s_key"]), bytes.fromhex(obj["app_s_key"])
        if len(nwk) != 16 or len(app) != 16:
            raise ValueError("session keys must be 16 bytes")
        dev_addr = obj["dev_addr"]
        if not (isinstance(dev_addr, int) and 0 <= dev_addr <= 0xFFFFFFFF):
            raise ValueError(f"session dev_addr must be a 32-bit integer, got {dev_addr!r}")
        return cls(dev_addr, nwk, app, origin, fcnt, nonce if isinstance(nonce, int) else None)


@dataclass(slots=True)
class DeviceCounters:
    frames: int = 0  # data uplinks that reached this device's session(s)
    decoded: int = 0  # of those, MIC valid, new, and handed to the decoder
    mic_failures: int = 0
    replays: int = 0
    sessions: int = 0  # sessions confirmed (OTAA joins followed by a first data frame)
    join_requests: int = 0
    join_accepts: int = 0


@dataclass(slots=True)
class Device:
    """A configured device, its confirmed session and the candidates a join accept produced."""

    cfg: ParkingDevice = field(repr=False)  # its repr shows the configured keys
    session: Session | None = None
    # From the latest join accept, one per remembered DevNonce; the first data frame that
    # verifies with one of them confirms it (until then the old session stays valid).
    pending: list[Session] = field(default_factory=list)
    joins: deque[tuple[int, int]] = field(
        default_factory=lambda: deque(maxlen=MAX_PENDING_JOINS)
    )  # (DevNonce, JoinEUI)
    counters: DeviceCounters = field(default_factory=DeviceCounters)


class UplinkResult(NamedTuple):
    """What a data uplink turned out to be. ``plaintext`` is the decrypted FRMPayload.

    A NamedTuple, not a frozen dataclass: as immutable, and a third of the cost to make, on
    a path that makes one per uplink.
    """

    verdict: Verdict
    device: ParkingDevice | None = None
    fcnt: int | None = None
    fport: int | None = None
    plaintext: bytes = b""
    new_session: bool = False


_UNKNOWN: Final = UplinkResult("unknown_device")


def fcnt_candidates(last: int | None, fcnt16: int) -> tuple[int | None, int | None]:
    """(32-bit counter that makes the frame new, 32-bit counter that makes it a replay).

    The new one is the first counter above ``last`` with these low 16 bits (the upper half
    increments when the low half rolled over); the replay one is 65536 below it. Only the
    MIC, computed over the full 32 bits, tells which one the device used. None where a
    counter would leave 0..2**32-1. Before a session's first frame, the upper half is 0.
    """
    if last is None:
        return fcnt16, None
    new = (last & 0xFFFF0000) | fcnt16
    if new <= last:
        new += 0x10000
    old = new - 0x10000
    return (new if new <= 0xFFFFFFFF else None), (old if old >= 0 else None)


class SessionTable:
    """Sessions of the configured devices, looked up by DevAddr on every data uplink."""

    def __init__(self, devices: Sequence[ParkingDevice]) -> None:
        self.devices: dict[int, Device] = {}
        for cfg in devices:
            if cfg.dev_eui in self.devices:
                raise ValueError(
                    f"parking.devices: DevEUI {cfg.dev_eui:016x} is listed twice; keep one entry"
                )
            dev = Device(cfg)
            if _is_abp(cfg):
                assert cfg.dev_addr is not None and cfg.nwk_s_key and cfg.app_s_key
                dev.session = Session(cfg.dev_addr, cfg.nwk_s_key, cfg.app_s_key, "abp")
            self.devices[cfg.dev_eui] = dev
        self.unknown_device = 0
        self.join_accepts_unmatched = 0
        self.unsupported = 0  # 1.1 (OptNeg) joins, rejoin requests: left to the network server
        self.dirty = False
        self._by_addr: dict[int, list[Device]] = {}
        self._reindex()

    # ------------------------------------------------------------------ lookup

    def _reindex(self) -> None:
        index: dict[int, list[Device]] = {}
        for dev in self.devices.values():
            addrs = {s.dev_addr for s in dev.pending}
            if dev.session is not None:
                addrs.add(dev.session.dev_addr)
            for addr in addrs:
                index.setdefault(addr, []).append(dev)
        self._by_addr = index

    # ------------------------------------------------------------------ data frames

    def knows_dev_addr(self, dev_addr: int) -> bool:
        """Whether any device here has (or had) ``dev_addr``: when not, :meth:`data_uplink`
        answers ``unknown_device`` whatever the frame."""
        return dev_addr in self._by_addr

    def data_uplink(
        self, raw: bytes, dev_addr: int, fcnt16: int, fport: int | None, frm_payload: bytes
    ) -> UplinkResult:
        """Verify, de-duplicate and decrypt one data uplink (fields as parse_phy gives them)."""
        devs = self._by_addr.get(dev_addr)
        if devs is None:
            self.unknown_device += 1
            return _UNKNOWN
        msg = raw[:-4]
        mic = raw[-4:]
        for dev in devs:
            # The confirmed session first, inline: it is what nearly every uplink matches.
            s = dev.session
            if s is not None and s.dev_addr == dev_addr:
                last = s.fcnt_up
                first: int | None
                if last is not None and fcnt16 > (last & 0xFFFF):
                    # fcnt_candidates' answer for the usual frame (the next counters, same
                    # upper half), without its call: this runs for every uplink.
                    first, replay_at = (last & 0xFFFF0000) | fcnt16, None
                    if last >= 0x10000:
                        replay_at = first - 0x10000
                else:
                    first, replay_at = fcnt_candidates(last, fcnt16)
                if first is not None and hmac.compare_digest(
                    s.crypto.data_mic(uplink=True, fcnt=first, msg=msg), mic
                ):
                    dev.counters.frames += 1
                    return self._accept(dev, s, first, fport, frm_payload, False)
                if replay_at is not None and _mic_ok(s, replay_at, msg, mic):
                    dev.counters.frames += 1
                    dev.counters.replays += 1
                    return UplinkResult("replay", dev.cfg, replay_at, fport)
            if dev.pending:
                result = self._try_pending(dev, msg, mic, dev_addr, fcnt16, fport, frm_payload)
                if result is not None:
                    dev.counters.frames += 1
                    return result
        # No session's MIC matched: every device holding this DevAddr counts the failure
        # (usually one; two share a DevAddr only across networks).
        for dev in devs:
            dev.counters.frames += 1
            dev.counters.mic_failures += 1
        return UplinkResult("mic", devs[0].cfg if len(devs) == 1 else None)

    def _try_pending(
        self,
        dev: Device,
        msg: bytes,
        mic: bytes,
        dev_addr: int,
        fcnt16: int,
        fport: int | None,
        frm_payload: bytes,
    ) -> UplinkResult | None:
        """The first uplink of a session a join accept announced: it confirms that session."""
        for cand in dev.pending:
            # A fresh session counts from 0, so the 16-bit counter is the 32-bit one.
            if cand.dev_addr == dev_addr and _mic_ok(cand, fcnt16, msg, mic):
                dev.session = cand
                dev.pending = []
                dev.counters.sessions += 1
                self._reindex()
                return self._accept(dev, cand, fcnt16, fport, frm_payload, True)
        return None

    def _accept(
        self,
        dev: Device,
        s: Session,
        fcnt: int,
        fport: int | None,
        frm_payload: bytes,
        new_session: bool,
    ) -> UplinkResult:
        s.fcnt_up = fcnt
        self.dirty = True
        plain = b""
        if frm_payload:
            # NwkSKey for FPort 0 (MAC commands), AppSKey for the rest.
            plain = s.crypto.crypt_frm_payload(
                fport=0 if fport == 0 else 1, uplink=True, fcnt=fcnt, data=frm_payload
            )
        dev.counters.decoded += 1
        return UplinkResult("ok", dev.cfg, fcnt, fport, plain, new_session)

    # ------------------------------------------------------------------ joins

    def join_request(self, raw: bytes, join_eui: int, dev_eui: int, dev_nonce: int) -> bool:
        """Remember a genuine join request of a configured OTAA device; False if not ours."""
        dev = self.devices.get(dev_eui)
        if dev is None or dev.cfg.app_key is None:
            self.unknown_device += 1
            return False
        from gateway.frames import lorawan

        # A forged request would otherwise push the real DevNonces out of the window.
        if not hmac.compare_digest(lorawan.join_request_mic(dev.cfg.app_key, raw[:-4]), raw[-4:]):
            dev.counters.mic_failures += 1
            return False
        dev.counters.join_requests += 1
        if (dev_nonce, join_eui) not in dev.joins:
            dev.joins.append((dev_nonce, join_eui))
        return True

    def join_accept(self, raw: bytes) -> list[ParkingDevice]:
        """Derive candidate sessions from a join accept seen going down; the devices it fits."""
        encrypted = raw[1:]
        matched: list[ParkingDevice] = []
        for dev in self.devices.values():
            key = dev.cfg.app_key
            if key is None or not dev.joins:
                continue
            from gateway.frames import lorawan

            plain = lorawan.decrypt_join_accept(key, encrypted)
            body, mic = plain[:-4], plain[-4:]
            if not hmac.compare_digest(lorawan.join_accept_mic_10(key, raw[:1] + body), mic):
                continue  # someone else's accept (the MIC also covers the AppKey)
            if body[10] & 0x80:
                self.unsupported += 1  # OptNeg: a LoRaWAN 1.1 session, other key derivation
                continue
            join_nonce = int.from_bytes(body[0:3], "little")
            net_id = int.from_bytes(body[3:6], "little")
            dev_addr = int.from_bytes(body[6:10], "little")
            dev.pending = []
            for dev_nonce, _join_eui in reversed(dev.joins):
                keys = lorawan.derive_session_keys_10(
                    key, join_nonce=join_nonce, net_id=net_id, dev_nonce=dev_nonce
                )
                dev.pending.append(
                    Session(dev_addr, keys.nwk_s_key, keys.app_s_key, "otaa", dev_nonce=dev_nonce)
                )
            dev.joins.clear()
            dev.counters.join_accepts += 1
            matched.append(dev.cfg)
        if matched:
            self._reindex()
            self.dirty = True
        else:
            self.join_accepts_unmatched += 1
        return matched

    # ------------------------------------------------------------------ views and state

    def health(self) -> dict[str, Any]:
        """Counters and session facts per device; never a key."""
        out: dict[str, Any] = {}
        for eui, dev in self.devices.items():
            s = dev.session
            c = dev.counters
            out[f"{eui:016x}"] = {
                "spot_id": dev.cfg.spot_id,
                "model": dev.cfg.model,
                "activation": "abp" if _is_abp(dev.cfg) else "otaa",
                "dev_addr": None if s is None else f"{s.dev_addr:08x}",
                "fcnt_up": None if s is None else s.fcnt_up,
                "session_pending": bool(dev.pending),
                "frames": c.frames,
                "decoded": c.decoded,
                "mic_failures": c.mic_failures,
                "replays": c.replays,
                "sessions": c.sessions,
                "join_requests": c.join_requests,
                "join_accepts": c.join_accepts,
            }
        return out

    def to_state(self) -> dict[str, Any]:
        """Everything a restart needs, keys included: the caller writes it 0600."""
        devices: dict[str, Any] = {}
        for eui, dev in self.devices.items():
            devices[f"{eui:016x}"] = {
                "session": None if dev.session is None else dev.session.to_state(),
                "pending": [s.to_state() for s in dev.pending],
                "joins": [list(j) for j in dev.joins],
            }
        return {"version": STATE_VERSION, "devices": devices}

    def load_state(self, state: Any) -> list[str]:
        """Restore sessions saved by :meth:`to_state`; returns one note per entry ignored.

        Config wins: an ABP session is restored (for its counter) only when DevAddr and keys
        still match the config; OTAA sessions only for devices that still have an AppKey.
        Raises ValueError when the whole document is unusable.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a version {STATE_VERSION} session state document")
        entries = state.get("devices")
        if not isinstance(entries, dict):
            raise ValueError("session state has no 'devices' object")
        notes: list[str] = []
        for eui_hex, entry in entries.items():
            try:
                dev = self.devices.get(int(eui_hex, 16))
            except ValueError:
                notes.append(f"{eui_hex!r} is not a DevEUI")
                continue
            if dev is None:
                notes.append(f"device {eui_hex} is no longer configured")
                continue
            try:
                self._restore(dev, entry)
            except (KeyError, TypeError, ValueError) as exc:
                notes.append(f"device {eui_hex}: {exc}")
        self._reindex()
        return notes

    def _restore(self, dev: Device, entry: Any) -> None:
        if not isinstance(entry, dict):
            raise ValueError("entry is not an object")
        saved = entry.get("session")
        session = None if saved is None else Session.from_state(saved)
        pending = [Session.from_state(p) for p in _list(entry.get("pending"))]
        joins = [(int(n), int(j)) for n, j in _list(entry.get("joins"))]
        if _is_abp(dev.cfg):
            cur = dev.session
            assert cur is not None
            if (
                session is not None
                and session.origin == "abp"
                and (session.dev_addr, session.nwk_s_key, session.app_s_key)
                == (cur.dev_addr, cur.nwk_s_key, cur.app_s_key)
            ):
                cur.fcnt_up = session.fcnt_up
            return
        if dev.cfg.app_key is None:
            return
        dev.session = session if session is not None and session.origin == "otaa" else None
        dev.pending = pending
        dev.joins.extend(joins)


def _list(value: Any) -> Iterable[Any]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return value


def _is_abp(cfg: ParkingDevice) -> bool:
    return cfg.dev_addr is not None and cfg.nwk_s_key is not None and cfg.app_s_key is not None


def _mic_ok(s: Session, fcnt: int, msg: bytes, mic: bytes) -> bool:
    return hmac.compare_digest(s.crypto.data_mic(uplink=True, fcnt=fcnt, msg=msg), mic)
