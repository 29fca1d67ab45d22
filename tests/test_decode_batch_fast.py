"""`schwebe decode phy -` / `decode gwmp -` batches: the compiled module writes whole output
lines itself; they must be byte for byte what the general path (and so the twin) writes.

Both CLIs run on the same capture (forwarder traffic plus every odd line we could think of);
in-process, hypothesis feeds both implementations of ``decode_lines`` messy lines. A test also
proves the compiled path really answers forwarder traffic itself (no fallback), so the
comparison is not the general path against itself.
"""

from __future__ import annotations

import base64
import io
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli.decode import (
    MAX_LINE,
    _answer,
    _bare_hex,
    _byte_chunks,
    _checked,
    _field,
    _lines,
)
from gateway.frames import _frames_py as twin
from gateway.frames.decode import decode_gwmp, decode_phy
from tests.test_frames_differential import _compiled

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
from bench_frames import make_datagrams, make_frames

REPO = Path(__file__).resolve().parents[1]
QUICK = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def _phy_answer(line: bytes | None) -> tuple[bytes, bool]:
    return _answer(line, lambda o: decode_phy(_field(o, "phy")), _bare_hex("phy"))


def _gwmp_answer(line: bytes | None) -> tuple[bytes, bool]:
    return _answer(line, lambda o: decode_gwmp(_field(o, "gwmp")), _bare_hex("gwmp"))


ANSWER = {"phy": _phy_answer, "gwmp": _gwmp_answer}


def both(kind: str, lines: list[bytes]) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
    c = _compiled()
    block = b"".join(line + b"\n" for line in lines)
    return c.decode_lines(kind, block, ANSWER[kind]), twin.decode_lines(kind, block, ANSWER[kind])


def _rxpk(frame: bytes, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "tmst": 3512348611, "chan": 2, "rfch": 0, "freq": 868.5, "stat": 1, "modu": "LORA",
        "datr": "SF7BW125", "codr": "4/5", "lsnr": 7.8, "rssi": -42, "size": len(frame),
        "data": base64.b64encode(frame).decode(),
    }
    fields.update(extra)
    return fields


DATA_UP = bytes.fromhex("40f17dbe4900020001954378762b11ff0d")
EUI = 0xAA555A0000000101


def _dg(body: bytes, version: int = 2, ident: int = 0) -> bytes:
    return bytes((version, 0x34, 0x12, ident)) + EUI.to_bytes(8, "big") + body


