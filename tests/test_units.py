import pytest

from testbed.units import (
    UnitError,
    format_bandwidth,
    format_latency,
    format_size,
    parse_bandwidth,
    parse_latency,
    parse_rate,
    parse_size,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("4GiB", 4 * 2**30), ("512 MiB", 512 * 2**20), ("1.5GB", 1_500_000_000), ("64KiB", 65536), ("4096B", 4096),
])
def test_sizes_people_write(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("80ns", 80.0), ("1.2us", 1200.0), ("1.2µs", 1200.0), ("0.5 ms", 500_000.0), ("250 NS", 250.0),
])
def test_latencies_people_write(text: str, expected: float) -> None:
    assert parse_latency(text) == pytest.approx(expected)


def test_bandwidths_and_rates() -> None:
    assert parse_bandwidth("25GB/s") == 25e9
    assert parse_bandwidth("800 MiB/s") == 800 * 2**20
    assert parse_rate("200/s") == 200.0
    assert parse_rate("2k/s") == 2000.0


@pytest.mark.parametrize(("parse", "text", "fragment"), [
    (parse_latency, "80", "with a unit"),
    (parse_latency, 80, "with a unit"),
    (parse_latency, "-5ns", "non-negative"),
    (parse_latency, "80 parsecs", "unknown unit"),
    (parse_size, "4 gallons", "unknown unit"),
    (parse_size, "0.5B", "whole number of bytes"),
    (parse_bandwidth, "25GB", "GB/s"),
    (parse_size, True, "like '4GiB'"),
])
def test_bad_quantities_say_what_is_expected(parse: object, text: object, fragment: str) -> None:
    with pytest.raises(UnitError, match=fragment):
        parse(text)  # type: ignore[operator]


def test_formatting_round_trips_common_values() -> None:
    assert format_size(parse_size("1GiB")) == "1GiB"
    assert format_latency(parse_latency("1.2us")) == "1.2us"
    assert format_latency(80) == "80ns"
    assert format_bandwidth(parse_bandwidth("2500MB/s")) == "2.5GB/s"
