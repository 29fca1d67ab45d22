"""Fuzz targets: each takes the fuzzer's bytes and fails (raises) only on a real defect.

A defect is: the compiled codec and its Python twin disagree; an input the door accepts
makes records a forwarder cannot encode; a parser raises anything but its documented error;
a config problem message grows past its bound. Run by ``tests/fuzz/run.py`` (atheris).
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable

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


TARGETS: dict[str, Callable[[bytes], None]] = {
    "gwmp": gwmp, "phy": phy, "sensors": sensors, "nmea": nmea, "modbus": modbus,
    "config": config, "bundle": bundle, "remote_target": remote_target,
}
