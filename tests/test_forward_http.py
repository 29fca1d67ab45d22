"""HTTP webhook forwarder against an aiohttp webhook on 127.0.0.1: shapes, retries, idempotency, put-aside."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from aiohttp import web

from gateway.buffer import Buffer
from gateway.config import HttpForward
from gateway.forward.base import DeliveryLoop
from gateway.forward.http import HttpForwarder
from gateway.records import make_record

GW = 0x0102030405060708


class Hook:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[Any] = []  # status codes or (status, headers)
        self.times: list[float] = []

    async def handle(self, req: web.Request) -> web.Response:
        raw = await req.read()
        body = cbor2.loads(raw) if req.content_type == "application/cbor" else json.loads(raw)
        self.requests.append({"headers": dict(req.headers), "body": body})
        self.times.append(time.monotonic())
        step = self.script.pop(0) if self.script else 200
        status, headers = step if isinstance(step, tuple) else (step, {})
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "nope")


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Hook, str]]:
    h = Hook()
    app = web.Application()
    app.router.add_post("/ingest", h.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield h, f"http://127.0.0.1:{port}/ingest"
    await runner.cleanup()


@pytest.fixture
def buffer(tmp_path: Path):
    buf = Buffer(tmp_path / "buf.sqlite3", max_bytes=64 << 20)
    buf.open()
    yield buf
    buf.close()


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


def _fill(buffer: Buffer, n: int) -> None:
    for i in range(n):
        buffer.append(make_record("uplink", "gwmp", {"gateway_eui": "0102030405060708",
                                                     "rxpk": {"tmst": i, "data": "QAE="}, "raw": b"\x00\x01"}))


@pytest.mark.parametrize("fmt", ["json", "cbor"])
async def test_batches_carry_id_records_and_token(hook, buffer: Buffer, fmt: str) -> None:
    h, url = hook
    fwd = HttpForwarder(HttpForward(name="wh", url=url, format=fmt, token="t0k"), gateway_eui=GW)
    buffer.register("wh", start="oldest")
    _fill(buffer, 5)
    loop = DeliveryLoop(buffer, fwd)
    await _run_until(loop, lambda: loop.acked == 5)
    req = h.requests[0]
    assert req["headers"]["Authorization"] == "Bearer t0k"
    assert req["headers"]["Idempotency-Key"] == req["body"]["batch_id"]
    assert req["body"]["gateway_eui"] == "0102030405060708"
    recs = req["body"]["records"]
    assert [r["body"]["rxpk"]["tmst"] for r in recs] == list(range(5))
    assert recs[0]["kind"] == "uplink"
    assert recs[0]["body"]["raw"] == (b"\x00\x01" if fmt == "cbor" else "0001")


async def test_429_and_5xx_retry_the_same_batch_id_honouring_retry_after(hook, buffer: Buffer) -> None:
    h, url = hook
    h.script = [(429, {"Retry-After": "1"}), 503]
    fwd = HttpForwarder(HttpForward(name="wh", url=url), gateway_eui=GW)
    buffer.register("wh", start="oldest")
    _fill(buffer, 3)
    loop = DeliveryLoop(buffer, fwd, backoff_base=0.01, backoff_cap=0.02)
    await _run_until(loop, lambda: loop.acked == 3)
    keys = [r["headers"]["Idempotency-Key"] for r in h.requests]
    assert len(keys) == 3 and len(set(keys)) == 1
    assert h.times[1] - h.times[0] >= 0.95  # waited as told
    assert loop.errors == {"http_429": 1, "http_503": 1}


async def test_other_4xx_is_put_aside_counted_and_does_not_block(hook, buffer: Buffer) -> None:
    h, url = hook
    h.script = [422]
    fwd = HttpForwarder(HttpForward(name="wh", url=url, max_batch=2), gateway_eui=GW)
    buffer.register("wh", start="oldest")
    _fill(buffer, 4)
    loop = DeliveryLoop(buffer, fwd, max_batch=2)
    await _run_until(loop, lambda: loop.acked == 4)
    health = fwd.health()
    assert health["rejected_by_status"] == {"422": 1}
    assert health["rejected"][0]["records"] == 2 and health["rejected"][0]["response"] == "nope"
    sent = [r["body"]["rxpk"]["tmst"] for q in h.requests for r in q["body"]["records"]]
    assert sorted(sent) == [0, 1, 2, 3]  # the rejected batch was never retried; the rest went on
    assert len(h.requests) == 2


async def test_unreachable_webhook_times_out_and_nothing_is_acked(buffer: Buffer) -> None:
    async def slow(req: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        fwd = HttpForwarder(HttpForward(name="wh", url=f"http://127.0.0.1:{port}/", timeout=0.2), gateway_eui=GW)
        buffer.register("wh", start="oldest")
        _fill(buffer, 1)
        loop = DeliveryLoop(buffer, fwd, backoff_base=0.01, backoff_cap=0.02)
        await _run_until(loop, lambda: loop.errors.get("timeout", 0) >= 2)
        assert loop.acked == 0
    finally:
        await runner.cleanup()
