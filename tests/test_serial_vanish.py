"""A serial device vanishing and returning under a real `schwebe run`: the GNSS receiver's
pseudo-terminal is closed and its device node removed (a USB adapter pulled), then a new pty
appears behind the same path (plugged back in). Readings resume by themselves and
/api/status says what happened meanwhile. (The drivers alone: tests/test_serial_link.py,
tests/test_gnss.py, tests/test_modbus.py.)"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from drivers.sim.serial_units import SimNmeaReceiver
from tests.helpers.daemon import Daemon, free_port


async def test_gnss_pulled_and_plugged_back_under_a_running_daemon(tmp_path: Path) -> None:
    sim = SimNmeaReceiver(str(tmp_path / "ttyACM0"), interval=0.1)
    await sim.start()
    udp, web_port = free_port(socket.SOCK_DGRAM), free_port()
    config = tmp_path / "schwebe.toml"
    config.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{tmp_path / 'data'}"
[[sources.gwmp]]
bind = "127.0.0.1:{udp}"
[sources.gnss]
port = "{sim.link_path}"
[[forward.file]]
name = "archive"
path = "{tmp_path / 'archive.jsonl'}"
[web]
bind = "127.0.0.1:{web_port}"
open_read_only = true
""")
    gw = Daemon(config, web_port)

    async def until(what: str, check: Any, limit: float = 20) -> dict[str, Any]:
        # the simulator writes from this loop: wait in a thread
        return await asyncio.to_thread(gw.wait, what, check, limit)

    try:
        st = await until("fixes", lambda s: (s["sources"]["gnss"]["gga"] >= 3
                                             and s["gnss"] is not None and s["gnss"]["stat"] is not None))
        assert st["gnss"]["stat"]["lati"] == round(sim.lat, 5)
        sim.unplug()
        st = await until("the vanished receiver reported", lambda s: (
            not s["sources"]["gnss"]["connected"] and s["sources"]["gnss"]["open_failures"] >= 1))
        g = st["sources"]["gnss"]
        assert g["disconnects"] == 1 and str(sim.link_path) in g["last_error"], g  # what and where
        # the page's verdict names it (the technician sees it without reading counters)
        reasons = st["verdict"]["reasons"]
        assert st["verdict"]["state"] != "ok" and any("gnss" in str(r).lower() for r in reasons), reasons
        before = g["gga"]
        sim.lat = 48.1372  # it comes back somewhere else (a replaced unit, say)
        sim.replug()
        st = await until("fixes again", lambda s: (
            s["sources"]["gnss"]["connected"] and s["sources"]["gnss"]["gga"] >= before + 3
            and s["gnss"]["stat"] is not None and s["gnss"]["stat"]["lati"] == 48.1372), 40)
        g = st["sources"]["gnss"]
        # what happened meanwhile stays on the record: one disconnect, the failed opens, two opens
        assert g["opens"] == 2 and g["disconnects"] == 1 and g["open_failures"] >= 1, g
        await until("the verdict back to ok", lambda s: s["verdict"]["state"] == "ok", 10)
    finally:
        code = await asyncio.to_thread(gw.stop)
        await sim.close()
    assert code == 0, gw.output()[-3000:]
