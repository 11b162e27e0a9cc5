"""How sure a figure over repeated runs is: medians, bootstrap intervals, and whether a difference is noise.

A policy runs a few times (``runs/NAME-rK``); its figure is the median over
those runs, which one odd run cannot drag the way it drags a mean. How far
the median could be off is a percentile bootstrap: the runs are resampled
with replacement ``RESAMPLES`` times and the middle 95% of the resampled
medians is the interval. A difference between two policies is bootstrapped
the same way, each side resampled on its own (the runs are independent), and
counts as beyond noise only when its interval excludes 0 and both sides ran
at least twice: one run says nothing about how much a policy varies.

Everything is deterministic (a fixed seed), so a report recomputed from the
same files gives the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

RESAMPLES = 10_000
SEED = 0
CONFIDENCE = 0.95
MIN_REPEATS = 2  # runs per side before a difference can be called beyond noise
SIGNIFICANT = 3  # digits of the largest number in a difference's words


@dataclass(frozen=True)
class Difference:
    """median(a) - median(b), with its bootstrap interval."""

    value: float
    interval: tuple[float, float]
    runs: tuple[int, int]  # len(a), len(b)

    @property
    def beyond_noise(self) -> bool:
        low, high = self.interval
        return min(self.runs) >= MIN_REPEATS and not low <= 0.0 <= high

    def flipped(self) -> Difference:
        """median(b) - median(a): the same comparison seen from the other side."""
        low, high = self.interval
        return Difference(-self.value, (-high, -low), (self.runs[1], self.runs[0]))


def median(values: Sequence[float]) -> float:
    return float(np.median(_sample(values)))


def median_interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the median; [v, v] for a single value or a constant sample."""
    return _percentiles(_resampled_medians(_sample(values), np.random.default_rng(SEED)))


def difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """median(a) - median(b) and the 95% bootstrap interval of it, a and b resampled independently."""
    first, second = _sample(a), _sample(b)
    rng = np.random.default_rng(SEED)
    medians = _resampled_medians(first, rng) - _resampled_medians(second, rng)
    return Difference(float(np.median(first) - np.median(second)), _percentiles(medians), (first.size, second.size))


def words(found: Difference) -> str:
    """a against b in seconds, lower being better: "2.10 s faster [1.20, 3.05], beyond noise"."""
    low, high = found.interval
    if not found.beyond_noise and min(found.runs) >= MIN_REPEATS:
        value, low_text, high_text = fixed((found.value, low, high))
        # The signed difference, not "faster" or "slower": inside the noise there is no direction to name.
        return f"within noise (median difference {_signed(value)} s, interval [{low_text}, {high_text}] holds 0)"
    # Said as an amount faster or slower, with the interval of that amount.
    faster = found.value < 0
    amount, least, most = fixed((-found.value, -high, -low) if faster else (found.value, low, high))
    direction = "faster" if faster else "slower"
    if min(found.runs) < MIN_REPEATS:
        many = "one run each" if max(found.runs) < MIN_REPEATS else f"{found.runs[0]} against {found.runs[1]} runs"
        return f"{amount} s {direction} ({many}: noise unknown)"
    return f"{amount} s {direction} [{least}, {most}], beyond noise"


def fixed(values: Sequence[float]) -> list[str]:
    """The numbers at one number of decimals: SIGNIFICANT digits of the largest, so they line up."""
    scale = max((abs(value) for value in values), default=0.0)
    decimals = max(0, SIGNIFICANT - 1 - math.floor(math.log10(scale))) if scale > 0 else SIGNIFICANT - 1
    # round(...) or 0.0: a value that rounds to zero prints as 0, never as -0.
    return [f"{round(value, decimals) or 0.0:.{decimals}f}" for value in values]


def _signed(text: str) -> str:
    return text if text.startswith("-") else f"+{text}"


def _sample(values: Sequence[float]) -> Array:
    sample = np.asarray(values, dtype=float)
    if sample.ndim != 1 or sample.size == 0:
        raise ValueError(f"expected a non-empty list of numbers, got {values!r}")
    return sample


def _resampled_medians(sample: Array, rng: np.random.Generator) -> Array:
    picks = rng.integers(0, sample.size, size=(RESAMPLES, sample.size))
    return np.asarray(np.median(sample[picks], axis=1))


def _percentiles(medians: Array) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)
