"""Supervisor: order, restart with backoff, graceful stop, systemd notifications."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from gateway.app import ComponentStartError, Supervisor
from gateway.sdnotify import Notifier


class Recorder:
    def __init__(self, name: str, events: list[str], *, start_delay: float = 0.0) -> None:
        self.name = name
        self.events = events
        self.start_delay = start_delay

    async def start(self) -> None:
        await asyncio.sleep(self.start_delay)
        self.events.append(f"start:{self.name}")

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.events.append(f"stop:{self.name}")


class Crasher:
    name = "crasher"

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError(f"boom {self.runs}")
        await asyncio.Event().wait()


async def test_start_in_order_stop_in_reverse() -> None:
    events: list[str] = []
    comps = [Recorder("buffer", events), Recorder("source", events, start_delay=0.05),
             Recorder("web", events)]
    sup = Supervisor(comps)
    task = asyncio.create_task(sup.serve(install_signals=False))
    await asyncio.wait_for(sup.ready.wait(), 5)
    assert events == ["start:buffer", "start:source", "start:web"]
    sup.request_stop()
    await asyncio.wait_for(task, 5)
    assert events[3:] == ["stop:web", "stop:source", "stop:buffer"]


async def test_crashing_component_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    crasher = Crasher(crashes=3)
    sup = Supervisor([crasher], backoff_base=0.01, backoff_cap=0.05)
    task = asyncio.create_task(sup.serve(install_signals=False))
    for _ in range(200):
        if crasher.runs >= 4:
            break
        await asyncio.sleep(0.01)
    assert crasher.runs == 4
    state = sup.states["crasher"]
    assert state.restarts == 3 and state.running
    assert state.last_error == "RuntimeError: boom 3"
    crashes = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(crashes) == 3
    assert all(r.fields["component"] == "crasher" for r in crashes)  # type: ignore[attr-defined]
    sup.request_stop()
    await asyncio.wait_for(task, 5)


async def test_stop_that_hangs_is_cut_at_the_drain_timeout() -> None:
    class Hanger:
        name = "hanger"

        async def run(self) -> None:
            await asyncio.Event().wait()

        async def stop(self) -> None:
            await asyncio.sleep(60)

    events: list[str] = []
    sup = Supervisor([Recorder("first", events), Hanger()], drain_timeout=0.3)
    task = asyncio.create_task(sup.serve(install_signals=False))
    await asyncio.wait_for(sup.ready.wait(), 5)
    sup.request_stop()
    await asyncio.wait_for(task, 5)
    assert events[-1] == "stop:first"  # the others still stopped after the hang


async def test_sd_notify_ready_after_start_then_watchdog_and_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        events: list[str] = []
        notifier = Notifier(path, watchdog_usec="100000")  # ping every 50 ms
        sup = Supervisor([Recorder("slow-source", events, start_delay=0.2)], notifier=notifier)
        task = asyncio.create_task(sup.serve(install_signals=False))
        loop = asyncio.get_running_loop()
        first = (await asyncio.wait_for(loop.sock_recv(sock, 1024), 5)).decode()
        assert first.startswith("READY=1")
        assert events == ["start:slow-source"]  # READY only once the source is up
        second = (await asyncio.wait_for(loop.sock_recv(sock, 1024), 5)).decode()
        assert second == "WATCHDOG=1"
        sup.request_stop()
        await asyncio.wait_for(task, 5)
        seen = []
        while True:
            try:
                seen.append(sock.recv(1024).decode())
            except BlockingIOError:
                break
        assert "STOPPING=1" in seen


async def test_no_watchdog_while_unhealthy_and_again_once_healthy(tmp_path: Path) -> None:
    # systemd restarts a daemon whose pings stop: an unhealthy gateway must stop pinging
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        health = {"ok": False}
        notifier = Notifier(path, watchdog_usec="40000")  # ping every 20 ms while healthy
        sup = Supervisor([Recorder("source", [])], notifier=notifier,
                         healthy=lambda: health["ok"])
        task = asyncio.create_task(sup.serve(install_signals=False))
        loop = asyncio.get_running_loop()
        first = (await asyncio.wait_for(loop.sock_recv(sock, 1024), 5)).decode()
        assert first.startswith("READY=1")
        # unhealthy for 15 watchdog periods: not a single ping
        with pytest.raises(TimeoutError):
            got = await asyncio.wait_for(loop.sock_recv(sock, 1024), 0.3)
            raise AssertionError(f"sent while unhealthy: {got!r}")
        health["ok"] = True
        pings = [(await asyncio.wait_for(loop.sock_recv(sock, 1024), 5)).decode()
                 for _ in range(3)]
        assert pings == ["WATCHDOG=1"] * 3
        health["ok"] = False
        await asyncio.sleep(0.05)  # a ping already on its way may still arrive
        while True:
            try:
                sock.recv(1024)
            except BlockingIOError:
                break
        with pytest.raises(TimeoutError):
            got = await asyncio.wait_for(loop.sock_recv(sock, 1024), 0.3)
            raise AssertionError(f"sent while unhealthy again: {got!r}")
        sup.request_stop()
        await asyncio.wait_for(task, 5)


async def test_a_failed_start_names_the_component_and_stops_the_others(tmp_path: Path) -> None:
    class Busy(Recorder):
        async def start(self) -> None:
            raise OSError(98, "address already in use")

    events: list[str] = []
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        sup = Supervisor([Recorder("buffer", events), Recorder("source", events),
                          Busy("web", events), Recorder("never", events)],
                         notifier=Notifier(path))
        # bare, not inside an ExceptionGroup: the command line prints it as one line
        with pytest.raises(ComponentStartError) as caught:
            await asyncio.wait_for(sup.serve(install_signals=False), 5)
        seen = []
        while True:
            try:
                seen.append(sock.recv(1024).decode())
            except BlockingIOError:
                break
    assert caught.value.component == "web"
    assert isinstance(caught.value.cause, OSError)
    assert str(caught.value) == "web: address already in use"  # no "[Errno 98]" for a technician
    assert events == ["start:buffer", "start:source", "stop:source", "stop:buffer"]
    assert not sup.ready.is_set()
    assert not any(s.startswith("READY=1") for s in seen) and seen[0].startswith("STOPPING=1")


def test_notifier_without_socket_is_silent() -> None:
    n = Notifier(None)
    assert not n.enabled
    n.notify("READY=1")  # must not raise


async def test_remove_stops_a_component_that_swallowed_its_cancellation() -> None:
    """Python 3.11's wait_for can lose a cancellation (the awaited result arriving just then);
    a reconfiguration must still get the old component to stop, not wait for it forever."""

    class Stubborn:
        name = "stubborn"
        stopped = False

        async def run(self) -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                pass  # lost, as wait_for loses it
            await asyncio.sleep(60)

        async def stop(self) -> None:
            self.stopped = True

    comp = Stubborn()
    sup = Supervisor([comp])
    serving = asyncio.create_task(sup.serve(install_signals=False))
    await asyncio.wait_for(sup.ready.wait(), 5)
    await asyncio.wait_for(sup.remove("stubborn"), 5)
    assert comp.stopped and "stubborn" not in sup.states
    sup.request_stop()
    await asyncio.wait_for(serving, 5)
