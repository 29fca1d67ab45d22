"""Builds the forwarder for one ``[[forward.*]]`` config section (the pipeline's single entry point).

Knows which module serves which config type; downlink-capable forwarders get the local
packet-forwarder sources that can relay downlinks (anything with ``send_downlink(eui, txpk)``).
"""

from __future__ import annotations

import inspect
from typing import Any

from gateway.config import (
    FileForward,
    ForwardCommon,
    GwmpForward,
    HttpForward,
    MqttForward,
    NgsiLdForward,
    StationForward,
)
from gateway.forward.base import Forwarder
from gateway.forward.mqtt import DownlinkRelay


def _relays(sources: list[Any]) -> list[DownlinkRelay]:
    """Sources with ``send_downlink(gateway_eui, txpk)``: GWMP servers and concentratord sources.

    In source order; each answers UNKNOWN_GATEWAY for a gateway it does not serve, so the
    forwarder tries the next one.
    """
    out: list[DownlinkRelay] = []
    for s in sources:
        fn = getattr(s, "send_downlink", None)
        if fn is not None and "txpk" in inspect.signature(fn).parameters:
            out.append(s)
    return out


def build_forwarder(fcfg: ForwardCommon, *, gateway_eui: int, sources: list[Any]) -> Forwarder:
    if isinstance(fcfg, FileForward):
        from gateway.forward.file import FileForwarder

        return FileForwarder(fcfg)
    if isinstance(fcfg, MqttForward):
        from gateway.forward.mqtt import MqttForwarder

        return MqttForwarder(fcfg, gateway_eui=gateway_eui, relays=_relays(sources))
    if isinstance(fcfg, HttpForward):
        from gateway.forward.http import HttpForwarder

        return HttpForwarder(fcfg, gateway_eui=gateway_eui)
    if isinstance(fcfg, NgsiLdForward):
        from gateway.forward.ngsi import NgsiForwarder

        return NgsiForwarder(fcfg)
    if isinstance(fcfg, GwmpForward):
        from gateway.forward.lns import LnsForwarder

        return LnsForwarder(fcfg, gateway_eui=gateway_eui, relays=_relays(sources))
    if isinstance(fcfg, StationForward):
        from gateway.forward.station import StationForwarder

        return StationForwarder(fcfg, gateway_eui=gateway_eui, relays=_relays(sources))
    raise ValueError(f"forward.{fcfg.name}: no forwarder for config type {type(fcfg).__name__}")
