"""Time on air against published calculator values, and the sliding-hour EU868 limiter."""

from __future__ import annotations

import pytest

from drivers.dutycycle import (
    DUTY_CYCLE_OVERFLOW,
    EU868_BANDS,
    OK,
    TX_FREQ,
    AirtimeError,
    Band,
    DutyCycleLimiter,
    GatewayDutyCycles,
    fsk_time_on_air,
    lora_time_on_air,
    parse_codr,
    parse_datr,
    txpk_time_on_air,
)

# Values from public LoRa airtime calculators (TTN airtime calculator, the
# AN1200.13 spreadsheet): preamble 8, explicit header, CRC on, CR 4/5,
# low-data-rate optimisation at SF11/SF12 125 kHz. Milliseconds.
PUBLISHED = [
    (7, 125_000, 12, 41.216),  # FIELD-FACTS: ~41 ms for a 12-byte frame
    (7, 125_000, 23, 61.696),  # Join-Request, FIELD-FACTS: ~62 ms
    (7, 125_000, 20, 56.576),
    (7, 125_000, 64, 118.016),
    (9, 125_000, 13, 164.864),  # AN1200.13 spreadsheet example
    (9, 125_000, 20, 185.344),
    (10, 125_000, 20, 370.688),
    (11, 125_000, 20, 741.376),
    (12, 125_000, 12, 1155.072),
    (12, 125_000, 20, 1318.912),
    (12, 125_000, 51, 2465.792),
    (7, 250_000, 20, 28.288),
    (7, 500_000, 20, 14.144),
    (12, 500_000, 20, 329.728),
]


@pytest.mark.parametrize(("sf", "bw", "size", "ms"), PUBLISHED)
def test_lora_time_on_air_matches_published_calculators(
    sf: int, bw: int, size: int, ms: float
) -> None:
    assert lora_time_on_air(size, sf, bw) * 1000 == pytest.approx(ms, abs=1e-6)


def test_coding_rate_header_and_crc_change_airtime_as_the_formula_says() -> None:
    base = lora_time_on_air(20, 7, 125_000, 1)
    # 4/8: ceil(176/28) = 7 blocks of 8 symbols instead of 5 -> 21 symbols of 1.024 ms more
    assert lora_time_on_air(20, 7, 125_000, 4) - base == pytest.approx(21 * 1.024e-3)
    # Without CRC (LoRaWAN downlinks) at 13 B: ceil(104/28) = 4 blocks instead of ceil(120/28) = 5
    assert lora_time_on_air(13, 7, 125_000, crc=False) < lora_time_on_air(13, 7, 125_000, crc=True)
    # Implicit header saves symbols
    assert lora_time_on_air(20, 7, 125_000, explicit_header=False) < base
    # SF12 with the optimisation switched off is shorter (the 64-byte vector: 2465.792 ms)
    assert lora_time_on_air(64, 12, 125_000, low_data_rate=False) * 1000 == pytest.approx(2465.792)
    assert lora_time_on_air(64, 12, 125_000) * 1000 == pytest.approx(2793.472)


def test_fsk_time_on_air_counts_every_byte_at_the_bit_rate() -> None:
    # 5 preamble + 3 sync + 1 length + 10 payload + 2 CRC = 21 bytes at 50 kbit/s
    assert fsk_time_on_air(10, 50_000) == pytest.approx(21 * 8 / 50_000)


def test_parse_datr_and_codr() -> None:
    assert parse_datr("SF7BW125") == (7, 125_000)
    assert parse_datr("SF12BW500") == (12, 500_000)
    assert parse_codr("4/5") == 1 and parse_codr("4/8") == 4 and parse_codr("2/3") == 2
    for bad in ("SF7", "SFxBW125", "SF13BW125", "SF7BW100", "50000"):
        with pytest.raises(AirtimeError, match="datr"):
            parse_datr(bad)
    with pytest.raises(AirtimeError, match="codr"):
        parse_codr("4/9")


def test_txpk_time_on_air_uses_forwarder_defaults() -> None:
    txpk = {"freq": 869.525, "modu": "LORA", "datr": "SF12BW125", "codr": "4/5", "size": 51}
    assert txpk_time_on_air(txpk) * 1000 == pytest.approx(2465.792)
    # size from the data when absent: 12 zero bytes
    txpk2 = {"modu": "LORA", "datr": "SF7BW125", "codr": "4/5", "data": "AAAAAAAAAAAAAAAA"}
    assert txpk_time_on_air(txpk2) * 1000 == pytest.approx(41.216)
    assert txpk_time_on_air({"modu": "FSK", "datr": 50000, "size": 10}) == pytest.approx(
        21 * 8 / 50_000
    )
    with pytest.raises(AirtimeError):
        txpk_time_on_air({"modu": "LORA", "size": 10})


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_eu868_table_is_the_loramac_node_one() -> None:
    limiter = DutyCycleLimiter(EU868_BANDS)
    # RX2 at 869.525 MHz is in the 10 % band, 868.1 in a 1 % band, 864 MHz in a 0.1 % band.
    assert limiter.check(869_525_000, 1.0).band == Band(869_400_000, 869_650_000, 0.10)
    assert limiter.check(868_100_000, 1.0).band == Band(868_000_000, 868_600_000, 0.01)
    assert limiter.check(867_100_000, 1.0).band == Band(865_000_000, 868_000_000, 0.01)
    assert limiter.check(864_000_000, 1.0).band == Band(863_000_000, 865_000_000, 0.001)


