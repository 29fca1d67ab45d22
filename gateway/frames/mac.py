"""LoRaWAN MAC commands: names and payload lengths by CID, and splitting FOpts into commands.

No crypto here (decrypting 1.1 FOpts or an FPort-0 payload is gateway.frames.lorawan's job),
so `schwebe decode` of frames without keys starts without importing `cryptography`.
"""

from __future__ import annotations

from typing import Final

from gateway.frames._frames_py import Frozen

# CID -> (name, payload length). 1.0.x and 1.1 share one numbering; Class B commands from
# 1.0.3/1.1, DeviceMode from 1.1 Class C. Lengths from LoRaWAN 1.1 §5 and 1.0.4 §5.
UPLINK_MAC: Final[dict[int, tuple[str, int]]] = {
    0x01: ("ResetInd", 1),
    0x02: ("LinkCheckReq", 0),
    0x03: ("LinkADRAns", 1),
    0x04: ("DutyCycleAns", 0),
    0x05: ("RXParamSetupAns", 1),
    0x06: ("DevStatusAns", 2),
    0x07: ("NewChannelAns", 1),
    0x08: ("RXTimingSetupAns", 0),
    0x09: ("TxParamSetupAns", 0),
    0x0A: ("DlChannelAns", 1),
    0x0B: ("RekeyInd", 1),
    0x0C: ("ADRParamSetupAns", 0),
    0x0D: ("DeviceTimeReq", 0),
    0x0F: ("RejoinParamSetupAns", 1),
    0x10: ("PingSlotInfoReq", 1),
    0x11: ("PingSlotChannelAns", 1),
    0x12: ("BeaconTimingReq", 0),
    0x13: ("BeaconFreqAns", 1),
    0x20: ("DeviceModeInd", 1),
}
DOWNLINK_MAC: Final[dict[int, tuple[str, int]]] = {
    0x01: ("ResetConf", 1),
    0x02: ("LinkCheckAns", 2),
    0x03: ("LinkADRReq", 4),
    0x04: ("DutyCycleReq", 1),
    0x05: ("RXParamSetupReq", 4),
    0x06: ("DevStatusReq", 0),
    0x07: ("NewChannelReq", 5),
    0x08: ("RXTimingSetupReq", 1),
    0x09: ("TxParamSetupReq", 1),
    0x0A: ("DlChannelReq", 4),
    0x0B: ("RekeyConf", 1),
    0x0C: ("ADRParamSetupReq", 1),
    0x0D: ("DeviceTimeAns", 5),
    0x0E: ("ForceRejoinReq", 2),
    0x0F: ("RejoinParamSetupReq", 1),
    0x10: ("PingSlotInfoAns", 0),
    0x11: ("PingSlotChannelReq", 4),
    0x12: ("BeaconTimingAns", 3),
    0x13: ("BeaconFreqReq", 3),
    0x20: ("DeviceModeConf", 1),
}


class MacCommand(Frozen):
    __slots__ = ("cid", "name", "payload")
    __match_args__ = ("cid", "name", "payload")

    cid: int
    name: str
    payload: bytes

    def __init__(self, cid: int, name: str, payload: bytes) -> None:
        object.__setattr__(self, "cid", cid)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "payload", payload)


def split_mac_commands(data: bytes, *, uplink: bool) -> tuple[list[MacCommand], bytes]:
    """Split plaintext FOpts or an FPort-0 payload into commands.

    Returns the commands and the unsplit rest: splitting stops at the first CID it does not
    know (or whose payload is cut short), since a length can only be known from the CID.
    """
    table = UPLINK_MAC if uplink else DOWNLINK_MAC
    out: list[MacCommand] = []
    i, n = 0, len(data)
    while i < n:
        entry = table.get(data[i])
        if entry is None or i + 1 + entry[1] > n:
            break
        name, size = entry
        out.append(MacCommand(data[i], name, data[i + 1 : i + 1 + size]))
        i += 1 + size
    return out, data[i:]
