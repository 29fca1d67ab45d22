"""The wall clock stepping forwards by years (NTP arriving late on a gateway without RTC) and
back, under the buffer: ages count the time that really passed, nothing expires wrongly and
nothing is kept forever. Injected clocks here; the daemon test in the same file moves the clock under
a real ``schwebe run``."""

from __future__ import annotations

from pathlib import Path

from gateway.buffer import Buffer
from gateway.records import Record, make_record

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
