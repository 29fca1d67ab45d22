"""ThingsBoard IoT Gateway socket converter for Semtech UDP PUSH_DATA (benchmark only).

Copied by `make bench-peers` into the bench venv's thingsboard_gateway/extensions/socket/,
where the socket connector loads converters by class name. One telemetry entry per rxpk,
device = the packet forwarder's EUI. Each entry gets its own millisecond timestamp: the
gateway merges entries of one device that share a timestamp, which would drop uplinks.
"""

import json
import time

from thingsboard_gateway.connectors.socket.socket_uplink_converter import SocketUplinkConverter
from thingsboard_gateway.gateway.entities.converted_data import ConvertedData
from thingsboard_gateway.gateway.entities.telemetry_entry import TelemetryEntry


class GwmpUplinkConverter(SocketUplinkConverter):
    def __init__(self, config, logger):
        self._log = logger
        self._config = config
        self._last_ts = 0

    def convert(self, config, data):
        # 12-byte header: version 2, token (2), identifier 0 = PUSH_DATA, gateway EUI (8)
        if data is None or len(data) < 12 or data[0] != 2 or data[3] != 0:
            return None
        try:
            body = json.loads(data[12:])
        except ValueError:
            self._log.warning("PUSH_DATA body is not JSON (%d bytes)", len(data))
            return None
        converted = ConvertedData(device_name="gw-" + data[4:12].hex(), device_type="lora-gateway")
        for rx in body.get("rxpk") or ():
            ts = max(int(time.time() * 1000), self._last_ts + 1)
            self._last_ts = ts
            values = {"phy": rx.get("data"), "rssi": rx.get("rssi"), "lsnr": rx.get("lsnr"),
                      "freq": rx.get("freq"), "datr": rx.get("datr")}
            converted.add_to_telemetry(TelemetryEntry(values, ts=ts))
        return converted