def odd_capture() -> dict[str, list[bytes]]:
    """Lines of every shape: what the compiled path writes and what it leaves to the general one."""
    rng = random.Random(7)
    frames = make_frames(300, rng)
    dgs, _ = make_datagrams(frames, rng)
    phy = [f.hex().encode() for f in frames] + [
        b'{"phy": "' + DATA_UP.hex().encode() + b'"}',
        b'  {"phy":"' + DATA_UP.hex().upper().encode() + b'"}  ',
        b'{"phy": "' + DATA_UP.hex().encode() + b'", "keys": {"NwkSKey": "' + b"00" * 16 + b'"}}',
        b'{"phy": "' + DATA_UP.hex().encode() + b'", "params": {}}',
        b'{"phy": "\\u0034' + DATA_UP.hex().encode()[1:] + b'"}',
        b"40 f1 7d",  # bytes.fromhex takes spaces
        b"\t" + DATA_UP.hex().encode() + b"\x0b",
        b"", b"   ", b"zz", b"4", b"[1]", b'"40"', b"{", b"{}", b'{"phy": 5}',
        b"\xff\xfe" + DATA_UP.hex().encode(),
        "\u00e9t\u00e9".encode(),
        b"00" + b"11" * 22,  # JoinRequest
        b"00" + b"11" * 21,  # one byte short
        b"20" + b"ab" * 16, b"20" + b"ab" * 32, b"20" + b"ab" * 20,  # JoinAccept
        b"c0" + b"00" + b"22" * 17, b"c0" + b"01" + b"22" * 22, b"c0" + b"03" + b"22" * 17,
        b"e0", b"e0abcdef", b"41" + b"00" * 12, b"",
        b"4001020304" + b"8f" + b"0000" + b"02" * 15 + b"11223344",  # FOpts past the MIC
        b"400102030483000002030405aabbccdd",  # FOpts: LinkCheckReq + LinkADRAns cut
        b"600102030483000002030405aabbccdd",  # the same downlink
        b"400102030482000099ff01aabbccdd",  # unknown CID
        b"40010203048000000000aabbccdd",  # FPort 0, empty FRMPayload
        b"400102030400000001aabbccdd",  # no FPort
    ]
    good = _rxpk(DATA_UP)
    gwmp = [d.hex().encode() for d in dgs] + [
        orjson.dumps({"gwmp": dgs[0].hex()}),
        _dg(b'{"rxpk":[' + orjson.dumps(good) + b'], "stat": {"time": "2024-01-01 00:00:00 GMT", '
            b'"lati": 46.24, "long": 3.2523, "alti": 145, "rxnb": 2, "ackr": 100.0}}').hex().encode(),
        _dg(b'{ "rxpk" : [ ' + orjson.dumps(good).replace(b",", b" , ") + b" ] }").hex().encode(),
        _dg(b"{}").hex().encode(),
        _dg(b'{"rxpk":[]}').hex().encode(),
        _dg(b'{"rxpk":null}').hex().encode(),
        _dg(b'{"stat":null}').hex().encode(),
        _dg(b'{"stat":[1]}').hex().encode(),
        _dg(b'{"rxpk":[' + orjson.dumps(good) + b"]}\x00").hex().encode(),
        _dg(b'{"rxpk":[' + orjson.dumps(good) + b"]}", version=1).hex().encode(),
        _dg(b'{"rxpk":[' + orjson.dumps(good) + b"]}", version=3).hex().encode(),
        _dg(b"", ident=2).hex().encode(), b"02123404", b"0212340501020304050607087b7d",
        _dg(b'{"Token": 1}').hex().encode(),
        _dg(b'{"rxpk":[1, {}]}').hex().encode(),
        _dg(b'{"rxpk":[' + orjson.dumps(_rxpk(DATA_UP, size=3)) + b"]}").hex().encode(),
        _dg(b'{"rxpk":[' + orjson.dumps(_rxpk(DATA_UP, size=17.0)) + b"]}").hex().encode(),
        _dg(b'{"rxpk":[' + orjson.dumps(_rxpk(DATA_UP, data="!!")) + b"]}").hex().encode(),
        _dg(b'{"rxpk":[' + orjson.dumps(_rxpk(b"\x40\x01")) + b"]}").hex().encode(),
        _dg(b'{"rxpk":[' + orjson.dumps(_rxpk(DATA_UP, phy=1)) + b"]}").hex().encode(),
        _dg(b'{"rxpk":[' + orjson.dumps(_rxpk(DATA_UP, PHYPayload="x")) + b"]}").hex().encode(),
        _dg(b'{"rxpk":[{"data":"QAE=","data":"QAE="}]}').hex().encode(),
        _dg(b'{"rxpk":[{"rsig":[{"ant":0,"chan":1,"rssic":-41},{"ant":1,"x":{"y":[true,false,null]}}],'
            b'"data":"' + base64.b64encode(DATA_UP) + b'"}]}').hex().encode(),
        _dg(b'{"rxpk":[{"rsig":[{"a":1,"a":2}],"data":"' + base64.b64encode(DATA_UP) + b'"}]}')
        .hex().encode(),
        _dg(b'{"rxpk":[{"time":"caf\\u00e9","data":"' + base64.b64encode(DATA_UP) + b'"}]}')
        .hex().encode(),
        _dg('{"rxpk":[{"time":"café","data":"QAE="}]}'.encode()).hex().encode(),
        _dg(b'{"rxpk":[{"x":"\x7f","data":"' + base64.b64encode(DATA_UP) + b'"}]}').hex().encode(),
    ]
    # Numbers orjson writes back differently from how they came (and some it keeps).
    for text in (b"868.10", b"1e3", b"1E3", b"0.00001", b"0.0001", b"-0", b"-0.0", b"0.0",
                 b"123456789012345678", b"1234567890123456789", b"99999999999999999999",
                 b"1.5e-3", b"100.0", b"1234567890123456.0", b"123456789012345.6",
                 b"0.1234567890123456", b"-7.25", b"017", b"1.", b"2.50", b"12345678901234567.0"):
        body = b'{"rxpk":[{"lsnr":' + text + b',"data":"' + base64.b64encode(DATA_UP) + b'"}]}'
        gwmp.append(_dg(body).hex().encode())
    return {"phy": phy, "gwmp": gwmp}


