"""NGSI-LD / v2 forwarder against an aiohttp context-broker stand-in that checks the FIWARE model strictly."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.buffer import Buffer
from gateway.config import NgsiLdForward
from gateway.forward.base import DeliveryLoop
from gateway.forward.ngsi import NgsiForwarder
from gateway.records import Record, make_record

CTX = "https://example.org/parking-context.jsonld"
STATUSES = {"free", "occupied", "closed", "unknown"}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"'=;()]+$")
# smart-data-models ParkingSpot schema.json: "required" ...
REQUIRED = {"id", "type", "status", "category", "refParkingSite", "location"}
# ... and the attributes a gateway may send (everything else is unknown to this client).
SENT_ATTRS = REQUIRED | {"refDevice"}
# NGSI-v2 (Orion) forbids these in ids and string values.
V2_FORBIDDEN = re.compile(r"[<>\"'=;()\s]")


def _point_problem(v: Any) -> str | None:
    if not isinstance(v, dict) or set(v) != {"type", "coordinates"} or v["type"] != "Point":
        return f"not a GeoJSON Point: {v}"
    c = v["coordinates"]
    if (not isinstance(c, list) or len(c) != 2 or not all(isinstance(x, int | float) for x in c)
            or not -180 <= c[0] <= 180 or not -90 <= c[1] <= 90):
        return f"bad coordinates {c}"
    return None


def _category_problem(cat: Any, attr_type: str) -> str | None:
    if not isinstance(cat, dict) or set(cat) != {"type", "value"} or cat["type"] != attr_type:
        return f"bad category {cat}"
    v = cat["value"]
    if not isinstance(v, list) or not v or len(set(v)) != len(v) or not set(v) <= {"onStreet", "offStreet"}:
        return f"bad category value {v}"
    return None


def check_ld_entity(e: dict[str, Any]) -> str | None:
    """One entity of an NGSI-LD upsert, normalised form, @context in the Link header."""
    if "@context" in e:
        return "@context in an application/json body"
    if set(e) - SENT_ATTRS:
        return f"unknown attributes {sorted(set(e) - SENT_ATTRS)}"
    if e.get("type") != "ParkingSpot" or not str(e.get("id", "")).startswith("urn:ngsi-ld:ParkingSpot:"):
        return "bad id/type"
    st = e.get("status")
    if not isinstance(st, dict) or set(st) != {"type", "value", "observedAt"} or st["type"] != "Property" \
            or st["value"] not in STATUSES or not ISO_Z.match(st["observedAt"]):
        return f"bad status {st}"
    problem = _category_problem(e.get("category"), "Property")
    if problem:
        return problem
    if "location" in e:
        loc = e["location"]
        if not isinstance(loc, dict) or set(loc) != {"type", "value"} or loc["type"] != "GeoProperty":
            return f"bad location {loc}"
        problem = _point_problem(loc["value"])
        if problem:
            return problem
    if "refParkingSite" in e:
        ref = e["refParkingSite"]
        if (not isinstance(ref, dict) or set(ref) != {"type", "object"} or ref["type"] != "Relationship"
                or not isinstance(ref["object"], str) or not URI.match(ref["object"])):
            return f"bad refParkingSite {ref}"
    if "refDevice" in e:
        ref = e["refDevice"]
        if (not isinstance(ref, dict) or set(ref) != {"type", "object"} or ref["type"] != "Relationship"
                or not isinstance(ref["object"], list) or not ref["object"]
                or not all(isinstance(o, str) and o.startswith("urn:ngsi-ld:Device:") for o in ref["object"])):
            return f"bad refDevice {ref}"
    return None


def check_v2_entity(e: dict[str, Any]) -> str | None:
    """One entity of an NGSI-v2 batch update (normalised: every attribute has type and value)."""
    if set(e) - SENT_ATTRS:
        return f"unknown attributes {sorted(set(e) - SENT_ATTRS)}"
    ent_id = e.get("id")
    if (e.get("type") != "ParkingSpot" or not isinstance(ent_id, str) or not 1 <= len(ent_id) <= 256
            or V2_FORBIDDEN.search(ent_id)):
        return "bad id/type"
    st = e.get("status")
    if (not isinstance(st, dict) or set(st) != {"type", "value", "metadata"} or st["type"] != "Text"
            or st["value"] not in STATUSES or set(st["metadata"]) != {"timestamp"}
            or st["metadata"]["timestamp"].get("type") != "DateTime"
            or not ISO_Z.match(st["metadata"]["timestamp"].get("value", ""))):
        return f"bad status {st}"
    problem = _category_problem(e.get("category"), "StructuredValue")
    if problem:
        return problem
    if "location" in e:
        loc = e["location"]
        if not isinstance(loc, dict) or set(loc) != {"type", "value"} or loc["type"] != "geo:json":
            return f"bad location {loc}"
        problem = _point_problem(loc["value"])
        if problem:
            return problem
    if "refParkingSite" in e:
        ref = e["refParkingSite"]
        if (not isinstance(ref, dict) or set(ref) != {"type", "value"} or ref["type"] != "Relationship"
                or not isinstance(ref["value"], str) or V2_FORBIDDEN.search(ref["value"])):
            return f"bad refParkingSite {ref}"
    if "refDevice" in e:
        ref = e["refDevice"]
        if (not isinstance(ref, dict) or set(ref) != {"type", "value"} or ref["type"] != "Relationship"
                or not isinstance(ref["value"], list) or not ref["value"]
                or not all(isinstance(o, str) and not V2_FORBIDDEN.search(o) for o in ref["value"])):
            return f"bad refDevice {ref}"
    return None


class Broker:
    """Records every request; answers from a script of (status, body) or 204 by default.

    Keeps the entities like a broker would (upsert/append: create, or merge attributes into an
    existing one) and lists in ``nonconforming`` every stored entity the FIWARE model would
    reject (missing required attributes), e.g. one an upsert created from too little.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[Any] = []
        self.token = "s3cret"
        self.entities: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []

    def provision(self, ent_id: str, **attrs: Any) -> None:
        """An entity the city created in the broker beforehand (with location and site)."""
        self.entities[ent_id] = {"id": ent_id, "type": "ParkingSpot", **attrs}

    @property
    def nonconforming(self) -> dict[str, list[str]]:
        return {i: sorted(REQUIRED - set(e)) for i, e in self.entities.items() if REQUIRED - set(e)}

    def _store(self, entities: list[dict[str, Any]]) -> None:
        for e in entities:
            if e["id"] not in self.entities:
                self.created.append(e["id"])
            self.entities.setdefault(e["id"], {}).update(e)

    async def ld(self, req: web.Request) -> web.StreamResponse:
        body = await req.json()
        self.requests.append({"path": req.path_qs, "headers": dict(req.headers), "body": body})
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"title": "unauthorized"}, status=401)
        if dict(req.query) != {"options": "update"} or req.content_type != "application/json":
            return web.json_response({"title": "bad query or content type"}, status=400)
        link = req.headers.get("Link", "")
        if f"<{CTX}>" not in link or 'rel="http://www.w3.org/ns/json-ld#context"' not in link:
            return web.json_response({"title": "missing @context Link header"}, status=400)
        if not isinstance(body, list) or not body:
            return web.json_response({"title": "expected a non-empty array"}, status=400)
        for e in body:
            problem = check_ld_entity(e)
            if problem:
                return web.json_response({"title": problem}, status=400)
        if self.script:
            step = self.script.pop(0)
            resp = step(body) if callable(step) else web.Response(status=step)
            if resp.status < 300:
                self._store(body)
            return resp
        self._store(body)
        return web.Response(status=204)

    async def v2(self, req: web.Request) -> web.StreamResponse:
        body = await req.json()
        self.requests.append({"path": req.path_qs, "headers": dict(req.headers), "body": body})
        if req.query or req.content_type != "application/json" or "Link" in req.headers:
            return web.json_response({"error": "BadRequest", "description": "query/content type/Link"},
                                     status=400)
        if (not isinstance(body, dict) or set(body) != {"actionType", "entities"}
                or body["actionType"] != "append" or not isinstance(body["entities"], list) or not body["entities"]):
            return web.json_response({"error": "BadRequest", "description": "not an append batch"}, status=400)
        for e in body["entities"]:
            problem = check_v2_entity(e)
            if problem:
                return web.json_response({"error": "BadRequest", "description": problem}, status=400)
        self._store(body["entities"])
        return web.Response(status=204)


