"""Quantities written the way people write them: ``4GiB``, ``80ns``, ``1.2us``, ``25GB/s``.

Internally sizes are bytes (int), latencies nanoseconds (float), bandwidths
bytes per second (float) and rates events per second (float).
"""

from __future__ import annotations

import re

MIB = 1 << 20

SIZE_UNITS = {
    "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}
LATENCY_UNITS = {"PS": 1e-3, "NS": 1.0, "US": 1e3, "µS": 1e3, "ΜS": 1e3, "MS": 1e6, "S": 1e9}
RATE_UNITS = {"/S": 1.0, "K/S": 1e3, "M/S": 1e6, "G/S": 1e9}

_QUANTITY = re.compile(r"^\s*(?P<number>[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*(?P<unit>\S.*?)?\s*$")


class UnitError(ValueError):
    """A quantity that is not a number with a known unit."""


def _split(text: object, kind: str, example: str) -> tuple[float, str]:
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UnitError(f"expected a {kind} like '{example}', got {text!r}")
    match = _QUANTITY.match(str(text))
    if not match or not match["unit"]:
        raise UnitError(f"expected a {kind} with a unit, like '{example}', got {text!r}")
    number = float(match["number"])
    if number < 0:
        raise UnitError(f"expected a non-negative {kind}, got {text!r}")
    return number, match["unit"].upper().replace(" ", "")


def _scale(text: object, kind: str, example: str, units: dict[str, float]) -> float:
    number, unit = _split(text, kind, example)
    if unit not in units:
        raise UnitError(f"unknown unit in {kind} {text!r}: use one of {', '.join(_known(units))}")
    return number * units[unit]


def _known(units: dict[str, float]) -> list[str]:
    spelled = {"KIB": "KiB", "MIB": "MiB", "GIB": "GiB", "TIB": "TiB", "µS": "us", "ΜS": "us"}
    return sorted({spelled.get(unit, unit.lower() if unit.endswith("S") else unit) for unit in units})


def parse_size(text: object) -> int:
    """Bytes in ``text``: ``4GiB``, ``512 MiB``, ``1.5GB``."""
    value = _scale(text, "size", "4GiB", {k: float(v) for k, v in SIZE_UNITS.items()})
    if value != int(value):
        raise UnitError(f"size {text!r} is not a whole number of bytes")
    return int(value)


def parse_latency(text: object) -> float:
    """Nanoseconds in ``text``: ``80ns``, ``1.2us``, ``0.5 ms``."""
    return _scale(text, "latency", "80ns", LATENCY_UNITS)


def parse_bandwidth(text: object) -> float:
    """Bytes per second in ``text``: ``25GB/s``, ``800 MiB/s``."""
    number, unit = _split(text, "bandwidth", "25GB/s")
    size_unit = unit.removesuffix("/S")
    if not unit.endswith("/S") or size_unit not in SIZE_UNITS:
        raise UnitError(f"unknown unit in bandwidth {text!r}: use GB/s, MB/s, GiB/s or MiB/s")
    return number * SIZE_UNITS[size_unit]


def parse_rate(text: object) -> float:
    """Events per second in ``text``: ``100/s``, ``2k/s``."""
    return _scale(text, "rate", "100/s", RATE_UNITS)


def format_size(size: float) -> str:
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:g}{unit}"
    return f"{size:g}B"


def format_latency(nanoseconds: float) -> str:
    if nanoseconds >= 1e3:
        return f"{nanoseconds / 1e3:g}us"
    return f"{nanoseconds:g}ns"


def format_bandwidth(bytes_per_second: float) -> str:
    if bytes_per_second >= 1e9:
        return f"{bytes_per_second / 1e9:g}GB/s"
    return f"{bytes_per_second / 1e6:g}MB/s"
