"""Fuzz targets: each takes the fuzzer's bytes and fails (raises) only on a real defect.

A defect is: the compiled codec and its Python twin disagree; an input the door accepts
makes records a forwarder cannot encode; a parser raises anything but its documented error;
a config problem message grows past its bound. Run by ``tests/fuzz/run.py`` (atheris).
"""

from __future__ import annotations

import asyncio
import importlib
import random
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers import gnss, modbus_rtu
from gateway.config import MAX_PROBLEM, ConfigError, load_config_text
from gateway.frames import _frames_py as twin
from gateway.parking import registry

_compiled = importlib.import_module("gateway.frames._frames_c")


def _outcome(fn: Callable[[bytes], object], data: bytes) -> tuple[object, ...]:
    try:
        value = fn(data)
    except twin.FrameError as exc:
        return ("error", exc.kind, exc.offset, str(exc))
    as_dict = getattr(value, "as_dict", None)
    return ("ok", type(value).__name__, repr(as_dict() if as_dict else value))


def gwmp(data: bytes) -> None:
    """Whole datagrams: both codecs agree, and what the door accepts every forwarder encodes."""
    for name in ("parse_gwmp", "decode_push_data"):
        a = _outcome(getattr(_compiled, name), data)
        b = _outcome(getattr(twin, name), data)
        if a != b:
            raise AssertionError(f"{name} differs on {data!r}: compiled {a} twin {b}")
    from drivers.gwmp_server import GwmpServer
    from tests.helpers.encodable import Sink, encode_everywhere

    records: list[object] = []
    server = GwmpServer(on_uplink=records.append, on_stats=records.append)
    server._transport = Sink()  # type: ignore[assignment]
    server.datagram_received(data, ("127.0.0.1", 40000))
    if server._callback_errors:
        raise AssertionError(f"a callback raised on {data!r}")
    for record in records:
        encode_everywhere(record)  # type: ignore[arg-type]


def phy(data: bytes) -> None:
    a, b = _outcome(_compiled.parse_phy, data), _outcome(twin.parse_phy, data)
    if a != b:
        raise AssertionError(f"parse_phy differs on {data.hex()}: compiled {a} twin {b}")


MODELS = registry.list_models()


def sensors(data: bytes) -> None:
    """Every decoder answers garbage with its own errors, never an exception."""
    if len(data) < 2:
        return
    model = MODELS[data[0] % len(MODELS)]
    registry.decode_uplink(model, data[1], data[2:])


def nmea(data: bytes) -> None:
    try:
        gnss.parse_sentence(data)
    except gnss.NmeaError:
        pass


def modbus(data: bytes) -> None:
    if len(data) < 3:
        return
    try:
        modbus_rtu.decode_read_reply(data[3:], data[0] % 248, (1, 2, 3, 4)[data[1] % 4], 1 + data[2] % 8)
    except modbus_rtu.RtuError:
        pass


def config(data: bytes) -> None:
    """The loader refuses with ConfigError only, each problem one bounded line."""
    text = data.decode("utf-8", "replace")
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    try:
        load_config_text(text)
    except ConfigError as exc:
        for p in exc.problems:
            if "\n" in p or len(p) > MAX_PROBLEM + 80:
                raise AssertionError(f"problem line unbounded ({len(p)} chars): {p[:200]!r}") from None


def bundle(data: bytes) -> None:
    """An uploaded on-site bundle: refused with ValueError or read, nothing else."""
    from gateway.remote.fetchers import bundle_files

    try:
        bundle_files(data)
    except ValueError:
        pass


def remote_target(data: bytes) -> None:
    """A pushed config target, checked as the operator tools check it."""
    from gateway.remote.target import operator_check

    try:
        operator_check(data.decode("utf-8", "replace"), source="fuzz", eui=None)
    except ConfigError:
        pass


# ---- Basics Station: what an LNS sends ----------------------------------------------------

