"""The wall clock stepping forwards by years (NTP arriving late on a gateway without RTC) and
back, under the buffer: ages count the time that really passed, nothing expires wrongly and
nothing is kept forever. Injected clocks here; the daemon test in the same file moves the clock under
a real ``schwebe run``."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from pathlib import Path

import pytest

from gateway import frames
from gateway.buffer import Buffer
from gateway.records import Record, make_record
from tests.helpers.daemon import Daemon, free_port
from tests.helpers.threaded_lns import ThreadedLns

EUI = 0xB827EBFFFE000001

YEARS_3 = 3 * 365 * 86400.0
HOUR = 3600.0


class Clocks:
    """A wall clock that can be stepped and a monotonic one that cannot."""

    def __init__(self, wall: float = 1_790_000_000.0) -> None:
        self.wall, self.mono = wall, 5000.0

    def pass_(self, s: float) -> None:
        self.wall += s
        self.mono += s

    def step(self, s: float) -> None:
        self.wall += s

    def rec(self, i: int) -> Record:
        return make_record("uplink", "test", {"i": i}, received_us=int(self.wall * 1e6))


def _buf(tmp_path: Path, c: Clocks, **kw: object) -> Buffer:
    b = Buffer(tmp_path / "buffer.sqlite3", max_bytes=1 << 30, max_age={"uplink": HOUR},
               clock=lambda: c.wall, monotonic=lambda: c.mono, **kw)  # type: ignore[arg-type]
    b.open()
    b.register("lns", start="oldest")
    return b


def _ages(b: Buffer, c: Clocks) -> list[float]:
    batch = b.take("lns", 10_000, 1 << 30)
    assert batch is not None
    ages = [round(c.wall - r.received_us / 1e6) for _, r in batch.records]
    b.release("lns", batch)
    return ages


def test_step_forwards_keeps_records_received_minutes_ago(tmp_path: Path) -> None:
    c = Clocks()
    b = _buf(tmp_path, c)
    for i in range(50):
        b.append(c.rec(i))
    assert b.commit()  # 50 in the store
    c.pass_(60)
    for i in range(50, 60):
        b.append(c.rec(i))  # 10 pending in memory
    c.pass_(60)
    c.step(YEARS_3)
    # A forwarder reading before the next commit (the LNS judges replay age right here)
    # sees the ages that really passed: 120 s and 60 s, not three years.
    assert sorted(set(_ages(b, c))) == [60, 120]
    assert b.commit()
    st = b.stats()
    assert st["records"] == 60 and st["drops"] == {}, st["drops"]
    assert st["oldest_age_s"]["uplink"] == 120.0
    assert [s["step_s"] for s in st["clock_steps"]] == [YEARS_3]
    for i in range(60, 70):
        b.append(c.rec(i))  # after the step: stamped on the new scale, not moved
    assert b.commit()
    assert sorted(set(_ages(b, c))) == [0, 60, 120]
    b.close()

    # The new stamps are in the store: a restart (no step seen by it) agrees.
    b = _buf(tmp_path, c)
    assert sorted(set(_ages(b, c))) == [0, 60, 120]
    # max_age still holds, by the time that passed: an hour later the first 50 go.
    c.pass_(HOUR - 119)
    assert b.commit()
    assert b.stats()["drops"] == {"max_age": {"uplink": 50}}
    b.close()


def test_step_back_does_not_keep_records_for_years(tmp_path: Path) -> None:
    c = Clocks()
    b = _buf(tmp_path, c)
    for i in range(30):
        b.append(c.rec(i))
    assert b.commit()
    c.pass_(30)
    c.step(-YEARS_3)
    assert b.commit()
    assert b.stats()["oldest_age_s"]["uplink"] == 30.0  # not 0 ("from the future")
    c.pass_(HOUR)
    assert b.commit()
    assert b.stats()["drops"] == {"max_age": {"uplink": 30}}  # not three years later
    b.close()


def test_two_steps_before_a_commit_and_a_record_between_them(tmp_path: Path) -> None:
    c = Clocks(wall=100_000.0)  # booted in 1970
    b = _buf(tmp_path, c, commit_interval=3600)
    b.append(c.rec(0))
    assert b.commit()
    c.pass_(20)
    c.step(YEARS_3)  # NTP arrives
    batch = b.take("lns", 1, 1 << 30)  # a forwarder looks: the step is seen here
    assert batch is not None
    b.release("lns", batch)
    c.pass_(20)
    b.append(c.rec(1))
    c.pass_(20)
    c.step(-HOUR)  # a bad time source
    c.pass_(20)
    assert b.commit()
    assert sorted(_ages(b, c)) == [40, 80]
    b.close()


def test_records_of_an_earlier_run_keep_their_stamps(tmp_path: Path) -> None:
    c = Clocks()
    b = _buf(tmp_path, c)
    b.append(c.rec(0))
    assert b.commit()
    b.close()
    # Reboot without RTC: the clock starts in 1970, NTP comes two minutes later.
    later = Clocks(wall=1000.0)
    later.mono = 10.0
    b = _buf(tmp_path, later)
    b.append(later.rec(1))
    assert b.commit()
    later.pass_(120)
    later.step(c.wall + 600 - later.wall)  # the real time: ten minutes after the first run
    assert b.commit()
    assert b.stats()["drops"] == {}
    assert sorted(_ages(b, later)) == [120, 600]
    b.close()


# ---------------------------------------------------------------------------- a real daemon

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


class Lns(ThreadedLns):
    """Remembers the frame numbers of the rxpk it took (only while ``up``)."""

    def __init__(self) -> None:
        self.got: set[int] = set()
        super().__init__(self._took, up=False)

    def _took(self, body: bytes) -> None:
        for pk in json.loads(body).get("rxpk", []):
            self.got.add(int.from_bytes(base64.b64decode(pk["data"])[9:13], "big"))


def _push(port: int, numbers: range) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for i in numbers:
            phy = bytes([0x40, 1, 2, 3, 4, 0, 0, 0, 1]) + i.to_bytes(4, "big")
            rxpk = [{"tmst": i, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
                     "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5,
                     "size": len(phy), "data": base64.b64encode(phy).decode()}]
            s.sendto(frames.encode_push_data(i & 0xFFFF, EUI, rxpk), ("127.0.0.1", port))
            assert s.recv(64)[3] == 1  # PUSH_ACK: the gateway has it


def test_schwebe_run_under_a_clock_stepped_years_forwards_and_back(tmp_path: Path) -> None:
    """libfaketime moves the wall clock of a real `schwebe run` (its monotonic clock stays):
    uplinks queued for a silent network server while the clock steps three years forwards
    are neither expired by max_age nor replay_expired by the LNS forwarder, and after a step
    back the ages on the status page are the real ones."""
    if not LIBFAKETIME.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{LIBFAKETIME} missing: apt-get install libfaketime")
        pytest.skip("libfaketime not installed")
    lns, udp, web_port = Lns(), free_port(socket.SOCK_DGRAM), free_port()
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    config = tmp_path / "schwebe.toml"
    config.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{tmp_path / 'data'}"
[[sources.gwmp]]
bind = "127.0.0.1:{udp}"
[[forward.gwmp]]
name = "lns"
server = "127.0.0.1:{lns.port}"
max_replay_age = "10m"
[buffer]
commit_interval = "0.2s"
[buffer.max_age]
uplink = "1h"
[web]
bind = "127.0.0.1:{web_port}"
open_read_only = true
""")
    env = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    gw = Daemon(config, web_port, env=env)
    try:
        gw.wait("up", lambda s: "lns" in s["forwarders"])
        _push(udp, range(0, 20))
        gw.wait("20 queued", lambda s: s["buffer"]["records"] >= 20)
        time.sleep(1.5)  # received a little while ago: ages of about 1.5 s
        offset.write_text("+3y\n")  # NTP arrives late
        st = gw.wait("the step seen", lambda s: len(s["buffer"]["clock_steps"]) == 1)
        assert abs(st["buffer"]["clock_steps"][0]["step_s"] - 3 * 365 * 86400) < 60
        _push(udp, range(20, 40))
        st = gw.wait("40 queued", lambda s: s["buffer"]["records"] >= 40)
        assert st["buffer"]["drops"] == {}, st["buffer"]["drops"]
        assert 1 <= st["buffer"]["oldest_age_s"]["uplink"] < 30
        lns.up = True
        st = gw.wait("all delivered", lambda s: lns.got >= set(range(40)), 20)
        offset.write_text("+0\n")  # a step back by three years
        gw.wait("the second step seen", lambda s: len(s["buffer"]["clock_steps"]) == 2)
        lns.up = False
        _push(udp, range(40, 50))
        time.sleep(2)
        st = gw.wait("10 queued, aged right", lambda s: s["forwarders"]["lns"]["lag_records"] == 10
                     and s["forwarders"]["lns"]["lag_s"] >= 1.5)
        assert st["forwarders"]["lns"]["lag_s"] < 30
        lns.up = True
        st = gw.wait("all delivered", lambda s: lns.got >= set(range(50)), 20)
        assert st["buffer"]["drops"] == {}
        text = json.dumps(st["forwarders"]["lns"])
        assert '"replay_expired": 0' in text, text
    finally:
        assert gw.stop() == 0, gw.output()[-3000:]
