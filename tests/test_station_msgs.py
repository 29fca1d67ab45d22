"""Basics Station translation without sockets: xtime <-> tmst across counter wraps and
concentrator restarts, dnmsg windows, router ids, credential files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clocksteps import StepWatch
from gateway.config import load_config_text
from gateway.forward.station_creds import load_credentials, parse_token_headers
from gateway.forward.station_msgs import (
    RouterConfig,
    XtimeClock,
    dnmsg_attempts,
    id6,
    uplink_message,
)
from tests.helpers.station_lns import EU868_ROUTER_CONFIG, Pki

T0 = 1_780_000_000_000_000  # a wall-clock time in µs


def test_xtime_continues_across_the_counter_wrap_and_back_to_tmst() -> None:
    clock = XtimeClock(rctx=3, rng=random.Random(1))
    a = clock.to_xtime(0xFFFFF000, T0)
    b = clock.to_xtime(0x00001000, T0 + 0x2000)  # 8192 µs later, past 2**32
    assert b - a == 0x2000  # one timeline: the LNS's arithmetic on xtime stays right
    assert (b >> 56) & 0x7F == 3 and (b >> 48) & 0xFF == clock.session != 0
    assert b & 0xFFFFFFFFFFFF == 0x1_0000_1000
    # RX1 five seconds after the later frame: back on the concentrator's 32-bit counter
    assert clock.to_tmst(b + 5_000_000) == (0x1000 + 5_000_000)
    assert clock.to_tmst(a + 1_000_000) == (0xFFFFF000 + 1_000_000) & 0xFFFFFFFF


def test_a_long_silence_spanning_several_wraps_is_counted_from_the_wall_clock() -> None:
    clock = XtimeClock(rctx=0, rng=random.Random(2))
    first = clock.to_xtime(5, T0)
    gap = 2 * 3600 * 10**6 + 123  # two hours: the counter wrapped once and a bit
    later = clock.to_xtime((5 + gap) & 0xFFFFFFFF, T0 + gap + 300)  # receive-time jitter
    assert later - first == gap


@pytest.mark.parametrize("step_s", [3 * 365 * 86400, -3 * 365 * 86400])
def test_xtime_runs_on_across_a_wall_clock_step(step_s: int) -> None:
    wall, mono = [T0 / 1e6], [100.0]
    watch = StepWatch(lambda: wall[0], lambda: mono[0])
    watch.check()
    clock = XtimeClock(rctx=0, rng=random.Random(4))
    first = clock.to_xtime(5, int(wall[0] * 1e6))
    mono[0] += 60
    wall[0] += 60 + step_s  # NTP arrives late, or a bad time source is corrected
    step = watch.check()
    assert step is not None
    clock.follow_step(step)
    later = clock.to_xtime(5 + 60_000_000, int(wall[0] * 1e6))
    assert later - first == 60_000_000 and clock.restarts == 0
    assert clock.to_tmst(later + 1_000_000) == 5 + 61_000_000  # RX1 for that frame


def test_a_concentrator_restart_starts_a_new_session_and_old_downlinks_are_refused() -> None:
    clock = XtimeClock(rctx=0, rng=random.Random(3))
    before = clock.to_xtime(900_000_000, T0)
    after = clock.to_xtime(1_000, T0 + 10_000_000)  # counter back near zero: lora_pkt_fwd restarted
    assert (after >> 48) & 0xFF != (before >> 48) & 0xFF and clock.restarts == 1
    assert clock.to_tmst(after + 1_000_000) == 1_001_000
    assert clock.to_tmst(before + 1_000_000) is None
    msg = {"msgtype": "dnmsg", "DevEui": "00-00-00-00-00-00-00-01", "dC": 0, "diid": 1, "pdu": "60",
           "RxDelay": 1, "RX1DR": 5, "RX1Freq": 868100000, "xtime": before}
    with pytest.raises(ValueError, match="earlier concentrator session"):
        dnmsg_attempts(msg, None, clock)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 2**32 - 1), gaps=st.lists(st.integers(0, 3 * 3600 * 10**6), min_size=1, max_size=20),
       jitter=st.lists(st.integers(-5000, 5000), min_size=20, max_size=20))
def test_xtime_follows_the_true_counter_whatever_the_gaps(start: int, gaps: list[int], jitter: list[int]) -> None:
    clock = XtimeClock(rctx=0, rng=random.Random(4))
    true, wall = start, T0
    first = clock.to_xtime(start, wall)
    for gap, j in zip(gaps, jitter, strict=False):
        true += gap
        wall += gap
        x = clock.to_xtime(true & 0xFFFFFFFF, wall + j)
        assert x - first == true - start
        assert clock.to_tmst(x) == true & 0xFFFFFFFF
    assert clock.restarts == 0


def test_class_c_without_xtime_goes_now_on_rx2() -> None:
    (only,) = dnmsg_attempts({"msgtype": "dnmsg", "DevEui": "00-00-00-00-00-00-00-01", "dC": 2, "diid": 9,
                              "pdu": "A0010203", "RX2DR": 0, "RX2Freq": 869525000}, None, None)
    assert only.window == "C"
    assert only.txpk["imme"] is True and only.txpk["freq"] == 869.525 and only.txpk["datr"] == "SF12BW125"
    with pytest.raises(ValueError, match="class A device without xtime"):
        dnmsg_attempts({"dC": 0, "pdu": "60", "RX2DR": 0, "RX2Freq": 869525000}, None, None)


def test_router_config_dr_table_and_filters_parse() -> None:
    cfg = RouterConfig.parse({**EU868_ROUTER_CONFIG, "NetID": [0x13], "JoinEui": [[1, 2]]})
    assert cfg.drs[0] == (12, 125, 0) and cfg.net_ids == (0x13,) and cfg.join_euis == ((1, 2),)
    with pytest.raises(ValueError, match=r"router_config.DRs\[1\]"):
        RouterConfig.parse({"DRs": [[12, 125, 0], "SF11"]})
    assert uplink_message(bytes.fromhex("20" + "00" * 16), cfg) == (None, "downlink_frame")


def test_router_id_in_id6_form_as_basics_station_sends_it() -> None:
    assert id6(0xB827EBFFFE000001) == "b827:ebff:fe00:1"
    assert id6(1) == "::1"
    assert id6(0x0001000200000000) == "1:2::"
    assert id6(0x0001000000000005) == "1::5"


def test_token_file_lines_as_networks_issue_them() -> None:
    assert parse_token_headers("Authorization: Bearer NNSXS.AB.CD\r\n", "k") == {"Authorization": "Bearer NNSXS.AB.CD"}
    assert parse_token_headers("Authorization: Bearer x\nX-Extra: 1\n", "k") == {
        "Authorization": "Bearer x", "X-Extra": "1"}
    with pytest.raises(ValueError) as err:
        parse_token_headers("NNSXS.SECRETVALUE\n", "forward.station tts.key /etc/tc.key")
    assert "line 1" in str(err.value) and "SECRETVALUE" not in str(err.value)


def _station(uri: str, **files: Path) -> object:
    lines = "".join(f'{k} = "{v}"\n' for k, v in files.items())
    return load_config_text(f'[gateway]\neui = "0016c001ff000001"\n[[forward.station]]\nname = "s"\n'
                            f'uri = "{uri}"\n{lines}').forward.station[0]


def test_credential_files_in_the_layouts_networks_issue(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    der = tmp_path / "aws.trust"  # some tools hand out the trust anchor in DER
    der.write_bytes(x509.load_pem_x509_certificate(pki.trust.read_bytes()).public_bytes(serialization.Encoding.DER))
    cfg = _station("wss://lns.example.org:443", trust=der)
    assert load_credentials(cfg, "s").mode == "server"  # type: ignore[arg-type]
    crt, key = pki.leaf("gw")
    assert load_credentials(_station("wss://h:443", trust=pki.trust, crt=crt, key=key), "s").mode == "client_cert"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="private key without its certificate"):
        load_credentials(_station("wss://h:443", trust=pki.trust, key=key), "s")  # type: ignore[arg-type]
    empty = tmp_path / "empty.trust"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        load_credentials(_station("wss://h:443", trust=empty), "s")  # type: ignore[arg-type]
    assert load_credentials(_station("ws://h:7000"), "s").ssl is None  # type: ignore[arg-type]
    token = tmp_path / "tc.key"
    token.write_text("Authorization: Bearer NNSXS.X\n")
    token.chmod(0o644)
    creds = load_credentials(_station("wss://h:443", trust=pki.trust, key=token), "s")  # type: ignore[arg-type]
    assert creds.mode == "token" and "chmod 600" in creds.warnings[0] and "NNSXS" not in creds.warnings[0]
    token.chmod(0o600)
    assert load_credentials(_station("wss://h:443", trust=pki.trust, key=token), "s").warnings == ()  # type: ignore[arg-type]


def test_class_b_ping_slot_goes_at_its_gps_time_and_power_respects_max_eirp() -> None:
    cfg = RouterConfig.parse({**EU868_ROUTER_CONFIG, "max_eirp": 12.0})
    (ping,) = dnmsg_attempts({"msgtype": "dnmsg", "DevEui": "00-00-00-00-00-00-00-01", "dC": 1, "diid": 3,
                              "pdu": "60", "RX1DR": 3, "RX1Freq": 869525000, "gpstime": 1_400_000_000_123_456},
                             cfg, None)
    assert ping.window == "B" and ping.txpk["tmms"] == 1_400_000_000_123 and "tmst" not in ping.txpk
    assert ping.txpk["datr"] == "SF9BW125" and ping.txpk["powe"] == 12
    with pytest.raises(ValueError, match="gpstime"):
        dnmsg_attempts({"dC": 1, "pdu": "60", "RX1DR": 3, "RX1Freq": 869525000}, cfg, None)
    with pytest.raises(ValueError, match="DR 9 is not defined"):
        dnmsg_attempts({"dC": 2, "pdu": "60", "RX2DR": 9, "RX2Freq": 869525000}, cfg, None)


@settings(max_examples=300, deadline=None)
@given(mhdr=st.sampled_from([0x40, 0x80]), dev_addr=st.integers(0, 2**32 - 1), fctrl_hi=st.integers(0, 15),
       fopts=st.binary(max_size=15), fcnt=st.integers(0, 0xFFFF), port=st.one_of(st.none(), st.integers(0, 255)),
       payload=st.binary(max_size=64), mic=st.binary(min_size=4, max_size=4))
def test_updf_fields_give_back_the_frame(mhdr: int, dev_addr: int, fctrl_hi: int, fopts: bytes, fcnt: int,
                                         port: int | None, payload: bytes, mic: bytes) -> None:
    body = b"" if port is None else bytes([port]) + payload
    phy = (bytes([mhdr]) + dev_addr.to_bytes(4, "little") + bytes([fctrl_hi << 4 | len(fopts)])
           + fcnt.to_bytes(2, "little") + fopts + body + mic)
    msg, reason = uplink_message(phy, None)
    assert msg is not None, reason
    back = (bytes([msg["MHdr"]]) + (msg["DevAddr"] & 0xFFFFFFFF).to_bytes(4, "little") + bytes([msg["FCtrl"]])
            + msg["FCnt"].to_bytes(2, "little") + bytes.fromhex(msg["FOpts"])
            + (b"" if msg["FPort"] == -1 else bytes([msg["FPort"]]) + bytes.fromhex(msg["FRMPayload"]))
            + (msg["MIC"] & 0xFFFFFFFF).to_bytes(4, "little"))
    assert back == phy
    assert -(2**31) <= msg["DevAddr"] < 2**31 and -(2**31) <= msg["MIC"] < 2**31


_json = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)
_DNMSG_KEYS = ["DevEui", "dC", "diid", "pdu", "RxDelay", "RX1DR", "RX1Freq", "RX2DR", "RX2Freq", "xtime", "rctx",
               "gpstime", "priority"]
_RC_KEYS = ["DRs", "NetID", "JoinEui", "region", "max_eirp"]


@settings(max_examples=300, deadline=None)
@given(dn=st.dictionaries(st.sampled_from(_DNMSG_KEYS), _json), rc=st.dictionaries(st.sampled_from(_RC_KEYS), _json))
def test_whatever_a_server_sends_is_taken_or_refused_with_a_value_error(dn: dict[str, object],
                                                                        rc: dict[str, object]) -> None:
    try:
        cfg: RouterConfig | None = RouterConfig.parse(rc)
    except ValueError:
        cfg = None
    clock = XtimeClock(rctx=0, rng=random.Random(5))
    clock.to_xtime(1000, T0)
    try:
        attempts = dnmsg_attempts(dn, cfg, clock)
    except ValueError:
        return
    for a in attempts:
        assert a.txpk["size"] == len(bytes.fromhex(str(dn["pdu"])))


def test_json_nested_past_pythons_limit_is_a_malformed_message_not_an_exception() -> None:
    """Found writing the ``station`` fuzz target: json.loads raises RecursionError (not ValueError)
    on deep nesting, which went out of the websocket reader, the handshake and discovery."""

    from gateway.forward.base import ForwarderError
    from gateway.forward.station_link import handshake, router_info_uri
    from tests.fuzz.targets import STATION_ROUTER, _station, _Ws

    deep = "[" * 100_000
    with pytest.raises(ForwarderError, match="not a JSON object"):
        router_info_uri(deep, STATION_ROUTER, "s")
    fwd, r, loop = _station()
    with pytest.raises(ForwarderError, match="nested too deeply"):
        loop.run_until_complete(handshake(_Ws([deep]), "s", 1.0))  # type: ignore[arg-type]
    before = fwd.errors.get("malformed_message", 0)
    fwd._message(r, '{"msgtype": "router_config", "x": ' + deep)
    assert fwd.errors["malformed_message"] == before + 1
