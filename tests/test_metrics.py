"""Counters: the radio path's pre-built label keys count into the same series as keyword labels."""

from __future__ import annotations

from gateway.metrics import Metrics


def test_inc_series_and_inc_count_the_same_series() -> None:
    m = Metrics()
    m.inc("records_received", kind="uplink")
    m.inc_series("records_received", (("kind", "uplink"),), 2)
    m.inc_series("records_received", (("kind", "parking"),))
    assert m.get("records_received", kind="uplink") == 3
    assert m.snapshot()["records_received"] == {"kind=parking": 1, "kind=uplink": 3}
    assert 'schwebe_records_received{kind="uplink"} 3' in m.prometheus()
