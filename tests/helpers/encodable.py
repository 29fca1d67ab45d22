"""Every forwarder's encoding of a record, for the property test and the fuzzer."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.config import load_config_text
from gateway.forward.file import record_line
from gateway.forward.registry import build_forwarder
from gateway.records import Record

EUI = 0xB827EBFFFE000001

CONFIG = """
[gateway]
eui = "b827ebfffe000001"
[[forward.gwmp]]
name = "lns"
server = "127.0.0.1:1700"
[[forward.mqtt]]
name = "mqtt"
url = "mqtt://127.0.0.1"
[[forward.http]]
name = "http"
url = "http://127.0.0.1/in"
[[forward.file]]
name = "file"
path = "/tmp/schwebe-never-written.jsonl"
"""


class Sink:
    """Where PUSH_ACKs go (the door answers the packet forwarder)."""

    def sendto(self, data: bytes, addr: Any = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1700) if name == "sockname" else default


def _forwarders() -> list[Any]:
    cfg = load_config_text(CONFIG)
    return [build_forwarder(f, gateway_eui=EUI, sources=[]) for f in cfg.forwarders]


FORWARDERS = _forwarders()


def encode_everywhere(record: Record) -> None:
    for fwd in FORWARDERS:
        if not fwd.accepts(record):
            continue
        if fwd.name == "mqtt":
            msg = fwd.message_for(record)
            if msg is not None:
                orjson.loads(msg[1])
        elif fwd.name == "http":
            body, _ctype = fwd.encode("b", [(1, record)])
            assert body
        elif fwd.name == "file":
            orjson.loads(record_line(1, record))
        elif fwd.name == "lns":
            datagrams, _expired = fwd._datagrams([(1, record)], record.received_us)
            for _eui, datagram, _token, _seqs in datagrams:
                orjson.loads(datagram[12:])


