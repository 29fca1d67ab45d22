"""Self-update with the real daemon: a release on trial judged by the confirm window, the next
release found in an HTTPS repository (made with `schwebe fleet`), staged, and the daemon
stopping with exit 75 so that systemd starts it again through the root step."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from gateway.update import EXIT_UPDATE
from gateway.update.files import running_version
from tests.helpers.daemon import Daemon, free_port
from tests.mosquitto import Mosquitto, mosquitto  # noqa: F401
from tests.test_remote_config import HttpsRepo
from tests.test_update import Gateway, cli

RUNNING = running_version()  # the checkout's version: the release "on trial" here


def on_trial(tmp: Path) -> Gateway:
    """A gateway whose root step has just switched to RUNNING (from 0.0.1)."""
    gw = Gateway(tmp, first="0.0.1")
    gw.release(RUNNING)
    assert gw.stage()  # the old release saw forwarder "city" deliver (the baseline)
    gw.slots().apply()
    assert gw.current() == RUNNING
    return gw


def daemon_config(gw: Gateway, repository: str, extra: str = "") -> int:
    web = free_port()
    gw.config.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{gw.data}"
[[sources.gwmp]]
bind = "127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
[web]
bind = "127.0.0.1:{web}"
open_read_only = true
{extra}
[remote_config]
root = "{gw.repo}/metadata/1.root.json"
{repository}
poll_interval = "10s"
confirm_window = "2s"
install_dir = "{gw.opt}"
""")
    return web


def test_a_release_on_trial_confirms_then_the_next_is_staged_over_https(
        tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    gw = on_trial(tmp_path)  # forwarder "city" delivered under the old release: it must again
    https = HttpsRepo(tmp_path, gw.repo)
    web = daemon_config(gw, f'repository = "{https.url}"\nca = "{https.cert}"\nmqtt = "city"',
                        f'[[forward.mqtt]]\nname = "city"\nurl = "{mosquitto.url}"')
    seen: list[dict[str, Any]] = []
    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2)
    watcher.on_message = lambda _c, _u, m: seen.append(json.loads(m.payload)) if m.payload else None
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe("eu868/gateway/+/state/update", qos=1)
    watcher.loop_start()
    gw.release("99.0")  # the operator's next release, already published
    d = Daemon(gw.config, web)
    try:
        st = d.wait("the trial shown", lambda s: s["update"]["trying"] == RUNNING, 20)["update"]
        assert st["running"] == RUNNING and st["enabled"] is True
        st = d.wait("confirmed", lambda s: s["update"]["outcome"] == "confirmed", 20)["update"]
        assert st["trying"] is None and st["version"] == RUNNING
        # the first poll after the window finds 99.0, stages it and stops for the switch
        assert d.proc.wait(30) == EXIT_UPDATE
        time.sleep(0.5)
    finally:
        code = d.stop()
        https.close()
        watcher.loop_stop()
        watcher.disconnect()
    # the broker carried the state: on trial, confirmed, then the next one staged
    assert [(m["eui"], m["trying"]) for m in seen[:1]] == [("b827ebfffe000001", RUNNING)], seen
    assert any(m["outcome"] == "confirmed" and m["version"] == RUNNING for m in seen), seen
    assert any(m["staged"] == "99.0" for m in seen), seen
    assert code == EXIT_UPDATE
    assert "stopping for a release switch (exit 75)" in d.log.read_text()
    assert any("/targets/releases/all/" in line and " 200" in line for line in https.log())
    gw.slots().apply()  # the next start: RUNNING confirmed, 99.0 on trial
    assert gw.link("confirmed") == RUNNING and gw.current() == "99.0"
    rc, out, _ = cli("update", "status", "--config", str(gw.config))
    assert rc == 0 and json.loads(out)["trying"] == "99.0"


def test_a_release_whose_forwarder_cannot_deliver_asks_to_be_rolled_back(tmp_path: Path) -> None:
    gw = on_trial(tmp_path)
    dead = free_port()  # forwarder "city" delivered under the old release; now nothing listens
    web = daemon_config(gw, 'repository = "https://127.0.0.1:9/"',
                        f'[[forward.mqtt]]\nname = "city"\nurl = "mqtt://127.0.0.1:{dead}"')
    d = Daemon(gw.config, web)
    try:
        assert d.proc.wait(30) == EXIT_UPDATE
    finally:
        d.stop()
    gw.slots().apply()
    assert gw.current() == gw.link("confirmed") == "0.0.1"
    rc, out, _ = cli("update", "status", "--config", str(gw.config))
    st = json.loads(out)
    assert rc == 1 and st["outcome"] == "rolled-back" and st["version"] == RUNNING
    assert "forwarder city cannot deliver" in st["reason"] and st["reason"].endswith("back to 0.0.1")