def _write_capture(path: Path, lines: list[bytes]) -> None:
    # Every line end a capture may have, and an overlong line in the middle.
    ends = [b"\n", b"\r\n", b"\r"]
    body = b"".join(line + ends[i % 3] for i, line in enumerate(lines))
    path.write_bytes(body + b"0" * (MAX_LINE + 1) + b"\n" + lines[0])  # no end on the last


def _cli(kind: str, path: Path, twin_build: bool) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, SCHWEBE_NO_EXTENSIONS="1" if twin_build else "0")
    with path.open("rb") as stdin:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "decode", kind, "-"],
            stdin=stdin, capture_output=True, env=env, cwd=REPO, timeout=120, check=False,
        )


@pytest.mark.parametrize("kind", ["phy", "gwmp"])
def test_compiled_and_twin_clis_print_the_same_bytes(kind: str, tmp_path: Path) -> None:
    _compiled()
    lines = odd_capture()[kind]
    path = tmp_path / f"{kind}.jsonl"
    _write_capture(path, lines)
    fast = _cli(kind, path, twin_build=False)
    slow = _cli(kind, path, twin_build=True)
    assert fast.stderr == slow.stderr == b""
    assert fast.returncode == slow.returncode == 1  # some lines are bad on purpose
    assert fast.stdout == slow.stdout
    out = fast.stdout.split(b"\n")
    assert out[-1] == b"" and len(out) - 1 == len(lines) + 2  # one answer per line, in order
    assert orjson.loads(out[len(lines)])["error"]["kind"] == "line_too_long"
    assert out[0] == out[-2]


def test_compiled_writes_forwarder_traffic_itself() -> None:
    """Without this the comparison above could be the general path against itself."""
    c = _compiled()
    rng = random.Random(11)
    frames = make_frames(500, rng)
    dgs, _ = make_datagrams(frames, rng)
    calls: list[bytes] = []

    def counting(kind: str) -> Any:
        def answer(line: bytes) -> tuple[bytes, bool]:
            calls.append(line)
            return ANSWER[kind](line)

        return answer

    for kind, items in (("phy", frames), ("gwmp", dgs)):
        lines = [i.hex().encode() for i in items]
        out, failed = c.decode_lines(kind, b"\n".join(lines), counting(kind))  # no last \n
        assert calls == [] and failed == 0
        want = b"".join(ANSWER[kind](line)[0] + b"\n" for line in lines)
        assert out == want


def test_bad_lines_count_as_failed_in_both() -> None:
    lines = [DATA_UP.hex().encode(), b"zz", b"0" * (MAX_LINE + 1), b""]
    (c_out, c_bad), (t_out, t_bad) = both("phy", lines)
    assert c_out == t_out and c_bad == t_bad == 3
    assert b"line_too_long" in c_out
    with pytest.raises(ValueError, match="kind"):
        _compiled().decode_lines("sensor", b"", _phy_answer)
    with pytest.raises(ValueError, match="kind"):
        twin.decode_lines("sensor", b"", _phy_answer)


# ---------------------------------------------------------------------------- hypothesis

