"""Wiring: builds the gateway's components from a Config and connects them one way.

sources -> (frames, parking) -> buffer -> forwarders; the web page only reads.
This is the one place that knows every room; the rooms know only their seams.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from gateway import frames
from gateway.app import Supervisor
from gateway.buffer import Buffer
from gateway.config import Config, ForwardCommon
from gateway.forward.base import DeliveryLoop, Forwarder
from gateway.metrics import Metrics
from gateway.records import Record
from gateway.sdnotify import Notifier
from gateway.web.server import WebServer

log = logging.getLogger("schwebe.pipeline")


class BufferComponent:
    """Opens the store before anything can append, commits on an interval, closes last."""

    name = "buffer"

    def __init__(self, buffer: Buffer) -> None:
        self.buffer = buffer

    async def start(self) -> None:
        await asyncio.to_thread(self.buffer.open)

    async def run(self) -> None:
        await self.buffer.run()

    async def stop(self) -> None:
        await asyncio.to_thread(self.buffer.close)


class DeliveryComponent:
    def __init__(self, loop: DeliveryLoop, name: str) -> None:
        self.loop = loop
        self.name = f"forward:{name}"

    async def run(self) -> None:
        await self.loop.run()


class Gateway:
    """The assembled daemon: holds the components and the views the web page reads."""

    def __init__(self, cfg: Config, *, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.started_at = time.time()
        self.data_dir = cfg.gateway.data_dir
        self.buffer = Buffer(
            Path(self.data_dir) / "buffer.sqlite3",
            max_bytes=cfg.buffer.max_bytes,
            commit_interval=cfg.buffer.commit_interval,
            max_age={
                "uplink": cfg.buffer.max_age.uplink,
                "stats": cfg.buffer.max_age.stats,
                "parking": cfg.buffer.max_age.parking,
                "event": cfg.buffer.max_age.event,
            },
            min_free_bytes=cfg.buffer.min_free,
            memory_reserve_bytes=cfg.buffer.memory_reserve,
            synchronous=cfg.buffer.synchronous.upper(),
        )
        self.sources: list[Any] = []
        self.deliveries: dict[str, DeliveryLoop] = {}
        components: list[Any] = [BufferComponent(self.buffer)]
        components += self._build_sources()
        for fcfg in cfg.forwarders:
            fwd = self._build_forwarder(fcfg)
            self.buffer.register(fcfg.name, start=fcfg.start)
            loop = DeliveryLoop(self.buffer, fwd, max_batch=fcfg.max_batch)
            self.deliveries[fcfg.name] = loop
            components.append(DeliveryComponent(loop, fcfg.name))
        self.web = WebServer(
            bind=cfg.web.bind,
            status=self.status,
            metrics=self.metrics,
            healthy=self.healthy,
            username=cfg.web.username,
            password_hash=cfg.web.password_hash,
            metrics_token=cfg.web.metrics_token,
            open_read_only=cfg.web.open_read_only,
        )
        components.append(self.web)
        components += self._build_simulators()
        self.supervisor = Supervisor(
            components, notifier=notifier or Notifier(None), healthy=self.healthy
        )

    # ------------------------------------------------------------------ building

    def _build_sources(self) -> list[Any]:
        from drivers.dutycycle import DutyCycleLimiter, eu868_bands
        from drivers.gwmp_server import GwmpServer

        out: list[Any] = []
        for i, src in enumerate(self.cfg.sources.gwmp):
            server = GwmpServer(
                bind=src.bind,
                on_uplink=self.accept,
                on_stats=self.accept,
                allowed_euis=set(src.allowed_euis) or None,
                allowed_hosts=set(src.allowed_hosts) or None,
                duty_cycle=DutyCycleLimiter(eu868_bands()),
                name=f"gwmp:{i}",
            )
            self.sources.append(server)
            out.append(server)
        return out

    def _build_forwarder(self, fcfg: ForwardCommon) -> Forwarder:
        from gateway.forward.registry import build_forwarder

        return build_forwarder(fcfg, gateway_eui=self.cfg.gateway.eui, sources=self.sources)

    def _build_simulators(self) -> list[Any]:
        sim_cfg = self.cfg.sources.simulator
        if sim_cfg is None:
            return []
        from drivers.simulator import Simulator

        server = self.sources[0]

        class SimComponent:
            name = "simulator"

            async def run(self_inner) -> None:
                host, port = server.bound_address
                sim = Simulator(
                    target=(host, port), sensors=sim_cfg.sensors, rate=sim_cfg.rate,
                    gateway_eui=self.cfg.gateway.eui, seed=sim_cfg.seed,
                )
                self.simulator = sim
                await sim.run()

        return [SimComponent()]

    # ------------------------------------------------------------------ hot path

    def accept(self, record: Record) -> None:
        """Every record from every source enters here, once."""
        self.buffer.append(record)
        self.metrics.inc("records_received", kind=record.kind)

    # ------------------------------------------------------------------ views

    def healthy(self) -> bool:
        states = self.supervisor.states.values() if hasattr(self, "supervisor") else []
        return all(s.running or s.name == "simulator" for s in states)

    def status(self) -> dict[str, Any]:
        received = self.metrics.total("records_received")
        forwarders = {name: loop.health() for name, loop in self.deliveries.items()}
        forwarded = sum(int(h.get("acked", 0)) for h in forwarders.values())
        return {
            "gateway": {
                "eui": f"{self.cfg.gateway.eui:016x}",
                "uptime_s": round(time.time() - self.started_at, 1),
                "parser": frames.IMPLEMENTATION,
                "pid": os.getpid(),
            },
            "healthy": self.healthy(),
            "counters": {"received": received, "forwarded": forwarded,
                         **self.metrics.snapshot()},
            "sources": {getattr(s, "name", f"source{i}"): s.health()
                        for i, s in enumerate(self.sources)},
            "buffer": self.buffer.stats(),
            "forwarders": forwarders,
            "components": {
                n: {"running": s.running, "restarts": s.restarts, "last_error": s.last_error}
                for n, s in self.supervisor.states.items()
            },
        }

    async def serve(self, *, install_signals: bool = True) -> None:
        log.info("frame parser", extra={"fields": {"implementation": frames.IMPLEMENTATION}})
        await self.supervisor.serve(install_signals=install_signals)
