"""What a reviewer asks of each policy's median: how much of the gap it closed, whether it beat the best
baseline, and what the device and system texts added over the LLM policy's text-blind twin.

Comparisons use finished runs only: a run cut short scored fewer epochs, and its smaller modeled time
would pass for a win.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from testbed.stats import Difference, difference, median
from testbed.values import PolicyKind


@dataclass(frozen=True)
class Comparison:
    """A policy's median against another's; no difference when either has no finished run."""

    other: str
    difference: Difference | None

    def json(self, role: str) -> dict[str, Any]:
        found = self.difference
        return {role: self.other, "difference_s": found.value if found else None,
                "interval_95": list(found.interval) if found else None,
                "beyond_noise": found.beyond_noise if found else False}


@dataclass(frozen=True)
class Comparisons:
    gap_closed: float | None = None  # of first touch's distance to the oracle; 1.0: as good as the oracle
    vs_best_baseline: Comparison | None = None  # median(policy) - median(best baseline)
    text_contribution: Comparison | None = None  # median(twin) - median(LLM policy): > 0, the text helped

    def json(self) -> dict[str, Any]:
        return {"gap_closed": self.gap_closed,
                "vs_best_baseline": self.vs_best_baseline.json("baseline") if self.vs_best_baseline else None,
                "text_contribution": self.text_contribution.json("twin") if self.text_contribution else None}


def best_baseline(times: Mapping[str, Sequence[float]], kinds: Mapping[str, str | None]) -> str | None:
    """The baseline with the lowest median over its finished runs (the first listed on a tie)."""
    medians = {name: median(found) for name, found in times.items() if kinds.get(name) == PolicyKind.BASELINE
               and found}
    return min(medians, key=lambda name: medians[name]) if medians else None


def compare(times: Mapping[str, Sequence[float]], kinds: Mapping[str, str | None], twins: Mapping[str, str],
            reference: str, oracle_s: float | None) -> dict[str, Comparisons]:
    """Each policy's comparisons; ``times`` holds every policy's finished runs' modeled times (a bound's
    one value), ``reference`` is the policy the gap is measured from (first touch)."""
    best = best_baseline(times, kinds)
    start = median(times[reference]) if times.get(reference) else None
    return {name: Comparisons(
        gap_closed=_gap_closed(median(found) if found else None, start, oracle_s),
        vs_best_baseline=(Comparison(best, _difference(found, times.get(best, ()))) if best is not None
                          and name != best and kinds.get(name) != PolicyKind.BOUND else None),
        text_contribution=(Comparison(twins[name], _difference(times.get(twins[name], ()), found)) if name in twins
                           else None))
        for name, found in times.items()}


def _gap_closed(policy_s: float | None, start_s: float | None, oracle_s: float | None) -> float | None:
    if policy_s is None or start_s is None or oracle_s is None or start_s <= oracle_s:
        return None  # no gap to close (or nothing to measure it with)
    return (start_s - policy_s) / (start_s - oracle_s)


def _difference(a: Sequence[float], b: Sequence[float]) -> Difference | None:
    return difference(a, b) if a and b else None
