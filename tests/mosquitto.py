"""pytest fixture: a real Debian mosquitto on 127.0.0.1, on a free port, config in tmp_path.

Use ``from tests.mosquitto import mosquitto  # noqa: F401`` in a test module. The broker
can be stopped and restarted on the same port (outage tests) and keeps its persistent
sessions across a restart. Under CI=true a missing binary fails the test; otherwise skips.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO = "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else (shutil.which("mosquitto") or "/usr/sbin/mosquitto")


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port() -> int:
    """A free port below the kernel's ephemeral range.

    The broker is stopped and restarted on the same port; a port from the ephemeral range
    may meanwhile become some client's local port. A client reconnecting to the stopped
    broker can even connect to itself (TCP simultaneous open, when the kernel hands it the
    broker's port as its own) and then holds the port: a CI run once failed that way.
    Ports below the range are never handed out to clients.
    """
    rng = random.Random()
    top = min(_ephemeral_low(), 65536) - 1
    for _ in range(200):
        port = rng.randint(10000, max(10001, top))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class Mosquitto:
    """One broker process; ``stop()``/``start()`` keep the port and the session store."""

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "") -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or _free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "autosave_interval 0\n"
            # outage tests queue thousands of QoS 1 messages for an offline subscriber
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "max_keepalive 65535\n"
            "log_type error\nlog_type warning\n"
            f"log_dest file {self.log}\n"
            # as root mosquitto drops to user `mosquitto`, which cannot write in tmp_path
            + ("user root\n" if os.geteuid() == 0 and "user " not in extra_config else "")
            + extra_config
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None, "broker already running"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                if self.proc.stderr:
                    self.proc.stderr.close()
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                self.proc = None
                raise RuntimeError(f"mosquitto exited at start (port {self.port}): {err} {log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout}s")

    def stop(self) -> None:
        """Graceful stop (SIGTERM): sessions and queued messages are saved to disk."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def mosquitto_binary() -> str:
    """The broker's path; fails under CI=true when it is missing, else skips the test."""
    if not (os.path.exists(MOSQUITTO) or shutil.which("mosquitto")):
        msg = f"{MOSQUITTO} not installed (apt-get install mosquitto)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return MOSQUITTO


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto_binary()
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
