"""NGSI-LD / NGSI-v2 forwarder: parking records as FIWARE ``ParkingSpot`` entities, batch upserts.

Only the newest state per spot is sent (an older one arriving late from the backlog is
acknowledged without sending, so it never overwrites a newer state); partial failures
(207) are handled per entity. Never logs the token.

Entities follow the smart-data-models ``ParkingSpot`` schema: ``status``, ``category``, and
from the device's config ``location`` (GeoJSON Point) and ``refParkingSite``; ``refDevice`` is
a list. A spot configured without location or parking site is still sent (an update of an
entity the city provisioned needs neither; coordinates are never invented), but it is logged
once and listed in health, because an upsert that creates the entity leaves it non-conforming.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import aiohttp
import cbor2
import orjson

from gateway.config import NgsiLdForward
from gateway.config_values import safe_url
from gateway.forward.base import Forwarder, ForwarderError, SendResult
from gateway.records import Record

log = logging.getLogger(__name__)

NATURAL_KINDS = ("parking",)
#: Spots missing model attributes listed in health (each is also logged once).
MAX_INCOMPLETE_SHOWN = 100
#: Largest answer we read from a context broker; the rest is never buffered.
MAX_RESPONSE = 1 << 20
_LINK_REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


def spot_urn(spot_id: str) -> str:
    return spot_id if spot_id.startswith("urn:") else f"urn:ngsi-ld:ParkingSpot:{spot_id}"


def device_urn(device: str) -> str:
    return device if device.startswith("urn:") else f"urn:ngsi-ld:Device:{device}"


def _when(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class NewestPerSpot:
    """Remembers the newest state delivered per spot, to drop stale late arrivals.

    "Newest" is the buffer's sequence number (the order the gateway received the uplinks), not
    ``observed_at``: that is a wall-clock stamp, and a clock stepped back (a time source that
    ran ahead, corrected) would make every later state look older than the last one delivered
    until the clock caught up, dropping them all as stale.
    """

    def __init__(self) -> None:
        self._newest: dict[str, int] = {}

    def is_stale(self, spot_id: str, seq: int) -> bool:
        newest = self._newest.get(spot_id)
        return newest is not None and seq < newest

    def delivered(self, spot_id: str, seq: int) -> None:
        if seq > self._newest.get(spot_id, -1):
            self._newest[spot_id] = seq


def _point(body: dict[str, Any]) -> dict[str, Any] | None:
    """The record's ``location`` ([lon, lat], from config) as a GeoJSON Point, if usable."""
    loc = body.get("location")
    if (isinstance(loc, list) and len(loc) == 2 and all(isinstance(c, int | float) for c in loc)
            and -180 <= loc[0] <= 180 and -90 <= loc[1] <= 90):
        return {"type": "Point", "coordinates": [float(loc[0]), float(loc[1])]}
    return None


def missing_model_attrs(body: dict[str, Any]) -> list[str]:
    """Attributes the FIWARE ParkingSpot model requires that this record cannot give
    (``location``, ``refParkingSite``: per-device config). An update of an entity the city
    provisioned does not need them; an upsert that creates the entity does."""
    missing = [] if _point(body) is not None else ["location"]
    if not body.get("parking_site"):
        missing.append("refParkingSite")
    return missing


def ld_entity(body: dict[str, Any]) -> dict[str, Any]:
    """A parking record body -> an NGSI-LD ``ParkingSpot`` (normalised form, context via Link)."""
    status: dict[str, Any] = {"type": "Property", "value": str(body["status"])}
    if body.get("observed_at"):
        status["observedAt"] = str(body["observed_at"])
    ent: dict[str, Any] = {
        "id": spot_urn(str(body["spot_id"])), "type": "ParkingSpot", "status": status,
        "category": {"type": "Property", "value": [str(body.get("category") or "onStreet")]},
    }
    point = _point(body)
    if point is not None:
        ent["location"] = {"type": "GeoProperty", "value": point}
    if body.get("parking_site"):
        ent["refParkingSite"] = {"type": "Relationship", "object": str(body["parking_site"])}
    if body.get("device"):
        # the model's refDevice is a list: an unordered 1:n Relationship (NGSI-LD 1.8 object array)
        ent["refDevice"] = {"type": "Relationship", "object": [device_urn(str(body["device"]))]}
    return ent


