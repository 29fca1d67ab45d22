"""The JSON Lines sink behind the demo: every record lands as one readable line, once acked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.buffer import Buffer
from gateway.config import FileForward
from gateway.forward.base import DeliveryLoop
from gateway.forward.file import FileForwarder
from gateway.records import make_record


async def _until(cond, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def buffer(tmp_path: Path):
    buf = Buffer(tmp_path / "buf.sqlite3", max_bytes=64 << 20)
    buf.open()
    yield buf
    buf.close()


async def test_records_arrive_as_json_lines_with_bytes_as_hex(tmp_path: Path, buffer: Buffer) -> None:
    out = tmp_path / "sink" / "forwarded.jsonl"
    fwd = FileForwarder(FileForward(name="sink", path=out))
    buffer.register("sink", start="oldest")
    loop = DeliveryLoop(buffer, fwd)
    task = asyncio.create_task(loop.run())
    buffer.append(make_record("parking", "sim", {
        "spot_id": "s1", "status": "occupied", "observed_at": "2026-01-01T00:00:00Z",
        "device": "70b3d5000000000a", "data": {"raw": b"\x01\xff"}}, received_us=1_700_000_000_000_000))
    for i in range(300):
        buffer.append(make_record("uplink", "gwmp", {"gateway_eui": "0102030405060708",
                                                     "rxpk": {"data": "QAEC", "tmst": i}}))
    await _until(lambda: len(_lines(out)) == 301)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    lines = _lines(out)
    first = lines[0]
    assert first["kind"] == "parking" and first["source"] == "sim"
    assert first["received_us"] == 1_700_000_000_000_000
    assert first["body"]["data"]["raw"] == "01ff"
    assert [x["body"]["rxpk"]["tmst"] for x in lines[1:]] == list(range(300))
    assert [x["seq"] for x in lines] == sorted(x["seq"] for x in lines)


async def test_kind_filter_and_restart_appends_without_loss(tmp_path: Path, buffer: Buffer) -> None:
    out = tmp_path / "f.jsonl"
    cfg = FileForward(name="sink", path=out, kinds=("parking",))
    buffer.register("sink", start="oldest")
    for i in range(5):
        buffer.append(make_record("uplink", "g", {"gateway_eui": "00", "rxpk": {"data": ""}}))
        buffer.append(make_record("parking", "p", {"spot_id": f"s{i}", "status": "free"}))
    loop = DeliveryLoop(buffer, FileForwarder(cfg))
    task = asyncio.create_task(loop.run())
    await _until(lambda: len(_lines(out)) == 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    buffer.append(make_record("parking", "p", {"spot_id": "s5", "status": "free"}))
    task = asyncio.create_task(DeliveryLoop(buffer, FileForwarder(cfg)).run())
    await _until(lambda: len(_lines(out)) == 6)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [x["body"]["spot_id"] for x in _lines(out)] == [f"s{i}" for i in range(6)]
    assert {x["kind"] for x in _lines(out)} == {"parking"}


async def test_unwritable_path_is_reported_and_nothing_is_acked(tmp_path: Path, buffer: Buffer) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    fwd = FileForwarder(FileForward(name="sink", path=blocker / "out.jsonl"))
    buffer.register("sink", start="oldest")
    buffer.append(make_record("event", "t", {"event": "x", "detail": {}}))
    loop = DeliveryLoop(buffer, fwd, backoff_base=0.01, backoff_cap=0.02)
    task = asyncio.create_task(loop.run())
    await _until(lambda: loop.errors.get("open", 0) >= 2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert loop.acked == 0
    assert "not-a-dir" in (loop.last_error or "")
