"""Modbus RTU detectors on a pseudo-terminal: state changes, CRC errors, line noise, silence,
unplug/replug."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU

from drivers.modbus import ModbusPoller, WiredReading, WiredUnit
from drivers.modbus_rtu import (
    RtuCrcError,
    RtuError,
    RtuException,
    RtuTimeout,
    crc16,
    decode_read_reply,
    encode_read_request,
    read_registers,
)
from drivers.serial_link import Backoff, SerialConnection
from drivers.sim.serial_units import LineFault, SimModbusUnit

UNITS = [
    WiredUnit(unit=1, spot_id="spot:0001", register=0),
    WiredUnit(unit=2, spot_id="spot:0002", register=7, occupied_values=(2, 3), function="input"),
]


async def wait_for(pred: Callable[[], bool], limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(poller: ModbusPoller) -> AsyncIterator[None]:
    task = asyncio.create_task(poller.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make(sim: SimModbusUnit, readings: list[WiredReading], **kw: float) -> ModbusPoller:
    args: dict[str, float] = {"poll_interval": 0.03, "timeout": 0.1, "unknown_after": 0.5}
    args.update(kw)
    return ModbusPoller(
        sim.port,
        9600,
        UNITS,
        retries=1,
        on_reading=readings.append,
        backoff=Backoff(initial=0.02, maximum=0.1),
        **args,
    )


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimModbusUnit]:
    s = SimModbusUnit(str(tmp_path / "ttyUSB0"), units=(1, 2))
    await s.start()
    s.set_register(1, 0, 0)
    s.set_register(2, 7, 1, function="input")
    yield s
    await s.close()


def test_crc_matches_pymodbus() -> None:
    for n in range(1, 40):
        data = os.urandom(n)
        assert crc16(data).to_bytes(2, "little") == FramerRTU.compute_CRC(data).to_bytes(2, "big")
    # Worked example from the Modbus over serial line guide: 01 03 00 00 00 01 -> 84 0A.
    assert encode_read_request(1, 3, 0, 1).hex() == "010300000001840a"


def test_reply_decoding_rejects_what_it_must() -> None:
    good = bytes([1, 3, 2, 0, 1])
    good += crc16(good).to_bytes(2, "little")
    assert decode_read_reply(good, 1, 3, 1) == [1]
    with pytest.raises(RtuCrcError, match="CRC mismatch"):
        decode_read_reply(good[:-1] + bytes([good[-1] ^ 1]), 1, 3, 1)
    with pytest.raises(RtuError, match="unit 1 while asking unit 2"):
        decode_read_reply(good, 2, 3, 1)
    exc = bytes([1, 0x83, 2])
    exc += crc16(exc).to_bytes(2, "little")
    with pytest.raises(RtuException, match="illegal data address") as info:
        decode_read_reply(exc, 1, 3, 1)
    assert info.value.code == 2


async def test_occupancy_changes_reach_on_reading(sim: SimModbusUnit) -> None:
    readings: list[WiredReading] = []
    poller = make(sim, readings)
    async with running(poller):
        await wait_for(lambda: len(readings) >= 2)
        assert {(r.spot_id, r.status, r.value) for r in readings} == {
            ("spot:0001", "free", 0),
            ("spot:0002", "free", 1),
        }
        sim.set_register(1, 0, 1)
        sim.set_register(2, 7, 3, function="input")
        await wait_for(lambda: len(readings) >= 4)
        assert {(r.spot_id, r.status, r.value) for r in readings[2:]} == {
            ("spot:0001", "occupied", 1),
            ("spot:0002", "occupied", 3),
        }
        await asyncio.sleep(0.2)
        assert len(readings) == 4  # unchanged values are not re-announced
    health = poller.health()
    assert health["connected"] is False  # closed after cancel
    assert all(u["ok"] > 0 and u["crc_errors"] == 0 for u in health["units"])
    assert readings[-1].observed_us > 0


async def test_crc_errors_are_counted_and_never_taken_as_values(sim: SimModbusUnit) -> None:
    readings: list[WiredReading] = []
    poller = make(sim, readings, unknown_after=30)
    async with running(poller):
        await wait_for(lambda: len(readings) >= 2)
        sim.corrupt_crc.add(1)
        sim.set_register(1, 0, 1)  # the occupied value only ever travels with a bad CRC
        await wait_for(lambda: poller.health()["units"][0]["crc_errors"] >= 4)
        assert [r.status for r in readings if r.unit == 1] == ["free"]
        unit1 = poller.health()["units"][0]
        assert "CRC mismatch" in unit1["last_error"]
        assert unit1["timeouts"] == 0  # told apart from silence, unlike pymodbus 3.x
        sim.corrupt_crc.clear()
        await wait_for(lambda: [r.status for r in readings if r.unit == 1] == ["free", "occupied"])
        assert poller.health()["units"][1]["crc_errors"] == 0


async def test_silent_unit_becomes_unknown_after_unknown_after(sim: SimModbusUnit) -> None:
    readings: list[WiredReading] = []
    poller = make(sim, readings, unknown_after=0.4)
    async with running(poller):
        await wait_for(lambda: len(readings) >= 2)
        loop = asyncio.get_running_loop()
        sim.silent.add(2)
        t0 = loop.time()
        await wait_for(lambda: any(r.status == "unknown" for r in readings))
        elapsed = loop.time() - t0
        assert 0.3 <= elapsed < 1.5
        unknown = [r for r in readings if r.status == "unknown"]
        assert [(r.spot_id, r.value) for r in unknown] == [("spot:0002", None)]
        assert poller.health()["units"][1]["timeouts"] >= 2
        sim.silent.clear()
        await wait_for(
            lambda: readings[-1].spot_id == "spot:0002" and readings[-1].status == "free"
        )


async def test_unplug_and_replug_reconnects_by_itself(sim: SimModbusUnit) -> None:
    readings: list[WiredReading] = []
    poller = make(sim, readings, unknown_after=0.4)
    async with running(poller):
        await wait_for(lambda: len(readings) >= 2)
        sim.unplug()
        # Units turn unknown while the adapter is gone, and the link counts its retries.
        await wait_for(lambda: sum(r.status == "unknown" for r in readings) == 2)
        await wait_for(lambda: poller.health()["open_failures"] >= 2)
        health = poller.health()
        assert health["connected"] is False and health["disconnects"] >= 1
        sim.set_register(1, 0, 1)
        sim.replug()
        await wait_for(
            lambda: (
                {(r.spot_id, r.status) for r in readings[-2:]}
                == {("spot:0001", "occupied"), ("spot:0002", "free")}
            )
        )
        assert poller.health()["opens"] == 2
        assert poller.health()["connected"] is True


def rtu_reply(unit: int, function: int, *values: int) -> bytes:
    body = bytes([unit, function, 2 * len(values)]) + b"".join(v.to_bytes(2, "big") for v in values)
    return body + crc16(body).to_bytes(2, "little")


class ChunkedLine:
    """Stands in for a SerialConnection: hands out pre-cut chunks, then silence."""

    def __init__(self, chunks: list[bytes], stray: bytes = b"") -> None:
        self.chunks = list(chunks)
        self.stray = stray
        self.written: list[bytes] = []

    def discard_input(self) -> int:
        n, self.stray = len(self.stray), b""
        return n

    def write(self, data: bytes) -> None:
        self.written.append(data)

    async def read(self, wait: float | None = None) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        await asyncio.sleep(min(wait or 0.0, 0.001))
        return b""


def transact(line: ChunkedLine, timeout: float = 0.05) -> object:
    async def go() -> object:
        conn: SerialConnection = line  # type: ignore[assignment]
        return await read_registers(conn, 1, 3, 0, 1, timeout, quiet=0.01)

    return asyncio.run(go())


# Noise that looks like the start of a reply to unit 1 (01 03 02 ...) is the hard case.
noise = st.binary(max_size=40) | st.just(b"\x01\x03\x02\x00") | st.just(b"\x01\x83")


@settings(max_examples=300, deadline=None)
@given(before=noise, after=st.binary(max_size=10), cuts=st.lists(st.integers(1, 60), max_size=6),
       value=st.integers(0, 0xFFFF))
def test_reply_is_found_behind_any_noise_in_any_chunking(
    before: bytes, after: bytes, cuts: list[int], value: int
) -> None:
    stream = before + rtu_reply(1, 3, value) + after
    chunks, at = [], 0
    for size in [*cuts, len(stream)]:
        if at < len(stream):
            chunks.append(stream[at : at + size])
            at += size
    line = ChunkedLine(chunks, stray=b"\xaa\xbb")
    reply = transact(line)
    assert reply.values == [value]  # type: ignore[attr-defined]
    assert reply.stray == 2  # type: ignore[attr-defined]
    assert line.written == [encode_read_request(1, 3, 0, 1)]


def test_what_the_line_brought_instead_of_a_reply_is_named() -> None:
    good = rtu_reply(1, 3, 1)
    with pytest.raises(RtuTimeout):
        transact(ChunkedLine([]))
    with pytest.raises(RtuCrcError, match="CRC mismatch") as crc:
        transact(ChunkedLine([b"\x00\x17" + good[:4] + b"\x01" + good[4:]]))
    assert crc.value.skipped == 10  # every byte that came was unusable
    with pytest.raises(RtuError, match="incomplete reply") as partial:
        transact(ChunkedLine([b"\xff" + good[:5]]))
    assert partial.value.kind == "frame_errors"
    with pytest.raises(RtuError, match="line noise") as junk:
        transact(ChunkedLine([b"\x00\xff~~noise~~"]))
    assert junk.value.kind == "frame_errors"
    with pytest.raises(RtuError, match="unit 2 while asking unit 1"):
        transact(ChunkedLine([rtu_reply(2, 3, 1)]))


async def test_noise_around_replies_is_skipped_and_values_still_read(
    sim: SimModbusUnit,
) -> None:
    readings: list[WiredReading] = []
    poller = make(sim, readings, unknown_after=30)
    async with running(poller):
        await wait_for(lambda: len(readings) >= 2)
        # From now on every reply of both units comes wrapped in noise: nothing gets
        # through unless the poller hunts for the frame inside what it receives.
        sim.inject(1, LineFault(before=b"\x00\xff\x55\x01\x03\x02\x00", after=b"\xfe"), 10_000)
        sim.inject(2, LineFault(stutter=4), 10_000)
        sim.set_register(1, 0, 1)
        sim.set_register(2, 7, 3, function="input")
        await wait_for(lambda: {(r.spot_id, r.status) for r in readings[2:]} == {
            ("spot:0001", "occupied"), ("spot:0002", "occupied"),
        })
        before = poller.health()
        stray_before = before["stray_bytes"] + sum(u["noise_bytes"] for u in before["units"])
        for _ in range(5):
            sim.write_noise(b"\xaa\x55" * 4)  # a babbling node between polls
            await asyncio.sleep(0.02)
        await wait_for(lambda: sim.faults_sent >= 20)
        sim.set_register(1, 0, 0)
        await wait_for(lambda: readings[-1].spot_id == "spot:0001" and readings[-1].status == "free")
    health = poller.health()
    unit1, unit2 = health["units"]
    assert unit1["noise_bytes"] >= 8 * 5 and unit2["noise_bytes"] >= 4 * 5
    assert health["stray_bytes"] + unit1["noise_bytes"] + unit2["noise_bytes"] >= stray_before + 40
    for u in (unit1, unit2):
        # Every poll read its value through the noise: no retry, no error of any kind
        # (one poll may have been in flight when the poller was cancelled).
        assert u["polls"] - u["ok"] <= 1 and u["ok"] >= 10
        assert u["crc_errors"] == u["frame_errors"] == u["timeouts"] == 0
    assert [r.status for r in readings if r.unit == 1] == ["free", "occupied", "free"]


async def test_corrupt_and_partial_replies_never_set_a_state(sim: SimModbusUnit) -> None:
    readings: list[WiredReading] = []
    poller = make(sim, readings, unknown_after=30)
    async with running(poller):
        await wait_for(lambda: len(readings) >= 2)
        # The register says free (0); a byte landing inside the reply makes its data
        # field read 0x0001, which a reader trusting the frame would report as occupied.
        sim.inject(1, LineFault(inside=(4, b"\x01")), 3)
        sim.inject(1, LineFault(truncate=4), 3)  # cut short, then silence
        await wait_for(lambda: sim.pending_faults(1) == 0)
        ok = poller.health()["units"][0]["ok"]
        await wait_for(lambda: poller.health()["units"][0]["ok"] > ok)
        unit1 = poller.health()["units"][0]
        assert unit1["crc_errors"] == 3 and unit1["frame_errors"] == 3
        assert unit1["timeouts"] == 0  # an answer that came broken is not silence
        assert unit1["noise_bytes"] >= 3 * 8 + 3 * 4
        assert [(r.status, r.value) for r in readings if r.unit == 1] == [("free", 0)]
        # The bus is back in step: the next real change comes through.
        sim.set_register(1, 0, 1)
        await wait_for(lambda: [r.status for r in readings if r.unit == 1] == ["free", "occupied"])
