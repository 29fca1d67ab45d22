"""Serial link: reconnect with backoff when the device node vanishes and returns; no fd left open."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from drivers.serial_link import Backoff, SerialLink, SerialLinkLost
from drivers.sim.serial_units import _PtyDevice


def _open_fds_to(target: str) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                n += 1
        except OSError:
            pass
    return n


def test_backoff_grows_to_the_cap_with_bounded_jitter() -> None:
    b = Backoff(initial=0.5, maximum=8.0, factor=2.0, jitter=0.5, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    bases = [0.5, 1, 2, 4, 8, 8, 8, 8]
    for d, base in zip(delays, bases, strict=True):
        assert base * 0.5 <= d <= base
    assert len(set(delays)) == len(delays)  # jittered, not in lock-step
    b.reset()
    assert b.next_delay() <= 0.5


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=0)


async def test_waits_for_device_node_then_reconnects_after_unplug(tmp_path: Path) -> None:
    link_path = str(tmp_path / "ttyUSB0")
    dev = _PtyDevice(link_path)
    link = SerialLink(link_path, 9600, backoff=Backoff(initial=0.02, maximum=0.1))

    # No device node yet: open keeps retrying (and counting) until it appears.
    opener = asyncio.create_task(link.open())
    await asyncio.sleep(0.2)
    assert not opener.done()
    assert link.open_failures >= 2
    assert "open failed" in (link.last_error or "")
    await dev.start()
    conn = await asyncio.wait_for(opener, 2)
    assert link.connected
    slave = dev.slave_name
    assert slave is not None
    os.write(dev._master or -1, b"hello")
    assert await conn.read(1.0) == b"hello"

    # Unplug: the reader sees the loss instead of hanging.
    dev.unplug()
    with pytest.raises(SerialLinkLost):
        while True:
            await conn.read(1.0)
    conn.close()
    assert _open_fds_to(slave) == 0
    dev.replug()
    conn2 = await asyncio.wait_for(link.open(), 2)
    os.write(dev._master or -1, b"again")
    assert await conn2.read(1.0) == b"again"
    conn2.close()
    await dev.close()


async def test_cancelled_session_closes_the_port_at_once(tmp_path: Path) -> None:
    dev = _PtyDevice(str(tmp_path / "ttyACM0"))
    await dev.start()
    link = SerialLink(dev.port, 9600)
    entered = asyncio.Event()

    async def user() -> None:
        async with link.session() as conn:
            entered.set()
            await conn.read()

    task = asyncio.create_task(user())
    await asyncio.wait_for(entered.wait(), 2)
    assert dev.slave_name is not None
    assert _open_fds_to(dev.slave_name) == 2  # the simulator's and ours
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _open_fds_to(dev.slave_name) == 1  # only the simulator's: the dead task holds nothing
    assert not link.connected
    # The port is free again for whoever comes next (exclusive lock released).
    async with link.session() as conn:
        assert conn.port == dev.port
    await dev.close()


async def test_close_releases_the_device_before_returning(tmp_path: Path) -> None:
    # pyserial-asyncio-fast alone closes the fd later in an executor job; a supervisor
    # restarting the driver right away would then find the port still locked.
    dev = _PtyDevice(str(tmp_path / "ttyUSB1"))
    await dev.start()
    assert dev.slave_name is not None
    link = SerialLink(dev.port, 9600)
    conn = await link.open()
    assert _open_fds_to(dev.slave_name) == 2
    conn.close()
    assert _open_fds_to(dev.slave_name) == 1
    await dev.close()
