"""NGSI-LD / v2 forwarder against an aiohttp context-broker stand-in that checks the FIWARE model strictly."""

from __future__ import annotations

import asyncio
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
from gateway.records import make_record

CTX = "https://example.org/parking-context.jsonld"
STATUSES = {"free", "occupied", "closed", "unknown"}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
# Attributes of the smart-data-models ParkingSpot model (the subset a client may send).
MODEL_ATTRS = {"id", "type", "status", "category", "refDevice", "refParkingSite", "location",
               "name", "description", "dateObserved"}


def check_ld_entity(e: dict[str, Any]) -> str | None:
    if set(e) - MODEL_ATTRS:
        return f"unknown attributes {sorted(set(e) - MODEL_ATTRS)}"
    if e.get("type") != "ParkingSpot" or not str(e.get("id", "")).startswith("urn:ngsi-ld:ParkingSpot:"):
        return "bad id/type"
    st = e.get("status")
    if not isinstance(st, dict) or set(st) != {"type", "value", "observedAt"} or st["type"] != "Property" \
            or st["value"] not in STATUSES or not ISO_Z.match(st["observedAt"]):
        return f"bad status {st}"
    cat = e.get("category")
    if cat != {"type": "Property", "value": cat.get("value")} or not set(cat["value"]) <= {"onStreet", "offStreet"} \
            or not isinstance(cat["value"], list):
        return f"bad category {cat}"
    ref = e.get("refDevice")
    if ref is not None and (set(ref) != {"type", "object"} or ref["type"] != "Relationship"
                            or not ref["object"].startswith("urn:ngsi-ld:Device:")):
        return f"bad refDevice {ref}"
    return None


class Broker:
    """Records every request; answers from a script of (status, body) or 204 by default."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[Any] = []
        self.token = "s3cret"

    async def ld(self, req: web.Request) -> web.StreamResponse:
        body = await req.json()
        self.requests.append({"path": req.path_qs, "headers": dict(req.headers), "body": body})
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"title": "unauthorized"}, status=401)
        if req.query.get("options") != "update" or req.content_type != "application/json":
            return web.json_response({"title": "bad query or content type"}, status=400)
        link = req.headers.get("Link", "")
        if f"<{CTX}>" not in link or 'rel="http://www.w3.org/ns/json-ld#context"' not in link:
            return web.json_response({"title": "missing @context Link header"}, status=400)
        if not isinstance(body, list):
            return web.json_response({"title": "expected an array"}, status=400)
        for e in body:
            problem = check_ld_entity(e)
            if problem:
                return web.json_response({"title": problem}, status=400)
        if self.script:
            step = self.script.pop(0)
            return step(body) if callable(step) else web.Response(status=step)
        return web.Response(status=204)

    async def v2(self, req: web.Request) -> web.StreamResponse:
        body = await req.json()
        self.requests.append({"path": req.path_qs, "headers": dict(req.headers), "body": body})
        if body.get("actionType") != "append" or not isinstance(body.get("entities"), list):
            return web.json_response({"error": "BadRequest"}, status=400)
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
    assert s1["refDevice"]["object"] == "urn:ngsi-ld:Device:70b3d50000000001"
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
    buffer.append(_park("s1", "free", "2026-11-25T10:00:01Z"))  # older, from a backlog
    await _run_until(loop, lambda: loop.acked == 2)
    assert len(b.requests) == 3 and fwd.health()["stale_skipped"] == 1


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
