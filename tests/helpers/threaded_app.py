"""An aiohttp backend on its own thread and loop, for tests that drive a real daemon process
from synchronous code (soak, fault campaign)."""
from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from tests.helpers.daemon import free_port


def serve_in_thread(app: web.Application) -> int:
    """Start `app` on 127.0.0.1 in a daemon thread; returns the port once it listens."""
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    assert ready.wait(10), "backend did not start listening"
    return port
