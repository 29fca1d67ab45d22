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
        self.raws: list[bytes] = []

    async def handle(self, req: web.Request) -> web.Response:
        raw = await req.read()
        self.raws.append(raw)
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


async def test_failed_request_is_retried_byte_for_byte_before_records_that_arrived_meanwhile(
        hook, buffer: Buffer) -> None:
    h, url = hook
    h.script = [503]
    fwd = HttpForwarder(HttpForward(name="wh", url=url), gateway_eui=GW)
    buffer.register("wh", start="oldest")
    _fill(buffer, 3)  # tmst 0..2
    slept = asyncio.Event()

    async def sleep_and_append(delay: float) -> None:
        if not slept.is_set():
            slept.set()
            for i in range(3, 5):  # live records arrive during the backoff
                buffer.append(make_record("uplink", "gwmp", {"gateway_eui": "0102030405060708",
                                                             "rxpk": {"tmst": i, "data": "QAE="}}))
        await asyncio.sleep(0)

    loop = DeliveryLoop(buffer, fwd, sleep=sleep_and_append)
    await _run_until(loop, lambda: loop.acked == 5)
    tmsts = [[r["body"]["rxpk"]["tmst"] for r in q["body"]["records"]] for q in h.requests]
    keys = [q["headers"]["Idempotency-Key"] for q in h.requests]
    assert tmsts == [[0, 1, 2], [0, 1, 2], [3, 4]]
    assert h.raws[1] == h.raws[0] and keys[1] == keys[0]  # the receiver can deduplicate the retry
    assert keys[2] != keys[0]
    assert fwd.health()["retry_pending"] is None
    assert buffer.cursor_lag("wh")[0] == 0


async def test_retry_of_an_outage_is_identical_even_when_the_next_batch_is_cut_differently(
        hook, buffer: Buffer) -> None:
    """live_first hands out half live, half backlog after an outage: the retry still repeats
    the failed request exactly; its records coming back later are acknowledged without resending."""
    h, url = hook
    h.script = [503, 503]
    fwd = HttpForwarder(HttpForward(name="wh", url=url, max_batch=4), gateway_eui=GW)
    buffer.register("wh", start="oldest")
    _fill(buffer, 4)  # tmst 0..3
    appended = 0

    async def sleep_and_append(delay: float) -> None:
        nonlocal appended
        if appended < 6:
            for i in range(4 + appended, 7 + appended):
                buffer.append(make_record("uplink", "gwmp", {"gateway_eui": "0102030405060708",
                                                             "rxpk": {"tmst": i, "data": "QAE="}}))
            appended += 3
        await asyncio.sleep(0)

    loop = DeliveryLoop(buffer, fwd, max_batch=4, sleep=sleep_and_append)
    await _run_until(loop, lambda: loop.acked == 10)
    tmsts = [[r["body"]["rxpk"]["tmst"] for r in q["body"]["records"]] for q in h.requests]
    keys = [q["headers"]["Idempotency-Key"] for q in h.requests]
    assert tmsts[:3] == [[0, 1, 2, 3]] * 3 and len(set(keys[:3])) == 1
    sent = [t for batch in tmsts[3:] for t in batch]
    assert sorted(sent) == list(range(4, 10))  # every other record exactly once, none of 0..3 again
    assert all(b == sorted(b) for b in tmsts)  # in sequence order within a request
    assert len(set(keys)) == len(keys) - 2