def test_one_percent_band_refuses_the_transmission_that_would_pass_36_seconds() -> None:
    clock = FakeClock()
    limiter = DutyCycleLimiter(EU868_BANDS, clock=clock)
    airtime = lora_time_on_air(51, 12, 125_000)  # 2.466 s
    sent = 0
    while limiter.acquire(868_100_000, airtime).ok:
        sent += 1
        clock.t += 5
    assert sent == 14  # 14 x 2.466 = 34.5 s <= 36 s, a 15th would be 36.99 s
    verdict = limiter.check(868_100_000, airtime)
    assert verdict.error == DUTY_CYCLE_OVERFLOW
    assert "868.000-868.600" in verdict.detail and "retry" in verdict.detail
    # The other 1 % band of the plan and the 10 % RX2 band are untouched.
    assert limiter.check(867_500_000, airtime).ok
    assert limiter.check(869_525_000, airtime).ok
    # Once the first transmission left the hour, one more fits; wait_s said when.
    clock.t += verdict.wait_s - 0.01
    assert not limiter.check(868_100_000, airtime).ok
    clock.t += 0.011
    assert limiter.check(868_100_000, airtime).ok


def test_window_slides_so_an_hour_later_everything_is_free_again() -> None:
    clock = FakeClock()
    limiter = DutyCycleLimiter(EU868_BANDS, window=3600.0, clock=clock)
    assert limiter.acquire(869_525_000, 359.0).ok  # 10 % of an hour is 360 s
    assert limiter.check(869_525_000, 2.0).error == DUTY_CYCLE_OVERFLOW
    assert limiter.check(869_525_000, 1.0).ok
    clock.t += 3600.0
    assert limiter.check(869_525_000, 360.0).ok
    assert limiter.usage()[4]["used_s"] == 0


def test_frequency_outside_every_band_is_refused_with_tx_freq() -> None:
    limiter = DutyCycleLimiter(EU868_BANDS)
    for freq in (868_650_000, 869_300_000, 915_000_000, 862_000_000):
        verdict = limiter.check(freq, 0.05)
        assert verdict.error == TX_FREQ
        assert "no configured duty-cycle sub-band" in verdict.detail
    # A 125 kHz channel centred on a band edge straddles two bands.
    assert limiter.check(868_000_000, 0.05, bandwidth_hz=125_000).error == TX_FREQ
    assert limiter.check(868_100_000, 0.05, bandwidth_hz=125_000).error == OK


def test_table_is_configuration() -> None:
    clock = FakeClock()
    limiter = DutyCycleLimiter([Band(863_000_000, 870_000_000, 0.01)], window=100.0, clock=clock)
    assert limiter.acquire(864_000_000, 0.6).ok
    assert limiter.check(869_500_000, 0.5).error == DUTY_CYCLE_OVERFLOW  # same single band
    with pytest.raises(ValueError, match="duty"):
        Band(1, 2, 1.5)


def test_each_gateway_has_its_own_budget_with_the_same_table() -> None:
    clock = FakeClock()
    books = GatewayDutyCycles([Band(863_000_000, 870_000_000, 0.01)], window=100.0, clock=clock)
    a, b = 0xB827EBFFFE000001, 0xB827EBFFFE000002
    assert books.for_gateway(a) is books.for_gateway(a)
    assert books.for_gateway(a).acquire(864_000_000, 1.0).ok  # 1 % of 100 s, all used
    assert books.for_gateway(a).check(864_000_000, 0.1).error == DUTY_CYCLE_OVERFLOW
    assert books.for_gateway(b).acquire(864_000_000, 1.0).ok  # B's radio is untouched
    assert books.for_gateway(b).check(864_000_000, 0.1).error == DUTY_CYCLE_OVERFLOW
    usage = books.usage()
    assert list(usage) == ["b827ebfffe000001", "b827ebfffe000002"]
    assert [u[0]["used_s"] for u in usage.values()] == [1.0, 1.0]
    clock.t += 100.0  # same window for every gateway
    assert books.for_gateway(a).check(864_000_000, 1.0).ok
    with pytest.raises(ValueError, match="window"):
        GatewayDutyCycles(window=0)