_json_scalar = st.one_of(
    st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6), st.booleans(), st.none(),
)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def _number_text(draw: Any) -> bytes:
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(st.sampled_from(["0", "1", "868", "12345678901234", "123456789012345678"]))
    frac = draw(st.text("0123456789", max_size=18))
    exp = draw(st.sampled_from(["", "", "e5", "E-2"]))
    return f"{sign}{whole}{'.' + frac if frac or (exp == '' and draw(st.booleans())) else ''}{exp}".encode()


@st.composite
def push_lines(draw: Any) -> bytes:
    phy = draw(st.sampled_from([DATA_UP, bytes.fromhex("400102030483000002030405aabbccdd"),
                                b"\x00" + b"\x11" * 22, b"\x40\x01", b"\xe0\x01"]))
    rx = _rxpk(phy)
    for _ in range(draw(st.integers(0, 3))):
        rx[draw(st.text(max_size=5))] = draw(_json)
    raw = orjson.dumps({"rxpk": [rx]})
    if draw(st.booleans()):  # a number written the way some forwarder might
        raw = raw.replace(b'"lsnr":7.8', b'"lsnr":' + _number_text(draw))
    if draw(st.booleans()):
        raw = raw.replace(b",", b", ").replace(b":", b" : ")
    return _dg(raw).hex().encode()


@QUICK
@given(st.lists(push_lines(), min_size=1, max_size=4))
def test_gwmp_lines_match_the_general_path(lines: list[bytes]) -> None:
    (c_out, c_bad), (t_out, t_bad) = both("gwmp", list(lines))
    assert c_out == t_out and c_bad == t_bad


@QUICK
@given(st.lists(st.binary(max_size=40).map(lambda b: b.hex().encode()) | st.binary(max_size=30),
                min_size=1, max_size=6))
def test_phy_lines_match_the_general_path(lines: list[bytes]) -> None:
    (c_out, c_bad), (t_out, t_bad) = both("phy", list(lines))
    assert c_out == t_out and c_bad == t_bad


def _pieces(data: bytes, sizes: list[int]) -> Any:
    """A read() that hands ``data`` out in pieces of the given sizes (then what is left)."""
    view = [data]
    it = iter(sizes)

    def read(_n: int) -> bytes:
        size = next(it, len(view[0]))
        out, view[0] = view[0][:size], view[0][size:]
        return out

    return read


def _text_lines(data: bytes) -> list[str | None]:
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")
    return list(_lines(stream))


def _byte_lines(data: bytes, sizes: list[int]) -> list[str | None]:
    out: list[str | None] = []
    for block in _byte_chunks(_pieces(data, sizes)):
        if block is None:
            out.append(None)
            continue
        for line in block.split(b"\n")[:-1]:
            checked = _checked(line)
            out.append(None if checked is None else checked.decode("utf-8", "replace"))
    return out


@QUICK
@given(
    st.lists(st.sampled_from([b"ab", b"\r", b"\n", b"\r\n", b"\xc3\xa9", b"\xff", b" "]), max_size=30),
    st.lists(st.integers(1, 7), max_size=30),
)
def test_byte_reader_splits_lines_as_text_mode_does(parts: list[bytes], sizes: list[int]) -> None:
    data = b"".join(parts)
    assert _byte_lines(data, sizes) == _text_lines(data)


def test_byte_reader_drops_a_huge_line_in_bounded_pieces() -> None:
    huge = b"4" * (4 * MAX_LINE + 10)
    data = b"40\n" + huge + b"\r\n41\r"
    sizes = [MAX_LINE // 2] * 12
    assert _byte_lines(data, sizes) == _text_lines(data) == ["40", None, "41"]
    assert _byte_lines(b"40\n" + b"\xc3\xa9" * (MAX_LINE // 2 + 1) + b"\n", [MAX_LINE]) == [
        "40", "\u00e9" * (MAX_LINE // 2 + 1)]  # more bytes than MAX_LINE, not more characters
