"""GNSS NMEA on a pseudo-terminal: fixes, clock offset, checksum and garbage counting, bounds,
the fix in Semtech `stat` terms."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from drivers.gnss import GnssFix, GnssReader, NmeaError, parse_sentence
from drivers.serial_link import Backoff
from drivers.sim.serial_units import SimNmeaReceiver, nmea_sentence

# Fixed sample sentences: their checksums are literal text, not computed by our code.
GGA = b"$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76"
RMC = b"$GPRMC,092750.000,A,5321.6802,N,00630.3372,W,0.02,31.66,280511,,,A*43"


async def wait_for(pred: Callable[[], bool], limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(reader: GnssReader) -> AsyncIterator[None]:
    task = asyncio.create_task(reader.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def offline(clock: float = 1306575000.0) -> GnssReader:
    return GnssReader("/dev/null-not-opened", 9600, None, clock=lambda: clock)


def test_known_sentences_parse_to_a_fix() -> None:
    r = offline(clock=1306574870.0)  # 2011-05-28 09:27:50 minus 0 s
    fixes: list[GnssFix] = []
    r.on_fix = fixes.append
    r.feed(GGA + b"\r\n" + RMC + b"\r\n")
    fix = r.fix
    assert fix.lat == pytest.approx(53.361337, abs=1e-6)
    assert fix.lon == pytest.approx(-6.50562, abs=1e-6)
    assert fix.altitude == 61.7 and fix.satellites == 8 and fix.hdop == 1.03
    assert fix.fix_quality == 1 and fix.valid and fix.talker == "GP"
    assert fix.utc is not None and fix.utc.isoformat() == "2011-05-28T09:27:50+00:00"
    assert fix.time_offset == 0.0
    assert len(fixes) == 2 and r.counters["gga"] == 1 and r.counters["rmc"] == 1


def test_checksum_garbage_and_overlong_are_counted_and_skipped() -> None:
    r = offline()
    bad_sum = GGA[:-2] + b"77"
    overlong = nmea_sentence("GPTXT," + "X" * 90)
    r.feed(bad_sum + b"\r\n\x00\xff\xfe noise\r\n$GPGGA,no,checksum\r\n")
    r.feed(overlong + GGA + b"\r\n")
    assert r.counters["checksum_errors"] == 1
    assert r.counters["garbage"] == 2
    assert r.counters["overlong"] == 1
    # The sentence right after the overlong one still parses: the splitter resynchronised.
    assert r.counters["gga"] == 1 and r.fix.lat is not None
    with pytest.raises(NmeaError) as info:
        parse_sentence(bad_sum)
    assert info.value.kind == "checksum_errors" and info.value.offset == len(GGA) - 2


def test_a_line_without_end_cannot_grow_memory() -> None:
    r = offline()
    for _ in range(1000):
        r.feed(b"A" * 1000)
    assert len(r._line) <= r.max_sentence
    r.feed(b"\r\n" + GGA + b"\r\n")
    assert r.counters["overlong"] == 1 and r.counters["gga"] == 1


def test_any_chunking_gives_the_same_result() -> None:
    stream = b"junk\r\n" + GGA + b"\r\n" + RMC + b"\n" + GGA[:-1] + b"0\r\n"
    whole = offline()
    whole.feed(stream)
    for size in (1, 2, 3, 7, 13, 64):
        r = offline()
        for i in range(0, len(stream), size):
            r.feed(stream[i : i + size])
        assert r.counters == whole.counters and r.fix == whole.fix


def test_other_talkers_and_hemispheres() -> None:
    r = offline()
    r.feed(nmea_sentence("GLGGA,000001.00,3352.1280,S,15112.5530,E,2,12,0.6,40.0,M,,M,,") + b"")
    assert r.fix.talker == "GL" and r.fix.fix_quality == 2
    assert r.fix.lat is not None and r.fix.lat < 0 and r.fix.lon is not None and r.fix.lon > 0
    r.feed(nmea_sentence("BDGSV,1,1,00") + nmea_sentence("GNGGA,000002.00,,,,,0,00,99.9,,M,,M,,"))
    assert r.counters["ignored"] == 1
    assert r.fix.fix_quality == 0 and r.fix.lat is None  # lost fix clears the position


async def test_receiver_on_pty_gives_fixes_and_clock_offset(tmp_path: Path) -> None:
    sim = SimNmeaReceiver(str(tmp_path / "ttyACM0"), interval=0.05, garbage_every=3)
    sim.time_offset = 5.0  # GNSS says it is 5 s later than the system clock
    await sim.start()
    fixes: list[GnssFix] = []
    reader = GnssReader(sim.port, 9600, fixes.append)
    try:
        async with running(reader):
            await wait_for(lambda: reader.counters["rmc"] >= 3 and reader.counters["garbage"] >= 1)
        fix = reader.fix
        assert fix.lat == pytest.approx(51.2562, abs=1e-5)
        assert fix.lon == pytest.approx(7.1508, abs=1e-5)
        assert fix.altitude == 152.3 and fix.satellites == 9 and fix.hdop == 0.9
        assert fix.time_offset == pytest.approx(5.0, abs=0.2)
        assert reader.counters["checksum_errors"] == 0
        health = reader.health()
        assert health["fix"]["lat"] == fix.lat and health["garbage"] >= 1
        assert isinstance(health["fix"]["utc"], str)
    finally:
        await sim.close()


async def test_unplug_and_replug_resumes_fixes(tmp_path: Path) -> None:
    sim = SimNmeaReceiver(str(tmp_path / "ttyACM0"), interval=0.05)
    await sim.start()
    reader = GnssReader(sim.port, 9600, None, backoff=Backoff(initial=0.02, maximum=0.1))
    try:
        async with running(reader):
            await wait_for(lambda: reader.counters["gga"] >= 2)
            sim.unplug()
            await wait_for(lambda: reader.health()["open_failures"] >= 2)
            assert reader.health()["connected"] is False
            before = reader.counters["gga"]
            sim.lat = 48.0
            sim.replug()
            await wait_for(lambda: reader.counters["gga"] > before + 1)
            assert reader.fix.lat == pytest.approx(48.0)
            assert reader.health()["opens"] == 2 and reader.health()["disconnects"] == 1
    finally:
        await sim.close()


def test_stat_gives_the_fix_in_semtech_terms() -> None:
    now = [1306574870.0]  # 2011-05-28 09:27:50 UTC, the time in the sample sentences
    r = GnssReader("/dev/null-not-opened", 9600, None, clock=lambda: now[0],
                   monotonic=lambda: now[0])
    assert r.stat() is None  # nothing heard yet
    r.feed(GGA + b"\r\n")
    # GGA only: no date yet, so the time is the system clock when the fix came.
    only_gga = r.stat()
    assert only_gga is not None and only_gga["time"] == "2011-05-28 09:27:50 GMT"
    assert only_gga["time_offset"] is None
    now[0] += 3.0  # the system clock runs 3 s ahead of GNSS time
    r.feed(RMC + b"\r\n")
    # Field names, rounding and time format as lora_pkt_fwd writes its stat object.
    assert r.stat() == {
        "time": "2011-05-28 09:27:50 GMT",
        "lati": 53.36134,
        "long": -6.50562,
        "alti": 62,
        "fix_quality": 1,
        "satellites": 8,
        "hdop": 1.03,
        "time_offset": -3.0,
    }
    now[0] += 11.0  # the receiver went quiet: an old position is not a current fix
    assert r.stat() is None
    assert r.stat(max_age=None) is not None and r.stat(max_age=20) is not None
    r.feed(nmea_sentence("GPGGA,092802.000,,,,,0,00,99.9,,M,,M,,") + b"\r\n")
    assert r.stat() is None  # fix lost


def test_a_clock_step_neither_keeps_an_old_fix_nor_drops_a_fresh_one() -> None:
    wall, mono = [1306574870.0], [100.0]
    r = GnssReader("/dev/null-not-opened", 9600, None, clock=lambda: wall[0],
                   monotonic=lambda: mono[0])
    r.feed(GGA + b"\r\n")
    wall[0] += 3 * 365 * 86400  # NTP arrives late
    mono[0] += 1
    assert r.stat() is not None  # heard a second ago
    wall[0] -= 5 * 365 * 86400  # a bad time source sets it back
    mono[0] += 11
    assert r.stat() is None  # the receiver has been quiet for 12 s, whatever the wall clock says


async def test_stat_on_pty_follows_the_receiver(tmp_path: Path) -> None:
    sim = SimNmeaReceiver(str(tmp_path / "ttyACM0"), interval=0.05, altitude=152.6)
    sim.time_offset = 5.0
    await sim.start()
    reader = GnssReader(sim.port, 9600, None)
    try:
        async with running(reader):
            await wait_for(lambda: reader.counters["rmc"] >= 2)
            stat = reader.stat()
            assert stat is not None
            assert (stat["lati"], stat["long"], stat["alti"]) == (51.2562, 7.1508, 153)
            assert stat["satellites"] == 9 and stat["fix_quality"] == 1
            # `time` is GNSS time (5 s ahead of this machine), in the stat format.
            gnss_time = dt.datetime.strptime(stat["time"], "%Y-%m-%d %H:%M:%S GMT")
            ahead = gnss_time.replace(tzinfo=dt.UTC).timestamp() - time.time()
            assert 3.5 <= ahead <= 5.5
            assert stat["time_offset"] == pytest.approx(5.0, abs=0.2)
            sim.quality = 0  # antenna covered
            await wait_for(lambda: reader.fix.fix_quality == 0)
            assert reader.stat() is None
            sim.quality = 1
            await wait_for(lambda: reader.stat() is not None)
    finally:
        await sim.close()


async def test_packet_forwarder_stat_gets_the_gateway_position(tmp_path: Path) -> None:
    """The usual lamp-post packet forwarder has no GPS: its `stat` leaves the gateway with the
    position of the gateway's own GNSS receiver (a pty), so the network server learns where
    the gateway stands. A forwarder with its own GPS keeps its own position."""
    import json
    import socket

    from gateway import frames
    from gateway.config import demo_config_text, load_config_text
    from gateway.pipeline import Gateway

    lns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lns.bind(("127.0.0.1", 0))
    lns_port = lns.getsockname()[1]
    lns.close()
    gw = Gateway(load_config_text(demo_config_text(str(tmp_path), 0, lns_port)))
    task = asyncio.create_task(gw.serve(install_signals=False))
    out = tmp_path / "forwarded.jsonl"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await asyncio.wait_for(gw.supervisor.ready.wait(), 20)
        await wait_for(lambda: gw.gnss_reader is not None and gw.gnss_reader.stat() is not None, 10)
        fix = gw.gnss_reader.stat()
        eui = 0xB827EBFFFE0000AA
        plain = {"time": "2026-11-25 10:00:00 GMT", "rxnb": 3, "rxok": 3, "rxfw": 3, "ackr": 100.0}
        own_gps = {**plain, "lati": 48.1, "long": 11.5, "alti": 520}
        addr = gw.sources[0].bound_address
        sock.sendto(frames.encode_push_data(1, eui, None, plain), addr)
        sock.sendto(frames.encode_push_data(2, eui + 1, None, own_gps), addr)

        def stats() -> list[dict[str, object]]:
            if not out.exists():
                return []
            lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
            return [x["body"] for x in lines if x["kind"] == "stats"]

        await wait_for(lambda: len(stats()) >= 2, 10)
        by_eui = {b["gateway_eui"]: b["stat"] for b in stats()}
        mine = by_eui[f"{eui:016x}"]
        assert (mine["lati"], mine["long"], mine["alti"]) == (fix["lati"], fix["long"], fix["alti"])
        assert mine["rxnb"] == 3 and mine["time"] == "2026-11-25 10:00:00 GMT"
        theirs = by_eui[f"{eui + 1:016x}"]
        assert (theirs["lati"], theirs["long"], theirs["alti"]) == (48.1, 11.5, 520)
        assert gw.status()["gnss"]["stat"]["lati"] == fix["lati"]
    finally:
        sock.close()
        gw.supervisor.request_stop()
        await asyncio.wait_for(task, 20)
