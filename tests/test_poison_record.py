"""One record a forwarder can never encode must not block the records behind it (issue: a
627-byte datagram whose `stat` nests 300 levels stopped the HTTP and file forwarders forever)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.buffer import Buffer
from gateway.config import FileForward, HttpForward
from gateway.forward.base import DeliveryLoop
from gateway.forward.file import FileForwarder
from gateway.forward.http import HttpForwarder
from gateway.records import Record, make_record


def nested(depth: int) -> Any:
    obj: Any = {"x": 1}
    for _ in range(depth):
        obj = {"n": obj}
    return obj


def uplinks(buffer: Buffer, first: int, n: int) -> None:
    for i in range(first, first + n):
        buffer.append(make_record("uplink", "gwmp:0", {"gateway_eui": "0102030405060708",
                                                       "rxpk": {"data": "QAEC", "tmst": i}}))


def poison() -> Record:
    # the stat of a hostile datagram: deeper than any JSON encoder will go
    return make_record("stats", "gwmp:0", {"gateway_eui": "0102030405060708", "stat": nested(300)})


async def _until(cond: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def buffer(tmp_path: Path) -> Any:
    buf = Buffer(tmp_path / "buffer.sqlite3", max_bytes=64 << 20)
    buf.open()
    yield buf
    buf.close()


def set_aside_lines(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / f"{name}.set-aside.jsonl"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    return [json.loads(x) for x in path.read_text().splitlines()]


async def test_file_forwarder_sets_a_poison_record_aside_and_delivers_the_rest(
        tmp_path: Path, buffer: Buffer) -> None:
    out = tmp_path / "forwarded.jsonl"
    buffer.register("sink", start="oldest")
    uplinks(buffer, 0, 150)
    bad_seq = buffer.append(poison())
    uplinks(buffer, 150, 150)
    loop = DeliveryLoop(buffer, FileForwarder(FileForward(name="sink", path=out)), max_batch=64)
    task = asyncio.create_task(loop.run())
    try:
        await _until(lambda: out.exists() and len(out.read_text().splitlines()) == 300)
        await _until(lambda: loop.set_aside == 1)
        # the last batch is in the file before its ack: wait for the ack, then stop
        await _until(lambda: buffer.cursor_lag("sink")[0] == 0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    tmsts = [json.loads(x)["body"]["rxpk"]["tmst"] for x in out.read_text().splitlines()]
    assert sorted(tmsts) == list(range(300))  # every good record, once
    [kept] = set_aside_lines(tmp_path, "sink")
    assert kept["seq"] == bad_seq and kept["kind"] == "stats"
    assert bytes.fromhex(kept["body_cbor_hex"]) == poison().body  # kept whole, for export
    assert "Recursion" in kept["reason"] or "recursion" in kept["reason"]
    assert loop.health()["set_aside"] == 1
    assert buffer.cursor_lag("sink")[0] == 0  # nothing left owed: it never blocks a restart


async def test_http_forwarder_sets_a_poison_record_aside_and_delivers_the_rest(
        tmp_path: Path, buffer: Buffer) -> None:
    got: list[int] = []

    async def ingest(request: web.Request) -> web.Response:
        body = await request.json()
        got.extend(r["body"]["rxpk"]["tmst"] for r in body["records"])
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/ingest", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        buffer.register("platform", start="oldest")
        uplinks(buffer, 0, 40)
        buffer.append(poison())
        uplinks(buffer, 40, 40)
        fwd = HttpForwarder(HttpForward(name="platform", url=f"http://127.0.0.1:{port}/ingest"),
                            gateway_eui=0x0102030405060708)
        loop = DeliveryLoop(buffer, fwd, max_batch=32)
        task = asyncio.create_task(loop.run())
        try:
            await _until(lambda: len(got) >= 80 and loop.set_aside == 1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await runner.cleanup()
    assert sorted(set(got)) == list(range(80))
    assert len(set_aside_lines(tmp_path, "platform")) == 1
