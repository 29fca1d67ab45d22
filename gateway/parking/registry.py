"""Model registry: decode an uplink by LoRaWAN Device Repository model id, and read
the occupancy and battery out of what a decoder returned.

Decoding never raises on payload content; only an unknown model id is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from gateway.parking import Decoded, bosch, dingtek, milesight, nwave, tekzitel

Decoder = Callable[[int, bytes], Decoded]

_DECODERS: Final[Mapping[str, Decoder]] = MappingProxyType(
    {
        "nwave/nps310sm": nwave.decode_nps310sm,
        "nwave/nps405": nwave.decode_nps405,
        "nwave/ncc405": nwave.decode_ncc405,
        "bosch/tps110": bosch.decode_tps110,
        "dingtek/do200": dingtek.decode_do200,
        "dingtek/do201": dingtek.decode_do201,
        "dingtek/do202": dingtek.decode_do202,
        "tekzitel/tekzipark": tekzitel.decode_tekzipark,
        "milesight-iot/em400-mud": milesight.decode_em400_mud,
    }
)

#: What :func:`battery` returns for each model that reports a battery at all.
_BATTERY_UNITS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "nwave/nps405": "V",
        "nwave/ncc405": "V",
        "dingtek/do200": "V",
        "dingtek/do201": "V",
        "dingtek/do202": "V",
        "milesight-iot/em400-mud": "%",
    }
)


class UnknownModel(KeyError):
    """A model id no decoder is registered for."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model

    def __str__(self) -> str:
        return (
            f"unknown sensor model {self.model!r}; known models: {', '.join(sorted(_DECODERS))} "
            "(use the LoRaWAN Device Repository id 'vendor/device', e.g. 'nwave/nps405')"
        )


def list_models() -> list[str]:
    return sorted(_DECODERS)


def decoder_for(model: str) -> Decoder:
    """The decode function itself, for callers that look it up once per device."""
    try:
        return _DECODERS[model]
    except KeyError:
        raise UnknownModel(model) from None


def decode_uplink(model: str, fport: int, payload: bytes) -> Decoded:
    """What the repository codec's ``decodeUplink`` returns, after a JSON round trip."""
    return decoder_for(model)(fport, payload)


def _from_flag(occupied: Any) -> str | None:
    if occupied is True or occupied == 1:
        return "occupied"
    if occupied is False or occupied == 0:
        return "free"
    return None  # null: this uplink says nothing about the spot


def _nwave_status(data: Mapping[str, Any]) -> str | None:
    return _from_flag(data.get("occupied")) if data.get("type") != "debug" else None


def _dingtek_status(data: Mapping[str, Any]) -> str | None:
    # Parameter packets carry no alarm nibbles; telemetry's "park alarm" is the vehicle.
    return _from_flag(data["alarmPark"]) if "alarmPark" in data else None


def _tekzitel_status(data: Mapping[str, Any]) -> str | None:
    return _from_flag(data.get("occupied"))


def _em400_status(data: Mapping[str, Any], occupied_below_mm: int | None) -> str | None:
    # A tilted sensor looks at a wall, not at the bay: its distance means nothing.
    if data.get("position") == "tilt":
        return "unknown"
    distance = data.get("distance")
    if occupied_below_mm is not None and isinstance(distance, int):
        return "occupied" if distance < occupied_below_mm else "free"
    # In parking-lot mode the threshold alarm is the device's own occupancy verdict.
    return _from_flag(data.get("distance_alarming"))


def _data_of(decoded: Mapping[str, Any]) -> Mapping[str, Any] | None:
    data = decoded.get("data")
    # ``type is dict`` first: decoders return dicts, and an ABC isinstance costs several times more.
    if type(data) is dict or isinstance(data, Mapping):
        return data
    return None


def _no_status(data: Mapping[str, Any]) -> str | None:
    return None  # a car counter counts passes; it has no spot


def is_counter(model: str) -> bool:
    """True for a device that counts passing cars (nwave/ncc405): it has no spot to report."""
    decoder_for(model)
    return model in _COUNTERS


_COUNTERS: Final = frozenset({"nwave/ncc405"})


def _status_function(
    model: str, occupied_below_mm: int | None
) -> Callable[[Mapping[str, Any]], str | None]:
    """The status rule for ``model``'s decoded ``data`` (raises UnknownModel)."""
    decoder_for(model)  # an unknown model is an error here too, not a silent None
    vendor = model.partition("/")[0]
    if model in _COUNTERS:
        return _no_status
    if vendor in ("nwave", "bosch"):
        return _nwave_status
    if vendor == "dingtek":
        return _dingtek_status
    if vendor == "tekzitel":
        return _tekzitel_status
    return lambda data: _em400_status(data, occupied_below_mm)


def _battery_key(model: str) -> str | None:
    """The ``data`` key holding the battery level of ``model`` (raises UnknownModel)."""
    unit = battery_unit(model)
    if unit is None:
        return None
    return {"V": "volt" if model.startswith("dingtek/") else "battery_voltage", "%": "battery"}[unit]


def _number(value: Any) -> float | None:
    kind = type(value)
    if kind is float or kind is int:  # the usual cases, without isinstance's subclass walk
        return float(value)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parking_status(
    model: str, decoded: Mapping[str, Any], *, occupied_below_mm: int | None = None
) -> str | None:
    """FIWARE ParkingSpot status (``free``/``occupied``/``unknown``) this uplink reports.

    None when the uplink carries no occupancy (a counter, a config reply, an error).
    ``occupied_below_mm`` applies to distance sensors (EM400-MUD): a reading below
    it means a vehicle; without it the sensor's own distance alarm decides.
    """
    status_of = _status_function(model, occupied_below_mm)
    data = _data_of(decoded)
    return None if data is None else status_of(data)


def battery(model: str, decoded: Mapping[str, Any]) -> float | None:
    """Battery level in :func:`battery_unit` units, when this uplink reports one."""
    key = _battery_key(model)
    data = _data_of(decoded)
    if key is None or data is None:
        return None
    return _number(data.get(key))


#: Status and battery level of one decoded uplink, as :func:`parking_status` and
#: :func:`battery` give them.
SpotReader = Callable[[Mapping[str, Any]], tuple[str | None, float | None]]


def spot_reader(model: str, *, occupied_below_mm: int | None = None) -> SpotReader:
    """``(parking_status, battery)`` of a decoded uplink, with the model looked up once.

    For callers that read every uplink of a known device: the same answers as the two
    functions, without their per-call model lookups. Raises UnknownModel.
    """
    status_of = _status_function(model, occupied_below_mm)
    key = _battery_key(model)

    def read(decoded: Mapping[str, Any]) -> tuple[str | None, float | None]:
        data = decoded.get("data")
        if type(data) is not dict and not isinstance(data, Mapping):
            return None, None
        status = status_of(data)
        if key is None:
            return status, None
        value = data.get(key)
        return status, (None if value is None else _number(value))

    return read


def battery_unit(model: str) -> str | None:
    """``"V"`` or ``"%"``: what :func:`battery` measures for ``model`` (None: no battery)."""
    decoder_for(model)
    return _BATTERY_UNITS.get(model)