def v2_entity(body: dict[str, Any]) -> dict[str, Any]:
    """A parking record body -> an NGSI-v2 ``ParkingSpot`` (observation time as metadata)."""
    status: dict[str, Any] = {"type": "Text", "value": str(body["status"])}
    if body.get("observed_at"):
        status["metadata"] = {"timestamp": {"type": "DateTime", "value": str(body["observed_at"])}}
    ent: dict[str, Any] = {
        "id": spot_urn(str(body["spot_id"])), "type": "ParkingSpot", "status": status,
        "category": {"type": "StructuredValue", "value": [str(body.get("category") or "onStreet")]},
    }
    point = _point(body)
    if point is not None:
        ent["location"] = {"type": "geo:json", "value": point}
    if body.get("parking_site"):
        ent["refParkingSite"] = {"type": "Relationship", "value": str(body["parking_site"])}
    if body.get("device"):
        ent["refDevice"] = {"type": "Relationship", "value": [device_urn(str(body["device"]))]}
    return ent


class NgsiForwarder(Forwarder):
    connect_confirms = False  # a session is not an answer: the first request is

    def __init__(self, cfg: NgsiLdForward) -> None:
        super().__init__(cfg.name, kinds=cfg.kinds or NATURAL_KINDS, dev_addr_prefixes=cfg.dev_addr_prefixes,
                         net_ids=cfg.net_ids)
        self.cfg = cfg
        base = cfg.url.rstrip("/")
        self.endpoint = (f"{base}/ngsi-ld/v1/entityOperations/upsert?options=update"
                         if cfg.api == "ngsi-ld" else f"{base}/v2/op/update")
        self._shown_endpoint = safe_url(self.endpoint)  # for logs and status: no credentials
        self._session: aiohttp.ClientSession | None = None
        self.newest = NewestPerSpot()
        self.counters: dict[str, int] = {"entities_sent": 0, "stale_skipped": 0, "batches": 0}
        self.put_aside: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.last_rejection: dict[str, Any] | None = None
        # Spots sent without the model's location/refParkingSite (warned once each).
        self.incomplete: dict[str, list[str]] = {}

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.cfg.api == "ngsi-ld":
            h["Link"] = f"<{self.cfg.context}>; {_LINK_REL}"
        if self.cfg.service:
            h["Fiware-Service"] = self.cfg.service
        if self.cfg.service_path:
            h["Fiware-ServicePath"] = self.cfg.service_path
        if self.cfg.token:
            h["Authorization"] = f"Bearer {self.cfg.token}"
        return h

    async def connect(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.timeout))

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _count(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n

    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        if self._session is None:
            raise ForwarderError("disconnected", f"NGSI {self.name}: not connected")
        latest: dict[str, tuple[dict[str, Any], list[int]]] = {}  # spot: newest body, its seqs
        for seq, record in records:
            try:
                body = cbor2.loads(record.body)
                spot = str(body["spot_id"])
                if "status" not in body:  # can never be sent; put aside rather than block
                    raise KeyError("status")
            except (KeyError, TypeError, ValueError, cbor2.CBORDecodeError):
                self._count(self.put_aside, "bad_record")
                continue
            if self.newest.is_stale(spot, seq):
                self.counters["stale_skipped"] += 1
                continue
            prev = latest.get(spot)
            # A batch may hold backlog and live records in any order: the highest seq is the
            # newest state, the others are acknowledged with it.
            if prev is None:
                latest[spot] = (body, [seq])
            elif seq > max(prev[1]):
                latest[spot] = (body, [*prev[1], seq])
            else:
                latest[spot] = (prev[0], [*prev[1], seq])
        if not latest:
            return SendResult.all()
        for spot, (body, _seqs) in latest.items():
            if spot not in self.incomplete and len(self.incomplete) < MAX_INCOMPLETE_SHOWN:
                missing = missing_model_attrs(body)
                if missing:
                    self.incomplete[spot] = missing
                    log.warning("NGSI %s: spot %s has no %s in its [[parking.devices]] config: "
                                "updates of an existing ParkingSpot are fine, but if the broker "
                                "does not have it yet the upsert creates one without these "
                                "attributes the FIWARE model requires", self.name, spot,
                                " or ".join(missing))
        make = ld_entity if self.cfg.api == "ngsi-ld" else v2_entity
        entities = [make(b) for b, _ in latest.values()]
        payload: Any = entities if self.cfg.api == "ngsi-ld" else {"actionType": "append", "entities": entities}
        failed_ids = await self._post(orjson.dumps(payload))
        self.counters["batches"] += 1
        retry_seqs: set[int] = set()
        for spot, (_body, seqs) in latest.items():
            if spot_urn(spot) in failed_ids:
                retry_seqs.update(seqs)
            else:
                self.counters["entities_sent"] += 1
                self.newest.delivered(spot, max(seqs))
        if not retry_seqs:
            return SendResult.all()
        return SendResult(frozenset(s for s, _ in records if s not in retry_seqs))

    async def _post(self, data: bytes) -> set[str]:
        """POST one batch; return the entity ids to retry. Raises when the whole batch must wait."""
        assert self._session is not None
        try:
            async with self._session.post(self.endpoint, data=data, headers=self._headers()) as resp:
                # a 207 lists one entry per entity of our bounded batch: 1 MiB is plenty
                text = (await resp.content.read(MAX_RESPONSE)).decode(errors="replace")
                status = resp.status
        except TimeoutError as exc:
            self._count(self.errors, "timeout")
            raise ForwarderError("timeout", f"NGSI {self.name}: no answer from {self._shown_endpoint} "
                                 f"within {self.cfg.timeout:g}s") from exc
        except aiohttp.ClientError as exc:
            self._count(self.errors, "connection")
            raise ForwarderError("connection", f"NGSI {self.name}: {self._shown_endpoint}: {exc}") from exc
        if status in (200, 201, 204):
            return set()
        if status == 207:
            return self._partial(text)
        if status == 429 or status >= 500:
            self._count(self.errors, f"http_{status}")
            raise ForwarderError(f"http_{status}", f"NGSI {self.name}: {self._shown_endpoint} answered "
                                 f"{status}: {text[:200]}")
        # Any other 4xx will not get better by repeating it: put the batch aside, counted.
        self._count(self.put_aside, f"http_{status}")
        self.last_rejection = {"status": status, "detail": text[:500]}
        return set()

    def _partial(self, text: str) -> set[str]:
        try:
            doc = orjson.loads(text)
            errors = doc.get("errors", []) if isinstance(doc, dict) else []
        except orjson.JSONDecodeError:
            self._count(self.errors, "bad_207")
            raise ForwarderError("bad_207", f"NGSI {self.name}: unreadable 207 body: {text[:200]}") from None
        retry: set[str] = set()
        for e in errors:
            ent_id = str(e.get("entityId", ""))
            detail = e.get("error") or {}
            st = detail.get("status") if isinstance(detail, dict) else None
            if not isinstance(st, int) or st >= 500 or st == 429:
                retry.add(ent_id)
                self._count(self.errors, "entity_retry")
            else:
                self._count(self.put_aside, f"entity_{st}")
                self.last_rejection = {"entityId": ent_id, "error": detail}
        return retry

    def health(self) -> dict[str, Any]:
        return {"endpoint": self._shown_endpoint, "api": self.cfg.api, **self.counters,
                "put_aside": dict(self.put_aside), "errors": dict(self.errors),
                "last_rejection": self.last_rejection,
                "spots_without_model_attrs": dict(self.incomplete)}
