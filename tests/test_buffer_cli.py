"""`schwebe buffer inspect|export` against a store that a running buffer holds open."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.buffer import Buffer
from gateway.cli.buffer import main
from gateway.records import make_record

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
def live_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    b = Buffer(tmp_path / "buffer.sqlite3", max_bytes=1 << 30)
    b.open()
    b.register("mqtt", start="oldest")
    b.register("lns", start="oldest")
    for i in range(10):
        b.append(make_record("uplink", "gwmp", {"i": i, "raw": bytes([i, 255])}, received_us=(T0 + i) * 10**6))
    b.append(make_record("parking", "nwave", {"spot_id": "s1", "status": "free"}, received_us=(T0 + 20) * 10**6))
    batch = b.take("mqtt", 4, 1 << 20)
    assert batch is not None
    b.ack("mqtt", batch)
    assert b.commit()
    yield tmp_path, b
    b.close()


def test_inspect_json_beside_a_running_buffer(live_store, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    data_dir, _b = live_store
    assert main(["buffer", "inspect", "--json", "--data-dir", str(data_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["records"] == 11
    assert info["records_by_kind"]["uplink"] == 10
    assert info["cursors"]["mqtt"]["depth_records"] == 7
    assert info["cursors"]["lns"]["depth_records"] == 11
    assert info["oldest_age_s"]["uplink"] > 0 and info["oldest_age_s"]["stats"] is None
    assert main(["buffer", "inspect", "--data-dir", str(data_dir)]) == 0
    assert "mqtt: 7 records behind" in capsys.readouterr().out


def test_export_jsonl_with_filters(live_store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    data_dir, _b = live_store
    out = tmp_path / "usb" / "export.jsonl"
    out.parent.mkdir()
    assert main(["buffer", "export", "--data-dir", str(data_dir), "--kind", "uplink",
                 "--since", "2026-01-01T00:00:05Z", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["body"]["i"] for x in lines] == [5, 6, 7, 8, 9]
    assert lines[0]["body"]["raw"] == "05ff" and lines[0]["received"] == "2026-01-01T00:00:05+00:00"
    assert main(["buffer", "export", "--data-dir", str(data_dir), "--kind", "parking"]) == 0
    (only,) = capsys.readouterr().out.splitlines()
    assert json.loads(only)["body"] == {"spot_id": "s1", "status": "free"}


def test_errors_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["buffer", "inspect", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "no buffer store at" in capsys.readouterr().err
    assert main(["buffer", "export", "--data-dir", str(tmp_path), "--kind", "frames"]) == 2
    assert "--kind 'frames'" in capsys.readouterr().err


def test_export_reads_around_the_damage_of_a_corrupt_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A card corrupted a few pages of a store (the daemon moves such a store aside once it
    notices): a technician still gets every readable record out of it, in order, and is told
    which stretch was lost."""
    b = Buffer(tmp_path / "buffer.sqlite3", max_bytes=1 << 30)
    b.open()
    for i in range(3000):
        b.append(make_record("uplink", "gwmp", {"i": i, "pad": "x" * 80}, received_us=(T0 + i) * 10**6))
    b.close()
    path = tmp_path / "buffer.sqlite3"
    data = bytearray(path.read_bytes())
    assert len(data) // 4096 > 40
    data[20 * 4096 : 25 * 4096] = bytes([0x5A]) * (5 * 4096)  # five pages in the middle
    moved = tmp_path / "buffer.sqlite3.corrupt-20260101T000000Z"
    moved.write_bytes(bytes(data))
    out = tmp_path / "rescued.jsonl"
    capsys.readouterr()
    assert main(["buffer", "export", "--file", str(moved), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    got = [json.loads(x)["body"]["i"] for x in out.read_text().splitlines()]
    assert got == sorted(got) and len(set(got)) == len(got)
    assert got[0] == 0 and got[-1] == 2999
    lost = 3000 - len(got)
    assert 0 < lost <= 5 * 40, f"{lost} records lost for five damaged pages"
    assert "damaged pages skipped (seq" in err and f"exported {len(got)} records from a damaged store" in err


def test_export_reads_a_store_whose_header_was_destroyed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first 100 bytes overwritten (SQLite then calls the file "not a database"): the
    pages behind are intact and every record comes out."""
    b = Buffer(tmp_path / "buffer.sqlite3", max_bytes=1 << 30)
    b.open()
    for i in range(3000):
        b.append(make_record("uplink", "gwmp", {"i": i}, received_us=(T0 + i) * 10**6))
    b.close()
    moved = tmp_path / "buffer.sqlite3.corrupt-20260101T000000Z"
    data = bytearray((tmp_path / "buffer.sqlite3").read_bytes())
    data[:100] = bytes(100)
    moved.write_bytes(bytes(data))
    out = tmp_path / "rescued.jsonl"
    assert main(["buffer", "export", "--file", str(moved), "--out", str(out)]) == 0
    assert [json.loads(x)["body"]["i"] for x in out.read_text().splitlines()] == list(range(3000))
