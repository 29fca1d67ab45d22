"""Edge parking: turns the city's own sensor uplinks and wired readings into spot state and records.

Glues sessions (MIC, FCnt, decryption), the vendor decoders and spot state, and persists the
last two across restarts. It only watches frames: uplinks go to the buffer unchanged either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from gateway import frames
from gateway.clocksteps import StepWatch
from gateway.config import ParkingDevice
from gateway.fsio import write_atomic
from gateway.parking import registry
from gateway.parking.sessions import SessionTable, UplinkResult
from gateway.parking.spots import WIRED_PREFIX, Spot, SpotTable, iso_us
from gateway.records import Record, make_record

log = logging.getLogger("schwebe.parking")

SPOTS_FILE: Final = "parking-spots.json"
SESSIONS_FILE: Final = "parking-sessions.json"
CLOSURES_FILE: Final = "parking-closures.json"  # closures and reopenings from the page
RECORD_SOURCE: Final = "parking"

_JOIN_REQUEST: Final = 0
_JOIN_ACCEPT: Final = 1
_REJOIN_REQUEST: Final = 6
#: MHDR bytes of a data uplink parse_phy accepts (Unconfirmed/ConfirmedDataUp, Major 0, any
#: RFU bits) and the shortest such frame (MHDR, FHDR, MIC): ``parse_phy`` rules, for the
#: unknown-DevAddr shortcut in :meth:`EdgeParking.observe_rxpk`.
_DATA_UP_MHDR: Final = frozenset(b for b in range(256) if b >> 5 in (2, 4) and b & 3 == 0)
_DATA_MIN: Final = 12


class WiredReading(Protocol):
    """What the RS-485 driver reports (drivers.modbus.WiredReading has this shape)."""

    @property
    def spot_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def unit(self) -> int: ...
    @property
    def value(self) -> int | None: ...
    @property
    def observed_us(self) -> int: ...


@dataclass(slots=True)
class CarCounter:
    """A car counter (nwave/ncc405): counts vehicles passing a point; not a spot."""

    counter_id: str  # its [[parking.devices]] spot_id: the counting point's name
    device: str  # DevEUI hex
    model: str
    count: int | None = None
    count_changed_us: int | None = None
    last_heard_us: int | None = None
    battery: float | None = None
    rssi: float | None = None
    snr: float | None = None
    battery_unit: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "device": self.device, "model": self.model, "count": self.count,
            "count_changed_at": None if self.count_changed_us is None else iso_us(self.count_changed_us),
            "last_heard": None if self.last_heard_us is None else iso_us(self.last_heard_us),
            "battery": self.battery, "battery_unit": self.battery_unit, "rssi": self.rssi, "snr": self.snr,
        }


class EdgeParking:
    """Spot state from radio and wired sensors; one instance per gateway.

    ``clock`` returns wall-clock seconds (time.time); uplinks are timed by their record's
    receive time, sweeps by the clock. ``emit`` receives every parking record.
    """

    name = "parking"

    def __init__(
        self,
        devices: Sequence[ParkingDevice],
        state_path: Path,
        heartbeat_timeout: float,
        record_heartbeats: bool,
        emit: Callable[[Record], None],
        clock: Callable[[], float] = time.time,
        *,
        save_interval: float = 30.0,
        sweep_interval: float | None = None,
        closed_spots: Sequence[str] = (),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if heartbeat_timeout <= 0:
            raise ValueError(f"parking.heartbeat_timeout must be positive, got {heartbeat_timeout}")
        self.state_path = Path(state_path)
        self.heartbeat_timeout = heartbeat_timeout
        self.record_heartbeats = record_heartbeats
        self.emit = emit
        self.clock = clock
        self.monotonic = monotonic
        # A step of the wall clock (NTP arriving late, a bad time source) moves the stamps this
        # process took before it, so heartbeat timeouts count the time that really passed.
        self._watch = StepWatch(clock, monotonic)
        self._watch.check()  # the baseline: steps from now on
        self._run_from_us = int(clock() * 1e6)
        self.save_interval = save_interval
        # Timing a timeout to a tenth of itself is plenty; a minute caps the sweep cost.
        self.sweep_interval = (
            sweep_interval if sweep_interval is not None else min(60.0, heartbeat_timeout / 10)
        )
        self.sessions = SessionTable(devices)
        self.spot_table = SpotTable()
        # Per device: (cfg, decoder, status/battery reader, DevEUI hex, battery unit), looked
        # up once, not per frame.
        self._meta: dict[
            int, tuple[ParkingDevice, registry.Decoder, registry.SpotReader, str, str | None]
        ] = {}
        self._place: dict[str, dict[str, Any]] = {}  # spot -> location/parking_site from config
        self.car_counters: dict[str, CarCounter] = {}
        for cfg in devices:
            self._meta[cfg.dev_eui] = (
                cfg,
                registry.decoder_for(cfg.model),
                registry.spot_reader(cfg.model),
                f"{cfg.dev_eui:016x}",
                registry.battery_unit(cfg.model),
            )
            if registry.is_counter(cfg.model):
                # A car counter counts passes; it has no spot, so it never reads "unknown".
                self.car_counters[cfg.spot_id] = CarCounter(
                    cfg.spot_id, f"{cfg.dev_eui:016x}", cfg.model,
                    battery_unit=registry.battery_unit(cfg.model))
                continue
            self.spot_table.ensure(cfg.spot_id, category=cfg.category)
            place = {"location": None if cfg.location is None else list(cfg.location),
                     "parking_site": cfg.parking_site}
            if any(v is not None for v in place.values()):
                self._place[cfg.spot_id] = {k: v for k, v in place.items() if v is not None}
        self.bad_frames = 0  # base64 or PHYPayload errors (the network server sees them too)
        self.undecodable = 0  # genuine frames the decoder answered with errors only
        self.rejoin_requests = 0
        self.save_failures = 0
        self._last_save = monotonic()  # a duration: the wall clock may step
        self._configured_closed = frozenset(closed_spots)
        # a technician's closures and reopenings from the page, kept across restarts
        self._overrides_path = self.state_path / CLOSURES_FILE
        self._overrides: dict[str, bool] = self._load_overrides()
        self._closed = self._effective_closed()
        self._load()

    # ------------------------------------------------------------------ radio

    def observe_uplink(self, record: Record) -> None:
        """Watch one ``uplink`` record (body per docs/INTERFACES.md)."""
        body = record.decoded()
        rxpk = body.get("rxpk") if isinstance(body, dict) else None
        if isinstance(rxpk, dict):
            self.observe_rxpk(rxpk, record.received_us)

    def observe_rxpk(self, rxpk: Mapping[str, Any], received_us: int, raw: bytes | None = None) -> None:
        """The same, for a caller that already holds the rxpk object (skips a CBOR round trip)
        and perhaps its PHYPayload as bytes, ``raw`` (skips decoding ``data`` again)."""
        if rxpk.get("stat", 1) == -1:
            return  # CRC failed on air: nothing in it can be trusted, not even the DevAddr
        if (raw is not None and len(raw) >= _DATA_MIN and raw[0] in _DATA_UP_MHDR
                and len(raw) >= _DATA_MIN + (raw[5] & 0x0F)  # the FOpts end before the MIC
                and not self.sessions.knows_dev_addr(int.from_bytes(raw[1:5], "little"))):
            # A well-formed data uplink from a DevAddr no device here has: on a shared channel
            # most frames are other operators' devices. Counted as data_uplink would count it,
            # without building the parsed frame (one call per frame at 2 000 frames/s).
            self.sessions.unknown_device += 1
            return
        try:
            phy = frames.parse_phy(frames.b64decode_tolerant(rxpk["data"]) if raw is None else raw)
        except (frames.FrameError, KeyError, TypeError, AttributeError):
            self.bad_frames += 1
            return
        mtype = phy.mtype
        if mtype == 2 or mtype == 4:  # Unconfirmed/ConfirmedDataUp
            # Each field is computed on access (parse_phy stays lazy): read each once.
            dev_addr, fcnt16, frm_payload = phy.dev_addr, phy.fcnt, phy.frm_payload
            assert dev_addr is not None and fcnt16 is not None and frm_payload is not None
            result = self.sessions.data_uplink(phy.raw, dev_addr, fcnt16, phy.fport, frm_payload)
            if result.verdict == "ok":
                self._on_data(result, rxpk, received_us)
            elif result.device is not None and result.verdict in ("replay", "mic"):
                self._log_rejection(result.device.dev_eui, result.verdict, fcnt16)
        elif mtype == _JOIN_REQUEST:
            assert phy.join_eui is not None and phy.dev_eui is not None
            assert phy.dev_nonce is not None
            if self.sessions.join_request(phy.raw, phy.join_eui, phy.dev_eui, phy.dev_nonce):
                log.info("join request seen", extra={"fields": {
                    "dev_eui": f"{phy.dev_eui:016x}", "dev_nonce": phy.dev_nonce}})
        elif mtype == _REJOIN_REQUEST:
            self.rejoin_requests += 1  # LoRaWAN 1.1 only; 1.0 devices rejoin by joining

    def _log_rejection(self, dev_eui: int, verdict: str, fcnt16: int) -> None:
        # Counters carry the full story; the log shows 1st, 2nd, 4th, 8th... so a replay
        # flood on air cannot flood the journal.
        c = self.sessions.devices[dev_eui].counters
        count = c.replays if verdict == "replay" else c.mic_failures
        if count & (count - 1):
            return
        what = ("replayed uplink rejected (FCnt not above the last accepted one)"
                if verdict == "replay" else
                "uplink with a bad MIC rejected: wrong keys in config, or a forged frame")
        log.warning(what, extra={"fields": {"dev_eui": f"{dev_eui:016x}", "fcnt16": fcnt16,
                                            "count": count}})

    def observe_downlink(self, gateway_eui: int | str, txpk: Mapping[str, Any]) -> None:
        """Watch one txpk the gateway is about to send: join accepts start OTAA sessions."""
        try:
            raw = frames.b64decode_tolerant(txpk["data"])
            if not raw or raw[0] >> 5 != _JOIN_ACCEPT:
                return
            phy = frames.parse_phy(raw)
        except (frames.FrameError, KeyError, TypeError, AttributeError):
            return  # the downlink path reports its own bad txpks
        for cfg in self.sessions.join_accept(phy.raw):
            log.info("join accept seen; session pending its first uplink", extra={"fields": {
                "dev_eui": f"{cfg.dev_eui:016x}", "gateway_eui": _eui_text(gateway_eui)}})

    def _on_data(self, result: UplinkResult, rxpk: Mapping[str, Any], received_us: int) -> None:
        _, device, _, fport, plaintext, new_session = result
        assert device is not None
        cfg, decode, read_spot, eui_hex, battery_unit = self._meta[device.dev_eui]
        if new_session:
            log.info("OTAA session confirmed by its first uplink",
                     extra={"fields": {"dev_eui": eui_hex}})
        rssi, snr = _signal(rxpk)
        counter = self.car_counters.get(cfg.spot_id)
        if counter is not None:
            self._count(counter, cfg, decode, read_spot, fport, plaintext, received_us, rssi, snr)
            return
        if fport is None or fport == 0:
            # MAC commands only: the sensor is alive, but nothing to decode.
            self.spot_table.report(cfg.spot_id, None, received_us, device=eui_hex,
                                   rssi=rssi, snr=snr)
            return
        try:
            decoded = decode(fport, plaintext)
        except Exception:  # a decoder bug must not stop the spots of every other sensor
            self.undecodable += 1
            log.exception("decoder failed on a genuine uplink", extra={"fields": {
                "dev_eui": eui_hex, "model": cfg.model, "fport": fport}})
            decoded = {"errors": ["decoder failed; see the gateway log"]}
        if "data" not in decoded:
            self.undecodable += 1
        status, batt = read_spot(decoded)
        changed = self.spot_table.report(
            cfg.spot_id, status, received_us, device=eui_hex,
            battery=batt, battery_unit=battery_unit, rssi=rssi, snr=snr,
        )
        if changed or self.record_heartbeats:
            self._emit(self.spot_table.spots[cfg.spot_id], received_us, decoded)

    def _count(self, counter: CarCounter, cfg: ParkingDevice, decode: registry.Decoder,
               read_spot: registry.SpotReader, fport: int | None, plaintext: bytes,
               received_us: int, rssi: float | None, snr: float | None) -> None:
        """A car counter's uplink: its count (an event record when it moved), battery, signal."""
        counter.last_heard_us, counter.rssi, counter.snr = received_us, rssi, snr
        if fport is None or fport == 0:
            return
        try:
            decoded = decode(fport, plaintext)
        except Exception:
            self.undecodable += 1
            log.exception("decoder failed on a genuine uplink", extra={"fields": {
                "dev_eui": counter.device, "model": cfg.model, "fport": fport}})
            return
        data = decoded.get("data")
        if not isinstance(data, dict):
            self.undecodable += 1
            return
        _, batt = read_spot(decoded)
        if batt is not None:
            counter.battery = batt
        value = data.get("counter_value")
        if isinstance(value, int) and value != counter.count:
            counter.count, counter.count_changed_us = value, received_us
            self.emit(make_record("event", RECORD_SOURCE, {"event": "car_counter", "detail": {
                "counter_id": counter.counter_id, "device": counter.device, "count": value,
                "observed_at": iso_us(received_us), "data": data}}, received_us=received_us))

    # ------------------------------------------------------------------ wired

    def observe_wired(self, reading: WiredReading) -> None:
        """A reading of a wired detector; a poll, so only changes become records."""
        device = f"{WIRED_PREFIX}{reading.unit}"
        if self.spot_table.report(reading.spot_id, reading.status, reading.observed_us,
                                  device=device):
            data = {"unit": reading.unit, "value": reading.value}
            self._emit(self.spot_table.spots[reading.spot_id], reading.observed_us, data)

    # ------------------------------------------------------------------ records

    def _emit(self, spot: Spot, observed_us: int, data: Any) -> None:
        body: dict[str, Any] = {
            "spot_id": spot.spot_id,
            "status": spot.status,
            "observed_at": iso_us(observed_us),
            "device": spot.device,
            "data": data,
        }
        if spot.category is not None:
            body["category"] = spot.category  # FIWARE ParkingSpot category, from config
        place = self._place.get(spot.spot_id)
        if place is not None:
            body.update(place)  # FIWARE location / refParkingSite, from config
        if spot.battery is not None:
            body["battery"] = spot.battery
        if spot.rssi is not None:
            body["rssi"] = spot.rssi
        if spot.snr is not None:
            body["snr"] = spot.snr
        self.emit(make_record("parking", RECORD_SOURCE, body, received_us=observed_us))

    # ------------------------------------------------------------------ time

    def sweep(self, now: float | None = None) -> int:
        """Mark spots whose sensor missed its heartbeat ``unknown``; returns how many."""
        self._follow_clock()
        now_us = int((self.clock() if now is None else now) * 1_000_000)
        expired = self.spot_table.sweep(now_us, int(self.heartbeat_timeout * 1_000_000))
        for spot in expired:
            last = spot.heartbeat_us
            log.warning("sensor missed its heartbeat; spot now unknown", extra={"fields": {
                "spot_id": spot.spot_id, "device": spot.device}})
            self._emit(spot, now_us, {
                "reason": "heartbeat_timeout",
                "last_heartbeat": None if last is None else iso_us(last),
            })
        return len(expired)

    def _follow_clock(self) -> None:
        step = self._watch.check()
        if step is None:
            return
        moved = self.spot_table.restamp(step, self._run_from_us)
        self._run_from_us += step.delta_us
        log.warning("the wall clock stepped; spot times taken before it moved with it",
                    extra={"fields": {"step_s": round(step.delta_us / 1e6, 3), "spots": moved}})

    def _load_overrides(self) -> dict[str, bool]:
        try:
            raw = json.loads(self._overrides_path.read_bytes())
            return {str(k): bool(v) for k, v in raw.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as exc:
            log.error("spot closures from the page unreadable; the config's apply",
                      extra={"fields": {"path": str(self._overrides_path), "detail": str(exc)[:200]}})
            return {}

    def _effective_closed(self) -> frozenset[str]:
        closed = set(self._configured_closed)
        for spot_id, is_closed in self._overrides.items():
            (closed.add if is_closed else closed.discard)(spot_id)
        return frozenset(closed)

    def set_closed(self, spot_id: str, closed: bool) -> bool:
        """Close or reopen one spot (a technician on the page); False for an unknown spot.
        The choice is kept in the data directory and holds over the config's closed_spots."""
        if spot_id not in self.spot_table.spots:
            return False
        self._overrides[spot_id] = closed
        write_atomic(self._overrides_path, json.dumps(self._overrides, sort_keys=True).encode())
        self._closed = self._effective_closed()
        self.apply_closures()
        return True

    def apply_closures(self) -> int:
        """Put the configured closures into effect (a record per spot that changed)."""
        now_us = int(self.clock() * 1_000_000)
        changed = self.spot_table.set_closures(self._closed, now_us)
        for spot in changed:
            log.info("spot closure changed", extra={"fields": {
                "spot_id": spot.spot_id, "status": spot.status}})
            reason = "closed_by_operator" if spot.status == "closed" else "closure_lifted"
            self._emit(spot, now_us, {"reason": reason})
        return len(changed)

    async def run(self) -> None:
        """Sweep for missed heartbeats and save changed state in batches, until cancelled."""
        self.apply_closures()
        while True:
            await asyncio.sleep(min(self.sweep_interval, self.save_interval))
            self.sweep()
            if self.monotonic() - self._last_save >= self.save_interval:
                await self._save_async()

    async def stop(self) -> None:
        """Final save, so a clean shutdown loses no counter or state."""
        await self._save_async()

    # ------------------------------------------------------------------ views

    def spots(self) -> dict[str, dict[str, Any]]:
        """Spot state for the status page and API (no keys, nothing secret), with the
        spot's parking site from config when it has one (the page groups by it)."""
        view = self.spot_table.view()
        for sid, place in self._place.items():
            if sid in view and "parking_site" in place:
                view[sid]["parking_site"] = place["parking_site"]
        return view

    def counters(self) -> dict[str, dict[str, Any]]:
        """Car counters for the status page and API: the count, when it moved, last heard."""
        return {c.counter_id: c.view() for c in self.car_counters.values()}

    def health(self) -> dict[str, Any]:
        """Counters per device and for the whole room; never a key."""
        return {
            "devices": self.sessions.health(),
            "unknown_device": self.sessions.unknown_device,
            "join_accepts_unmatched": self.sessions.join_accepts_unmatched,
            "unsupported": self.sessions.unsupported + self.rejoin_requests,
            "bad_frames": self.bad_frames,
            "undecodable": self.undecodable,
            "save_failures": self.save_failures,
        }

    # ------------------------------------------------------------------ persistence

    def save(self) -> None:
        """Write changed state now (atomically, 0600); the run loop calls this in batches."""
        for name, payload in self._dirty_payloads():
            self._write(name, payload)

    async def _save_async(self) -> None:
        # Snapshot on the loop (the tables are not thread-safe), write off it (fsync is slow
        # on SD cards).
        payloads = self._dirty_payloads()
        for name, payload in payloads:
            await asyncio.to_thread(self._write, name, payload)
        self._last_save = self.monotonic()

    def _dirty_payloads(self) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        if self.spot_table.dirty:
            out.append((SPOTS_FILE, _dump(self.spot_table.to_state())))
            self.spot_table.dirty = False
        if self.sessions.dirty:
            out.append((SESSIONS_FILE, _dump(self.sessions.to_state())))
            self.sessions.dirty = False
        return out

    def _write(self, name: str, payload: bytes) -> None:
        try:
            write_atomic(self.state_path / name, payload)
        except OSError as exc:
            self.save_failures += 1
            # Mark dirty again so the next batch retries.
            if name == SPOTS_FILE:
                self.spot_table.dirty = True
            else:
                self.sessions.dirty = True
            log.error("could not save parking state; will retry at the next save", extra={
                "fields": {"path": str(self.state_path / name), "error": str(exc)}})

    def _load(self) -> None:
        for name, table in ((SPOTS_FILE, self.spot_table), (SESSIONS_FILE, self.sessions)):
            path = self.state_path / name
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("cannot read parking state; starting without it", extra={
                    "fields": {"path": str(path), "error": str(exc)}})
                continue
            try:
                notes = table.load_state(json.loads(raw))
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                aside = _move_aside(path)
                log.error(
                    "parking state file is corrupt; moved aside, starting empty "
                    "(spots read unknown until their sensors report)",
                    extra={"fields": {"path": str(path), "moved_to": aside, "error": str(exc)}},
                )
                continue
            for note in notes:
                log.warning("parking state entry ignored", extra={
                    "fields": {"path": str(path), "detail": note}})


def _move_aside(path: Path) -> str | None:
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        os.replace(path, aside)
    except OSError:
        return None
    return str(aside)


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _signal(rxpk: Mapping[str, Any]) -> tuple[float | None, float | None]:
    rssi: Any = rxpk.get("rssi")
    snr: Any = rxpk.get("lsnr")
    if rssi is None:  # multi-antenna forwarders put per-antenna values in rsig[]
        rsig = rxpk.get("rsig")
        if isinstance(rsig, list) and rsig and isinstance(rsig[0], dict):
            rssi, snr = rsig[0].get("rssic"), rsig[0].get("lsnr")
    # ``type() is`` first: what JSON gives, without isinstance's subclass walk per uplink.
    kind = type(rssi)
    rssi_f = float(rssi) if kind is int or kind is float else _float_or_none(rssi)
    kind = type(snr)
    snr_f = float(snr) if kind is float or kind is int else _float_or_none(snr)
    return rssi_f, snr_f


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _eui_text(eui: int | str) -> str:
    return f"{eui:016x}" if isinstance(eui, int) else eui