async def test_put_aside_records_are_kept_in_a_private_capped_file_after_the_cursor_moved(
        hook, buffer: Buffer, tmp_path: Path) -> None:
    from gateway.forward.http import read_put_aside

    h, url = hook
    h.script = [422, 200, 400]
    fwd = HttpForwarder(HttpForward(name="wh", url=url, max_batch=3, dead_letter_max=1200), gateway_eui=GW)
    buffer.register("wh", start="oldest")
    _fill(buffer, 9)
    loop = DeliveryLoop(buffer, fwd, max_batch=3)
    await _run_until(loop, lambda: loop.acked == 9)
    assert buffer.cursor_lag("wh")[0] == 0  # nothing blocks: the cursor moved past the rejects
    path = tmp_path / "http-wh.rejected.jsonl"
    assert (path.stat().st_mode & 0o777) == 0o600
    kept = read_put_aside(path)
    assert path.stat().st_size <= 1200  # the cap holds
    health = fwd.health()["put_aside_file"]
    assert health["path"] == str(path)
    assert health["records"] == len(kept) and health["not_kept"] == 6 - len(kept)
    rejected = [[r["body"]["rxpk"]["tmst"] for r in h.requests[i]["body"]["records"]] for i in (0, 2)]
    assert len(kept) >= 3  # the whole first rejected batch fits, the second only in part
    assert [k["record"]["body"]["rxpk"]["tmst"] for k in kept] == (rejected[0] + rejected[1])[:len(kept)]
    first = kept[0]
    assert first["status"] == 422 and first["response"] == "nope"
    assert first["batch_id"] == h.requests[0]["headers"]["Idempotency-Key"]
    assert first["record"]["kind"] == "uplink" and first["record"]["body"]["raw"] == "0001"
    assert kept[-1]["status"] == 400
    # a restart counts what is there against the cap
    again = HttpForwarder(HttpForward(name="wh", url=url, dead_letter_max=1200), gateway_eui=GW)
    again.data_dir = tmp_path
    await again.connect()
    await again.close()
    assert again.health()["put_aside_file"]["records"] == len(kept)


def test_url_credentials_and_query_never_reach_status_or_errors() -> None:
    from gateway.config import HttpForward, NgsiLdForward
    from gateway.config_values import safe_url
    from gateway.forward.http import HttpForwarder
    from gateway.forward.ngsi import NgsiForwarder

    url = "https://city:hunter2@platform.example.org:8443/ingest?api_key=SECRETKEY&v=2"
    assert safe_url(url) == "https://***@platform.example.org:8443/ingest?api_key=***&v=***"
    fwd = HttpForwarder(HttpForward(name="p", url=url), gateway_eui=1)
    shown = repr(fwd.health())
    assert "hunter2" not in shown and "SECRETKEY" not in shown and "city:" not in shown
    assert "platform.example.org:8443/ingest" in shown
    ngsi = NgsiForwarder(NgsiLdForward(name="n", url="https://u:pw@broker.example.org/?token=T0K"))
    shown = repr(ngsi.health())
    assert ":pw@" not in shown and "T0K" not in shown and "broker.example.org" in shown


async def test_http_forwarder_is_not_connected_until_the_backend_answers(tmp_path: Any) -> None:
    """The status page said "connected" for an HTTP backend with nothing listening."""
    import asyncio
    import socket

    from gateway.buffer import Buffer
    from gateway.config import HttpForward
    from gateway.forward.base import DeliveryLoop
    from gateway.forward.http import HttpForwarder
    from gateway.records import make_record

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: nothing listens there
    buf = Buffer(tmp_path / "buffer.sqlite3", max_bytes=1 << 20)
    buf.open()
    fwd = HttpForwarder(HttpForward(name="p", url=f"http://127.0.0.1:{dead}/ingest"), gateway_eui=1)
    loop = DeliveryLoop(buf, fwd, backoff_base=0.05, backoff_cap=0.1)
    buf.register("p", start="oldest")
    task = asyncio.create_task(loop.run())
    try:
        assert loop.health()["connected"] is False  # before anything
        buf.append(make_record("uplink", "gwmp:0", {"gateway_eui": "01", "rxpk": {"data": "QA=="}}))
        deadline = asyncio.get_running_loop().time() + 5
        while not (loop.errors and loop.connected):  # failed once, session open again
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.001)
        health = loop.health()
        assert health["connection_open"] is True
        assert health["connected"] is False  # a session is not an answer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        buf.close()
