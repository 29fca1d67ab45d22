"""Frame codec entry point: the compiled ``gateway.frames._frames_c`` when built, else the Python twin.

Callers import from here only. ``SCHWEBE_NO_EXTENSIONS=1`` forces the twin (read once, here,
like aio-libs' ``*_NO_EXTENSIONS`` switches) so a suspected compiled-path bug can be ruled out.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Final

from gateway.frames import _frames_py

# The switch exists to debug the compiled path in the field; it is the one env read of the codec.
_FORCE_PYTHON: Final = os.environ.get("SCHWEBE_NO_EXTENSIONS", "") == "1"

# Imported by name: this package's lazy __getattr__ below would otherwise type it as Any?.
_impl: ModuleType
if not _FORCE_PYTHON:
    try:
        _impl = importlib.import_module("gateway.frames._frames_c")
    except ImportError:
        _impl = _frames_py
else:
    _impl = _frames_py

IMPLEMENTATION: Final[str] = _impl.IMPLEMENTATION

# Shared by both implementations (the compiled module re-exports the twin's objects).
FrameError = _frames_py.FrameError
GwmpPacket = _frames_py.GwmpPacket

MTYPE_NAMES = _frames_py.MTYPE_NAMES
IDENTIFIER_NAMES = _frames_py.IDENTIFIER_NAMES
MAX_DATAGRAM = _frames_py.MAX_DATAGRAM
MAX_RXPK = _frames_py.MAX_RXPK
PUSH_DATA = _frames_py.PUSH_DATA
PUSH_ACK = _frames_py.PUSH_ACK
PULL_DATA = _frames_py.PULL_DATA
PULL_RESP = _frames_py.PULL_RESP
PULL_ACK = _frames_py.PULL_ACK
TX_ACK = _frames_py.TX_ACK
b64encode = _frames_py.b64encode
netid_devaddr_prefix = _frames_py.netid_devaddr_prefix
encode_push_data = _frames_py.encode_push_data
encode_pull_data = _frames_py.encode_pull_data
encode_pull_resp = _frames_py.encode_pull_resp
encode_tx_ack = _frames_py.encode_tx_ack

# Implementation-specific (hot path).
PhyPayload = _impl.PhyPayload
Rxpk = _impl.Rxpk
PushData = _impl.PushData
parse_phy = _impl.parse_phy
parse_gwmp = _impl.parse_gwmp
decode_push_data = _impl.decode_push_data
b64decode_tolerant = _impl.b64decode_tolerant
encode_push_ack = _impl.encode_push_ack
encode_pull_ack = _impl.encode_pull_ack
decode_lines = _impl.decode_lines
rxpk_door = _impl.rxpk_door
uplink_json_fast = _impl.uplink_json_fast
cbor_dumps_fast = _impl.cbor_dumps_fast
uplink_records = _impl.uplink_records
uplink_publishes = _impl.uplink_publishes
mqtt_publish_frames = _impl.mqtt_publish_frames

# The batch tools (numpy arrays of many frames) on first use only: numpy is ~11 MiB of RSS
# that the daemon, which never calls them, would otherwise carry.
_BATCH_TWIN: Final = frozenset({"PHY_DTYPE", "RXPK_DTYPE", "devaddr_prefix_mask", "netid_mask"})
_BATCH_IMPL: Final = frozenset({"parse_phy_batch", "push_data_batch"})


def __getattr__(name: str) -> Any:
    if name in _BATCH_TWIN:
        return getattr(_frames_py, name)
    if name in _BATCH_IMPL:
        return getattr(_impl, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IDENTIFIER_NAMES",
    "IMPLEMENTATION",
    "MAX_DATAGRAM",
    "MAX_RXPK",
    "MTYPE_NAMES",
    "PHY_DTYPE",
    "PULL_ACK",
    "PULL_DATA",
    "PULL_RESP",
    "PUSH_ACK",
    "PUSH_DATA",
    "RXPK_DTYPE",
    "TX_ACK",
    "FrameError",
    "GwmpPacket",
    "PhyPayload",
    "PushData",
    "Rxpk",
    "b64decode_tolerant",
    "b64encode",
    "cbor_dumps_fast",
    "decode_lines",
    "decode_push_data",
    "devaddr_prefix_mask",
    "encode_pull_ack",
    "encode_pull_data",
    "encode_pull_resp",
    "encode_push_ack",
    "encode_push_data",
    "encode_tx_ack",
    "mqtt_publish_frames",
    "netid_devaddr_prefix",
    "netid_mask",
    "parse_gwmp",
    "parse_phy",
    "parse_phy_batch",
    "push_data_batch",
    "rxpk_door",
    "uplink_json_fast",
    "uplink_publishes",
    "uplink_records",
]
