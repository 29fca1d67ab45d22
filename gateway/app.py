"""Supervisor: one TaskGroup that starts components in order and stops them in reverse.

A crashing component is logged with its name and restarted with backoff, never
taking the daemon down silently. systemd hears READY=1 only once every source is
bound and the web port listens, WATCHDOG=1 while healthy, STOPPING=1 on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.sdnotify import Notifier

log = logging.getLogger("schwebe.app")


class Component(Protocol):
    """Something the supervisor runs.

    `start()` returns once the component is ready (a socket bound, a file open);
    `run()` does the work until cancelled; `stop()` releases what start took and
    may drain. All three are optional on the concrete class except `run`.
    """

    name: str

    async def run(self) -> None: ...


class ComponentStartError(Exception):
    """A component's start() failed: the daemon cannot run. Names the component."""

    def __init__(self, component: str, cause: BaseException) -> None:
        self.component = component
        self.cause = cause
        super().__init__(f"{component}: {describe_error(cause)}")


def describe_error(exc: BaseException) -> str:
    """One line for a human: the message, or the exception's name when it has none.

    An OSError says its message without the "[Errno N]" prefix a technician cannot use."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.strerror:
        text = " ".join(exc.strerror.split())
        if exc.filename is not None:
            text = f"{exc.filename}: {text}"
    return text or type(exc).__name__


async def cancel_and_wait(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel until done. On Python 3.11 a cancellation that meets a completing
    ``asyncio.wait_for`` can be lost (a forwarder's PUBACK arriving just then), and a task
    cancelled only once would run on and hold up a reconfiguration or the shutdown."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)


@dataclass
class ComponentState:
    name: str
    restarts: int = 0
    running: bool = False
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass
class Supervisor:
    components: Sequence[Any]
    notifier: Notifier = field(default_factory=lambda: Notifier(None))
    drain_timeout: float = 10.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    healthy: Callable[[], bool] = lambda: True
    on_ready: Callable[[], Awaitable[None] | None] | None = None
    states: dict[str, ComponentState] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _tg: asyncio.TaskGroup | None = None
    _started: list[Any] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def request_stop(self) -> None:
        """The injectable shutdown trigger (signals call this, tests too)."""
        self._stop.set()

    async def serve(self, *, install_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        started: list[Any] = self._started
        tasks: list[asyncio.Task[None]] = self._tasks
        # raised after the TaskGroup, so the caller gets it bare, not in an ExceptionGroup
        start_error: ComponentStartError | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for comp in self.components:
                    try:
                        await self._launch(comp)
                    except ComponentStartError as exc:
                        # the caller reports it (one line); a traceback says no more
                        start_error = exc
                        self.states[comp.name].last_error = describe_error(exc.cause)
                        break
                    if self._stop.is_set():
                        break
                if start_error is not None:
                    self.notifier.notify(f"STOPPING=1\nSTATUS=cannot start {start_error}")
                    for task in tasks:
                        task.cancel()
                else:
                    await self._run_until_stopped(tg, started, tasks)
            if start_error is not None:
                raise start_error
        finally:
            self._tg = None
            await self._stop_all(started)
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _run_until_stopped(self, tg: asyncio.TaskGroup, started: list[Any],
                                 tasks: list[asyncio.Task[None]]) -> None:
        if not self._stop.is_set():
            self.ready.set()
            self.notifier.notify("READY=1\nSTATUS=running")
            log.info("ready", extra={"fields": {"components": [c.name for c in started]}})
            if self.on_ready is not None:
                res = self.on_ready()
                if res is not None:
                    await res
        if self.notifier.watchdog_interval:
            tasks.append(tg.create_task(self._watchdog(), name="watchdog"))
        await self._stop.wait()
        self.notifier.notify("STOPPING=1")
        log.info("stopping", extra={"fields": {"drain_timeout_s": self.drain_timeout}})
        await cancel_and_wait(tasks)  # run loops end; stop() below drains

    async def add(self, comp: Any) -> None:
        """Start one more component while the others run (a pushed config added it).

        A failing start() raises ComponentStartError and leaves nothing behind."""
        if self._tg is None or self._stop.is_set():
            raise RuntimeError("the supervisor is not running")
        try:
            await self._launch(comp)
        except ComponentStartError:
            self.states.pop(comp.name, None)
            raise

    async def _launch(self, comp: Any) -> None:
        """start() it, then keep its run() going in the task group."""
        assert self._tg is not None
        self.states[comp.name] = ComponentState(comp.name)
        start = getattr(comp, "start", None)
        if start is not None:
            try:
                await start()
            except Exception as exc:
                raise ComponentStartError(comp.name, exc) from exc
        self._started.append(comp)
        self._tasks.append(self._tg.create_task(self._keep_running(comp),
                                                name=f"component:{comp.name}"))

    async def remove(self, name: str) -> None:
        """Stop one component (its run cancelled, its stop() awaited) while the others run."""
        mine = [t for t in self._tasks if t.get_name() == f"component:{name}"]
        for task in mine:
            self._tasks.remove(task)
        await cancel_and_wait(mine)
        for comp in [c for c in self._started if c.name == name]:
            self._started.remove(comp)
            stop = getattr(comp, "stop", None)
            if stop is not None:
                try:
                    await asyncio.wait_for(stop(), self.drain_timeout)
                except Exception:
                    log.exception("component failed while stopping",
                                  extra={"fields": {"component": name}})
        self.states.pop(name, None)

    async def _stop_all(self, started: list[Any]) -> None:
        deadline = time.monotonic() + self.drain_timeout
        for comp in reversed(started):
            stop = getattr(comp, "stop", None)
            if stop is None:
                continue
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.wait_for(stop(), remaining)
            except TimeoutError:
                log.error("component did not stop within the drain timeout",
                          extra={"fields": {"component": comp.name}})
            except Exception:
                log.exception("component failed while stopping",
                              extra={"fields": {"component": comp.name}})

    async def _keep_running(self, comp: Any) -> None:
        state = self.states[comp.name]
        attempt = 0
        while not self._stop.is_set():
            state.running = True
            began = time.monotonic()
            try:
                await comp.run()
                return  # a component that returns is done (e.g. a finite simulator)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.running = False
                state.restarts += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                state.last_error_at = time.time()
                # a component that ran a while before failing starts the backoff over
                attempt = 0 if time.monotonic() - began > 60 else attempt + 1
                delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
                log.exception(
                    "component crashed; restarting",
                    extra={"fields": {"component": comp.name, "restart_in_s": round(delay, 2),
                                      "restarts": state.restarts}},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            finally:
                state.running = False

    async def _watchdog(self) -> None:
        assert self.notifier.watchdog_interval is not None
        while True:
            if self.healthy():
                self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(self.notifier.watchdog_interval)
