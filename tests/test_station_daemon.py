"""The whole daemon with a Basics Station forwarder: packet forwarder -> gwmp source -> buffer ->
websocket over TLS (token credential files, as The Things Stack issues them) -> stand-in LNS;
the status page shows the LNS going away and the backlog arriving when it is back."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

from gateway import frames
from tests.helpers.station_lns import EU868_ROUTER_CONFIG, Pki, StationLns
from tests.test_pipeline_e2e import Running, _until

PF_EUI = 0xB827EBFFFE000001


def _push(run: Running, sock: socket.socket, fcnts: range) -> None:
    rxpk = []
    for f in fcnts:
        phy = bytes.fromhex("4034120126") + bytes([0x00]) + f.to_bytes(2, "little") + bytes.fromhex("01AABB01020304")
        rxpk.append({"tmst": 1000 + f, "freq": 868.3, "chan": 1, "rfch": 0, "stat": 1, "modu": "LORA",
                     "datr": "SF9BW125", "codr": "4/5", "rssi": -70, "lsnr": 5.5, "size": len(phy),
                     "data": base64.b64encode(phy).decode()})
    sock.sendto(frames.encode_push_data(fcnts.start, PF_EUI, rxpk), run.gw.sources[0].bound_address)


async def test_daemon_with_station_credentials_delivers_and_the_page_shows_the_outage(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    lns = StationLns(pki, token="Bearer NNSXS.DAEMON")
    lns.routers[PF_EUI] = dict(EU868_ROUTER_CONFIG)
    await lns.start()
    (tmp_path / "tc.key").write_text("Authorization: Bearer NNSXS.DAEMON\r\n")
    (tmp_path / "tc.key").chmod(0o600)
    cfg = f"""
[gateway]
eui = "{PF_EUI:016x}"
data_dir = "{tmp_path / 'data'}"

[buffer]
commit_interval = "50ms"

[[sources.gwmp]]
bind = "127.0.0.1:0"

[[forward.station]]
name = "tts"
uri = "{lns.uri}"
trust = "{pki.trust}"
key = "{tmp_path / 'tc.key'}"
start = "oldest"
timeout = "2s"

[web]
bind = "127.0.0.1:0"
open_read_only = true
"""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        async with Running(cfg) as run:
            _push(run, sock, range(0, 5))
            await _until(lambda: len(lns.of(PF_EUI, "updf")) == 5, what="5 updf at the LNS")
            status = await run.status()
            tts = status["forwarders"]["tts"]
            assert tts["connected"] is True and tts["backend"]["auth"] == "token"
            assert "NNSXS" not in str(status)  # the token is never on the page
            await lns.stop()
            await _until(lambda: not run.gw.deliveries["tts"].health()["connected"], what="disconnected")
            _push(run, sock, range(5, 10))
            await _until(lambda: run.gw.deliveries["tts"].health()["lag_records"] == 5, what="buffered")
            down = (await run.status())["forwarders"]["tts"]
            assert down["connected"] is False and down["last_error"]
            await lns.start()
            await _until(lambda: len(lns.of(PF_EUI, "updf")) == 10, timeout=20, what="backlog delivered")
        assert sorted(m["FCnt"] for m in lns.of(PF_EUI, "updf")) == list(range(10))
        assert all(m["DR"] == 3 and m["Freq"] == 868_300_000 for m in lns.of(PF_EUI, "updf"))
    finally:
        sock.close()
        await lns.stop()
    assert lns.violations == []