@pytest.fixture
async def broker() -> AsyncIterator[tuple[Broker, str]]:
    b = Broker()
    app = web.Application()
    app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", b.ld)
    app.router.add_post("/v2/op/update", b.v2)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield b, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
def buffer(tmp_path: Path):
    buf = Buffer(tmp_path / "buf.sqlite3", max_bytes=64 << 20)
    buf.open()
    yield buf
    buf.close()


def _park(spot: str, status: str, t: str, device: str = "70b3d50000000001"):
    return make_record("parking", "nwave", {"spot_id": spot, "status": status, "observed_at": t,
                                            "device": device, "data": {"x": 1}})


async def _run_until(loop: DeliveryLoop, cond, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    task = asyncio.create_task(loop.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not cond():
            assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_latest_state_per_spot_upserted_in_one_strict_batch(broker, buffer: Buffer) -> None:
    b, url = broker
    fwd = NgsiForwarder(NgsiLdForward(name="cb", url=url, context=CTX, token=b.token))
    buffer.register("cb", start="oldest")
    buffer.append(_park("city:spot:1", "free", "2026-11-25T10:00:00Z"))
    buffer.append(_park("city:spot:2", "occupied", "2026-11-25T10:00:01Z"))
    buffer.append(_park("city:spot:1", "occupied", "2026-11-25T10:00:02Z"))
    buffer.append(_park("urn:ngsi-ld:ParkingSpot:already", "closed", "2026-11-25T10:00:03Z"))
    loop = DeliveryLoop(buffer, fwd)
    await _run_until(loop, lambda: loop.acked == 4)
    assert len(b.requests) == 1
    ents = {e["id"]: e for e in b.requests[0]["body"]}
    assert set(ents) == {"urn:ngsi-ld:ParkingSpot:city:spot:1", "urn:ngsi-ld:ParkingSpot:city:spot:2",
                         "urn:ngsi-ld:ParkingSpot:already"}
    s1 = ents["urn:ngsi-ld:ParkingSpot:city:spot:1"]
    assert s1["status"] == {"type": "Property", "value": "occupied", "observedAt": "2026-11-25T10:00:02Z"}
    assert s1["refDevice"] == {"type": "Relationship", "object": ["urn:ngsi-ld:Device:70b3d50000000001"]}
    assert fwd.health()["put_aside"] == {}


async def test_5xx_is_retried_and_a_stale_late_state_never_overwrites(broker, buffer: Buffer) -> None:
    b, url = broker
    b.script = [503, 502]
    fwd = NgsiForwarder(NgsiLdForward(name="cb", url=url, context=CTX, token=b.token))
    buffer.register("cb", start="oldest")
    buffer.append(_park("s1", "occupied", "2026-11-25T10:00:05Z"))
    loop = DeliveryLoop(buffer, fwd, backoff_base=0.01, backoff_cap=0.05)
    await _run_until(loop, lambda: loop.acked == 1)
    assert len(b.requests) == 3 and loop.errors.get("http_503") == 1
    # The wall clock was stepped back since (a time source that ran ahead, corrected): the
    # next state carries an earlier observed_at but is the newer one, and is sent.
    buffer.append(_park("s1", "free", "2026-11-25T09:00:01Z"))
    await _run_until(loop, lambda: loop.acked == 2)
    assert len(b.requests) == 4 and fwd.health()["stale_skipped"] == 0
    assert b.requests[-1]["body"][0]["status"]["value"] == "free"


async def test_a_state_from_the_backlog_never_overwrites_a_newer_one(broker) -> None:
    b, url = broker
    fwd = NgsiForwarder(NgsiLdForward(name="cb", url=url, context=CTX, token=b.token))
    await fwd.connect()
    try:
        # live first: seq 9 is sent, then the backlog's seq 4 of the same spot arrives
        await fwd.send([(9, _park("s1", "occupied", "2026-11-25T10:00:05Z"))])
        await fwd.send([(4, _park("s1", "free", "2026-11-25T10:00:09Z"))])
        # in one batch, the highest seq wins whatever the stamps say
        await fwd.send([(12, _park("s2", "occupied", "2026-11-25T10:00:09Z")),
                        (11, _park("s2", "free", "2026-11-25T10:00:01Z"))])
    finally:
        await fwd.close()
    assert fwd.health()["stale_skipped"] == 1
    assert [e["status"]["value"] for r in b.requests for e in r["body"]] == ["occupied", "occupied"]


async def test_207_retries_only_retryable_entities_and_puts_aside_the_rest(broker, buffer: Buffer) -> None:
    b, url = broker

    def partial(body: list[dict[str, Any]]) -> web.Response:
        ids = [e["id"] for e in body]
        return web.json_response({"success": [ids[0]], "errors": [
            {"entityId": ids[1], "error": {"type": "https://uri.etsi.org/ngsi-ld/errors/InternalError",
                                           "title": "db down", "status": 503}},
            {"entityId": ids[2], "error": {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
                                           "title": "bad", "status": 400}}]}, status=207)

    b.script = [partial]
    fwd = NgsiForwarder(NgsiLdForward(name="cb", url=url, context=CTX, token=b.token))
    buffer.register("cb", start="oldest")
    for i in range(3):
        buffer.append(_park(f"s{i}", "free", f"2026-11-25T10:00:0{i}Z"))
    loop = DeliveryLoop(buffer, fwd, backoff_base=0.01, backoff_cap=0.05)
    await _run_until(loop, lambda: loop.acked == 3)
    assert [e["id"] for e in b.requests[1]["body"]] == ["urn:ngsi-ld:ParkingSpot:s1"]
    assert fwd.health()["put_aside"] == {"entity_400": 1}


async def test_missing_token_is_a_4xx_put_aside_not_a_blockage(broker, buffer: Buffer) -> None:
    b, url = broker
    fwd = NgsiForwarder(NgsiLdForward(name="cb", url=url, context=CTX))
    buffer.register("cb", start="oldest")
    buffer.append(_park("s1", "free", "2026-11-25T10:00:00Z"))
    buffer.append(_park("s2", "free", "2026-11-25T10:00:00Z"))
    loop = DeliveryLoop(buffer, fwd)
    await _run_until(loop, lambda: loop.acked == 2)
    assert fwd.health()["put_aside"] == {"http_401": 1}
    assert "Authorization" not in b.requests[0]["headers"]


async def test_ngsi_v2_update_with_fiware_service_headers(broker, buffer: Buffer) -> None:
    b, url = broker
    fwd = NgsiForwarder(NgsiLdForward(name="cb", url=url, api="ngsi-v2", service="wuppertal",
                                      service_path="/parking"))
    buffer.register("cb", start="oldest")
    buffer.append(_park("s1", "occupied", "2026-11-25T10:00:00Z"))
    loop = DeliveryLoop(buffer, fwd)
    await _run_until(loop, lambda: loop.acked == 1)
    req = b.requests[0]
    assert req["path"] == "/v2/op/update"
    assert (req["headers"]["Fiware-Service"], req["headers"]["Fiware-ServicePath"]) == ("wuppertal", "/parking")
    ent = req["body"]["entities"][0]
    assert ent["type"] == "ParkingSpot" and ent["status"]["value"] == "occupied"
    assert ent["status"]["metadata"]["timestamp"] == {"type": "DateTime", "value": "2026-11-25T10:00:00Z"}
    assert "Link" not in req["headers"]


SITE = "urn:ngsi-ld:OnStreetParking:wuppertal:friedrich-ebert-str"
LOC = [7.1507, 51.2562]


def _placed(spot: str, status: str, t: str) -> Record:
    return make_record("parking", "parking", {"spot_id": spot, "status": status, "observed_at": t,
                                              "device": "70b3d50000000001", "data": {},
                                              "category": "onStreet", "location": LOC,
                                              "parking_site": SITE})


async def test_ld_entity_has_every_attribute_the_parkingspot_model_requires(broker, buffer: Buffer) -> None:
    b, url = broker
    fwd = NgsiForwarder(NgsiLdForward(name="cb", url=url, context=CTX, token=b.token))
    buffer.register("cb", start="oldest")
    buffer.append(_placed("city:spot:7", "occupied", "2026-11-25T10:00:00Z"))
    loop = DeliveryLoop(buffer, fwd)
    await _run_until(loop, lambda: loop.acked == 1)
    ent = b.requests[0]["body"][0]
    assert ent["location"] == {"type": "GeoProperty", "value": {"type": "Point", "coordinates": LOC}}
    assert ent["refParkingSite"] == {"type": "Relationship", "object": SITE}
    assert ent["refDevice"] == {"type": "Relationship", "object": ["urn:ngsi-ld:Device:70b3d50000000001"]}
    assert b.created == ["urn:ngsi-ld:ParkingSpot:city:spot:7"]  # an upsert that created it ...
    assert b.nonconforming == {}  # ... and what it created is a valid ParkingSpot
    assert fwd.health()["spots_without_model_attrs"] == {}


async def test_v2_entity_has_every_attribute_the_parkingspot_model_requires(broker, buffer: Buffer) -> None:
    b, url = broker
    fwd = NgsiForwarder(NgsiLdForward(name="cb", url=url, api="ngsi-v2"))
    buffer.register("cb", start="oldest")
    buffer.append(_placed("city:spot:7", "free", "2026-11-25T10:00:00Z"))
    loop = DeliveryLoop(buffer, fwd)
    await _run_until(loop, lambda: loop.acked == 1)
    ent = b.requests[0]["body"]["entities"][0]
    assert ent["location"] == {"type": "geo:json", "value": {"type": "Point", "coordinates": LOC}}
    assert ent["refParkingSite"] == {"type": "Relationship", "value": SITE}
    assert ent["refDevice"] == {"type": "Relationship", "value": ["urn:ngsi-ld:Device:70b3d50000000001"]}
    assert ent["category"] == {"type": "StructuredValue", "value": ["onStreet"]}
    assert b.nonconforming == {} and fwd.health()["put_aside"] == {}


@pytest.mark.parametrize("api", ["ngsi-ld", "ngsi-v2"])
async def test_spot_without_location_updates_a_provisioned_entity_and_is_reported_once(
        broker, buffer: Buffer, api: str, caplog: pytest.LogCaptureFixture) -> None:
    b, url = broker
    b.provision("urn:ngsi-ld:ParkingSpot:known", location={}, refParkingSite={}, category={}, status={})
    fwd = NgsiForwarder(NgsiLdForward(name="cb", url=url, api=api, context=CTX, token=b.token))
    buffer.register("cb", start="oldest")
    buffer.append(_park("known", "free", "2026-11-25T10:00:00Z"))
    buffer.append(_park("new", "free", "2026-11-25T10:00:00Z"))
    loop = DeliveryLoop(buffer, fwd)
    with caplog.at_level(logging.WARNING, logger="gateway.forward.ngsi"):
        await _run_until(loop, lambda: loop.acked == 2)
        buffer.append(_park("known", "occupied", "2026-11-25T10:01:00Z"))
        await _run_until(loop, lambda: loop.acked == 3)
    sent = b.requests[0]["body"] if api == "ngsi-ld" else b.requests[0]["body"]["entities"]
    assert all("location" not in e and "refParkingSite" not in e for e in sent)  # never invented
    # The city's entity keeps its location and site: the update is fine.
    assert "urn:ngsi-ld:ParkingSpot:known" not in b.nonconforming
    # An upsert that had to create the entity leaves it non-conforming: that is reported.
    assert b.nonconforming == {"urn:ngsi-ld:ParkingSpot:new": ["location", "refParkingSite"]}
    health = fwd.health()["spots_without_model_attrs"]
    assert health == {"known": ["location", "refParkingSite"], "new": ["location", "refParkingSite"]}
    warnings = [r for r in caplog.records if "known" in r.getMessage()]
    assert len(warnings) == 1 and "parking.devices" in warnings[0].getMessage()


async def test_location_and_site_from_device_config_reach_the_broker(broker, buffer: Buffer,
                                                                     tmp_path: Path) -> None:
    from gateway.config import ParkingDevice, load_config_text
    from gateway.frames import b64encode
    from gateway.frames import build as B
    from gateway.parking.edge import EdgeParking
    from gateway.parking.encode import encode_status

    cfg = load_config_text(f'''[gateway]
eui = "b827ebfffe000001"
[[parking.devices]]
dev_eui = "70b3d50000000001"
model = "nwave/nps405"
spot_id = "city:spot:0001"
dev_addr = "26011234"
nwk_s_key = "000102030405060708090a0b0c0d0e0f"
app_s_key = "101112131415161718191a1b1c1d1e1f"
location = {LOC}
parking_site = "{SITE}"
''')
    dev: ParkingDevice = cfg.parking.devices[0]
    assert dev.location == tuple(LOC) and dev.parking_site == SITE
    edge = EdgeParking([dev], tmp_path, 3600.0, False, buffer.append)
    fport, payload = encode_status(dev.model, True)
    assert dev.dev_addr is not None and dev.nwk_s_key and dev.app_s_key
    phy = B.build_data_uplink(dev_addr=dev.dev_addr, fcnt=1, fport=fport, payload=payload,
                              nwk_s_key=dev.nwk_s_key, app_s_key=dev.app_s_key)
    b, url = broker
    fwd = NgsiForwarder(NgsiLdForward(name="cb", url=url, context=CTX, token=b.token))
    buffer.register("cb", start="oldest")
    edge.observe_uplink(make_record("uplink", "gwmp:0", {"gateway_eui": "b827ebfffe000001", "rxpk": {
        "tmst": 1, "freq": 868.1, "rssi": -100, "lsnr": 7.0, "size": len(phy), "data": b64encode(phy)}}))
    loop = DeliveryLoop(buffer, fwd)
    await _run_until(loop, lambda: loop.acked == 1)
    ent = b.entities["urn:ngsi-ld:ParkingSpot:city:spot:0001"]
    assert ent["status"]["value"] == "occupied"
    assert ent["location"]["value"]["coordinates"] == LOC
    assert ent["refParkingSite"]["object"] == SITE
    assert b.nonconforming == {}


@pytest.mark.parametrize(("api", "change"), [
    ("ld", {"refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:x"}}),  # not a list
    ("ld", {"location": {"type": "Property", "value": {"type": "Point", "coordinates": LOC}}}),
    ("ld", {"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [51.2, 97.1]}}}),
    ("ld", {"refParkingSite": {"type": "Property", "value": SITE}}),
    ("ld", {"@context": CTX}),
    ("ld", {"width": {"type": "Property", "value": 2.5}}),
    ("ld", {"category": {"type": "Property", "value": "onStreet"}}),
    ("v2", {"refDevice": {"type": "Relationship", "value": "urn:ngsi-ld:Device:x"}}),
    ("v2", {"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": LOC}}}),
    ("v2", {"refParkingSite": {"type": "Relationship", "object": SITE}}),
    ("v2", {"id": "urn:ngsi-ld:ParkingSpot:a b"}),
    ("v2", {"status": {"type": "Text", "value": "free"}}),
    ("v2", {"dateObserved": {"type": "DateTime", "value": "2026-11-25T10:00:00Z"}}),
])
def test_stand_in_brokers_reject_shapes_the_model_does_not_have(api: str, change: dict[str, Any]) -> None:
    from gateway.forward.ngsi import ld_entity, v2_entity

    body = {"spot_id": "s1", "status": "free", "observed_at": "2026-11-25T10:00:00Z",
            "device": "70b3d50000000001", "location": LOC, "parking_site": SITE}
    check, make = (check_ld_entity, ld_entity) if api == "ld" else (check_v2_entity, v2_entity)
    good = make(body)
    assert check(good) is None and set(good) >= REQUIRED
    assert check({**good, **change}) is not None
