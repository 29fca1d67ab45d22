"""Frame codec entry point: the compiled ``gateway.frames._frames_c`` when built, else the Python twin.

Callers import from here only. ``SCHWEBE_NO_EXTENSIONS=1`` forces the twin (read once, here,
like aio-libs' ``*_NO_EXTENSIONS`` switches) so a suspected compiled-path bug can be ruled out.
"""

from __future__ import annotations

import os
from typing import Final

from gateway.frames import _frames_py

# The switch exists to debug the compiled path in the field; it is the one env read of the codec.
_FORCE_PYTHON: Final = os.environ.get("SCHWEBE_NO_EXTENSIONS", "") == "1"

if not _FORCE_PYTHON:
    try:
        from gateway.frames import _frames_c as _impl  # type: ignore[attr-defined,unused-ignore]
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
PHY_DTYPE = _frames_py.PHY_DTYPE
RXPK_DTYPE = _frames_py.RXPK_DTYPE
PUSH_DATA = _frames_py.PUSH_DATA
PUSH_ACK = _frames_py.PUSH_ACK
PULL_DATA = _frames_py.PULL_DATA
PULL_RESP = _frames_py.PULL_RESP
PULL_ACK = _frames_py.PULL_ACK
TX_ACK = _frames_py.TX_ACK
b64encode = _frames_py.b64encode
netid_devaddr_prefix = _frames_py.netid_devaddr_prefix
devaddr_prefix_mask = _frames_py.devaddr_prefix_mask
netid_mask = _frames_py.netid_mask
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
parse_phy_batch = _impl.parse_phy_batch
push_data_batch = _impl.push_data_batch
encode_push_ack = _impl.encode_push_ack
encode_pull_ack = _impl.encode_pull_ack

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
    "decode_push_data",
    "devaddr_prefix_mask",
    "encode_pull_ack",
    "encode_pull_data",
    "encode_pull_resp",
    "encode_push_ack",
    "encode_push_data",
    "encode_tx_ack",
    "netid_devaddr_prefix",
    "netid_mask",
    "parse_gwmp",
    "parse_phy",
    "parse_phy_batch",
    "push_data_batch",
]
