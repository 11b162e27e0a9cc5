"""Medians, bootstrap intervals and the words a report uses for a difference."""

from __future__ import annotations

import pytest

from testbed.stats import Difference, difference, fixed, median, median_interval, words


def test_the_median_is_not_dragged_by_one_odd_run() -> None:
    assert median([2.0, 2.1, 9.0]) == 2.1


def test_the_interval_of_a_constant_or_single_sample_is_that_value() -> None:
    assert median_interval([3.0]) == (3.0, 3.0)
    assert median_interval([3.0, 3.0, 3.0]) == (3.0, 3.0)


def test_the_interval_holds_the_median_within_the_runs_and_is_deterministic() -> None:
    runs = [2.1, 2.4, 2.2, 2.9, 2.3]
    low, high = median_interval(runs)
    assert min(runs) <= low < median(runs) < high <= max(runs)
    assert median_interval(runs) == (low, high)  # a report recomputed from the same files says the same


def test_separated_runs_differ_beyond_noise_and_overlapping_runs_do_not() -> None:
    fast, slow = [1.0, 1.1, 1.05, 0.98, 1.02], [2.0, 2.2, 2.1, 1.9, 2.05]
    found = difference(fast, slow)
    assert found.value == pytest.approx(1.02 - 2.05)
    assert found.beyond_noise and found.interval[1] < 0
    assert "faster" in words(found) and words(found).endswith("beyond noise")
    assert words(found.flipped()).startswith("1.03 s slower")
    mixed = difference([1.0, 2.0, 1.5, 1.2, 1.8], [1.1, 1.9, 1.4, 1.3, 1.7])
    assert not mixed.beyond_noise
    assert words(mixed).startswith("within noise (")


def test_one_run_a_side_is_never_beyond_noise() -> None:
    found = difference([1.0], [5.0])
    assert not found.beyond_noise
    assert words(found) == "4.00 s faster (one run each: noise unknown)"
    assert words(difference([1.0], [5.0, 5.1])) == "4.05 s faster (1 against 2 runs: noise unknown)"


def test_identical_runs_are_within_noise() -> None:
    found = difference([2.0, 2.0, 2.0], [2.0, 2.0, 2.0])
    assert found == Difference(0.0, (0.0, 0.0), (3, 3))
    assert words(found) == "within noise (median difference +0.00 s, interval [0.00, 0.00] holds 0)"


def test_numbers_line_up_at_three_significant_digits_of_the_largest() -> None:
    assert fixed([12.345, 0.5, -0.0001]) == ["12.3", "0.5", "0.0"]
    assert fixed([0.0012, 0.00045]) == ["0.00120", "0.00045"]


def test_an_empty_sample_is_an_error() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        median([])