STATION_ROUTER = 0x0016C001FF000001
STATION_LOCAL = 0xB827EBFFFE000001
_station_state: list[Any] = []


class _Ws:
    """The websocket as the station code sees it: answers ``receive`` from a script."""

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.sent, self.closed = texts, [], False

    async def send_str(self, text: str) -> None:
        self.sent.append(text)

    async def receive(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - aiohttp's signature
        import aiohttp

        if not self.texts:
            return aiohttp.WSMessage(aiohttp.WSMsgType.CLOSED, None, None)
        return aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, self.texts.pop(0), None)

    async def pong(self, data: bytes) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class _Relay:
    """A local packet forwarder that takes every downlink (so dntxed goes back up)."""

    async def send_downlink(self, local: int | None, txpk: dict[str, Any]) -> dict[str, Any]:
        return {"error": "NONE"}


def _station() -> tuple[Any, Any, asyncio.AbstractEventLoop]:
    if not _station_state:
        from gateway.config import StationForward
        from gateway.forward.station import StationForwarder

        cfg = StationForward(name="lns", uri="ws://lns.invalid:6090", eui_map={STATION_LOCAL: STATION_ROUTER})
        fwd = StationForwarder(cfg, gateway_eui=STATION_LOCAL, relays=[_Relay()],  # type: ignore[list-item]
                               rng=random.Random(0))
        r = fwd._router(STATION_ROUTER)
        r.clocks[STATION_LOCAL].to_xtime(1_000_000, 1_790_000_000_000_000)
        r.ws = _Ws([])
        _station_state.extend([fwd, r, asyncio.new_event_loop()])
    return _station_state[0], _station_state[1], _station_state[2]


def station(data: bytes) -> None:
    """LNS messages (router-info answer, the muxs handshake, router_config, dnmsg, timesync,
    anything else): taken or refused with the station code's own errors (ForwarderError,
    counted, logged), never an exception out of the reader."""
    from gateway.forward.base import ForwarderError
    from gateway.forward.station_link import handshake, router_info_uri

    fwd, r, loop = _station()
    text = data.decode("utf-8", "replace")
    try:
        router_info_uri(text, STATION_ROUTER, "fuzz")
    except ForwarderError:
        pass

    async def once() -> None:
        try:
            await handshake(_Ws([text]), "fuzz", 1.0)  # type: ignore[arg-type]
        except ForwarderError:
            pass
        fwd._message(r, text)
        tasks = list(fwd._tasks)
        if tasks:
            await asyncio.gather(*tasks)  # a downlink task's exception is a defect too

    loop.run_until_complete(once())


# ---- remote configuration: the TUF metadata a gateway reads -------------------------------

def metadata(data: bytes) -> None:
    """One file of a valid repository replaced by the fuzzer's bytes (the first byte picks
    which; ``2.root.json`` is a root rotation): the check refuses with Refused, nothing else."""
    import shutil
    import tempfile

    from gateway.remote.client import Refused, check
    from gateway.remote.fetchers import FilesFetcher
    from tests.fuzz.seeds import TUF, tuf_files

    if not data:
        return
    files = tuf_files()
    names = sorted([*files, "metadata/2.root.json"])
    served = {**files, names[data[0] % len(names)]: data[1:]}
    state = Path(tempfile.mkdtemp(prefix="schwebe-fuzz-"))
    try:
        check(fetcher=FilesFetcher(served, "fuzz"), base_url="https://repo.invalid",
              state_dir=state, trusted_root=TUF / "metadata" / "1.root.json", eui=STATION_LOCAL)
    except Refused:
        pass
    finally:
        shutil.rmtree(state, ignore_errors=True)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "gwmp": gwmp, "phy": phy, "sensors": sensors, "nmea": nmea, "modbus": modbus,
    "config": config, "bundle": bundle, "remote_target": remote_target,
    "station": station, "metadata": metadata,
}
