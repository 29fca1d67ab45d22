"""Batch tools of the pure-Python twin: header fields of many frames as numpy arrays.

Split from _frames_py so that numpy is imported only by what uses it (the batch tools and
benchmarks), never by the daemon. ``_frames_py`` and ``gateway.frames`` hand these names out
on first access; the compiled module uses the same dtypes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gateway.frames._frames_py import (
    FrameError,
    Rxpk,
    decode_push_data,
    netid_devaddr_prefix,
    parse_phy,
)

PHY_DTYPE: Final = np.dtype(
    [
        ("dev_addr", "<u4"),
        ("fcnt", "<u2"),
        ("fport", "<i2"),
        ("mtype", "u1"),
        ("phy_len", "<u2"),
        ("frm_len", "<u2"),
        ("ok", "?"),
    ]
)
RXPK_DTYPE: Final = np.dtype(
    [
        *((name, PHY_DTYPE.fields[name][0].str) for name in PHY_DTYPE.names or ()),  # type: ignore[index]
        ("rssi", "<f4"),
        ("lsnr", "<f4"),
        ("freq", "<f8"),
        ("sf", "u1"),
    ]
)


def _fill_phy(row: Any, data: bytes) -> None:
    row["phy_len"] = min(len(data), 0xFFFF)
    try:
        p = parse_phy(data)
    except FrameError:
        return
    row["mtype"] = p.mtype
    row["ok"] = True
    if p.dev_addr is not None:
        row["dev_addr"] = p.dev_addr
        row["fcnt"] = p.fcnt
        row["frm_len"] = len(p.frm_payload or b"")
        if p.fport is not None:
            row["fport"] = p.fport


def parse_phy_batch(frames: Iterable[bytes]) -> npt.NDArray[np.void]:
    """Header fields of many PHYPayloads at once; a malformed one gets ok=False and zeros."""
    frames = list(frames)
    out = np.zeros(len(frames), dtype=PHY_DTYPE)
    out["fport"] = -1
    for i, data in enumerate(frames):
        _fill_phy(out[i], bytes(data))
    return out


#: LoRa datarates as forwarders write them ("SF7BW125"); anything else (FSK) gives sf=0.
_SF_RE: Final = re.compile(r"SF([0-9]{1,2})BW[0-9]{1,3}", re.ASCII)


def _num(value: Any) -> float:
    if type(value) is int or type(value) is float:
        return float(value)
    return float("nan")


def push_data_batch(datagrams: Iterable[bytes]) -> npt.NDArray[np.void]:
    """One row per rxpk of many PUSH_DATA datagrams, with the radio metadata.

    Datagrams that are not a valid PUSH_DATA contribute no rows; a bad rxpk gets ok=False.
    Missing numbers are NaN, a missing or FSK datarate gives sf=0.
    """
    decoded: list[Rxpk] = []
    for dg in datagrams:
        try:
            decoded.extend(decode_push_data(dg).rxpk)
        except FrameError:
            continue
    out = np.zeros(len(decoded), dtype=RXPK_DTYPE)
    out["fport"] = -1
    for i, rx in enumerate(decoded):
        row = out[i]
        if rx.error is None and rx.phy is not None:
            _fill_phy(row, rx.phy)
        elif rx.phy is not None:
            row["phy_len"] = min(len(rx.phy), 0xFFFF)
        f = rx.fields
        # a finite value beyond float32 becomes +-inf, as the compiled <float> cast gives
        with np.errstate(over="ignore"):
            row["rssi"] = _num(f.get("rssi"))
            row["lsnr"] = _num(f.get("lsnr"))
        row["freq"] = _num(f.get("freq"))
        datr = f.get("datr")
        if isinstance(datr, str):
            m = _SF_RE.fullmatch(datr)
            if m is not None:
                row["sf"] = int(m.group(1))
    return out


def devaddr_prefix_mask(arr: npt.NDArray[np.void], prefix: int, bits: int) -> npt.NDArray[np.bool_]:
    """Rows whose DevAddr starts with the top ``bits`` of ``prefix`` (data frames only)."""
    if not 0 <= bits <= 32:
        raise ValueError(f"prefix length must be 0..32 bits, got {bits}")
    dev_addr = arr["dev_addr"].astype(np.uint64)
    mtype = arr["mtype"]
    is_data = arr["ok"] & (mtype >= 2) & (mtype <= 5)
    if bits == 0:
        return np.asarray(is_data, dtype=np.bool_)
    shift = 32 - bits
    want = (int(prefix) & 0xFFFFFFFF) >> shift
    return np.asarray(is_data & ((dev_addr >> np.uint64(shift)) == np.uint64(want)), dtype=np.bool_)


def netid_mask(arr: npt.NDArray[np.void], net_id: int) -> npt.NDArray[np.bool_]:
    """Rows whose DevAddr belongs to ``net_id`` (a gateway's "only my network" filter)."""
    prefix, bits = netid_devaddr_prefix(net_id)
    return devaddr_prefix_mask(arr, prefix, bits)
