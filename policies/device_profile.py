"""A device profile, the JSON answer the frontend's LLM is asked for, and the checks that answer must pass.

Small models read well but slip on units and say "yes" to everything
(measured with Qwen2.5 1.5B: "1 microsecond" read as 1, every yes/no answered
yes), so the schema asks for each quantity as a value and a unit (converted
here, in code) and for a verbatim quote before every yes/no answer. Every
answer is then validated: units, plausible ranges, quotes that really occur in
the text. A field that fails is dropped and reported as a ``(field, reason)``
problem, never guessed. Asking the LLM (prompts, cache) is ``policies.frontend``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from policies.llm_client import JsonObject
from testbed.units import LATENCY_UNITS, SIZE_UNITS, format_bandwidth, format_latency, format_size

NOT_MENTIONED = "not mentioned"
QUOTE_LIMIT = 120  # characters; a cut quote is still a verbatim part of the text
RATIONALE_LIMIT = 100


class DataKind(StrEnum):
    """Kinds of data a device may be a good home for."""

    HOT_READ_MOSTLY = "hot_read_mostly"
    HOT_WRITE_HEAVY = "hot_write_heavy"
    COLD = "cold"
    STREAMING = "streaming"


@dataclass(frozen=True)
class DeviceProfile:
    """What the frontend learned about one device; None where the text did not say (or failed checks)."""

    device: str
    read_latency_ns: float | None = None
    write_latency_ns: float | None = None
    read_bandwidth: float | None = None  # bytes per second
    write_bandwidth: float | None = None
    capacity: int | None = None  # bytes
    frequency_dependent_latency: bool | None = None
    wears_out: bool | None = None
    readable_by_others: bool | None = None  # other hosts or parties can read what it holds: no secrets here
    keeps_data_without_power: bool | None = None  # what must survive a power loss may live here
    suits: frozenset[DataKind] = frozenset()
    rationale: str = ""
    # Only for frequency-dependent latency (asked by profile_frequency): the fast case, and how
    # often a page must be used to get it. read_latency_ns is then the slow (worst) case.
    hot_latency_ns: float | None = None
    hot_access_rate: float | None = None  # accesses per page per second


class Problem(NamedTuple):
    field: str
    reason: str


# --- the answer asked for ---------------------------------------------------------------------


@dataclass(frozen=True)
class Quantity:
    """One number the LLM reads with its unit; ``scale`` maps units to the internal unit."""

    field: str  # DeviceProfile field
    key: str  # answer key
    scale: Mapping[str, float]
    low: float
    high: float
    show: Callable[[float], str]


def _units(factors: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(factors))


_LATENCY = _units({"ns": LATENCY_UNITS["NS"], "us": LATENCY_UNITS["US"], "ms": LATENCY_UNITS["MS"]})
_SIZE = _units({unit: float(SIZE_UNITS[unit.upper()]) for unit in ("MB", "GB", "TB", "MiB", "GiB", "TiB")})
_BANDWIDTH = _units({f"{unit}/s": factor for unit, factor in _SIZE.items()})


# Plausible ranges: no memory device answers a load in under 10 ns (that is cache),
# so "1 ns" is a unit slip or an injected number, not a reading.
QUANTITIES = (
    Quantity("read_latency_ns", "read_latency", _LATENCY, 10.0, 100e3, format_latency),
    Quantity("write_latency_ns", "write_latency", _LATENCY, 10.0, 100e3, format_latency),
    Quantity("read_bandwidth", "read_bandwidth", _BANDWIDTH, 10e6, 10e12, format_bandwidth),
    Quantity("write_bandwidth", "write_bandwidth", _BANDWIDTH, 10e6, 10e12, format_bandwidth),
    Quantity("capacity", "capacity", _SIZE, 2.0**20, 2.0**50, format_size),
)
FREQUENCY_KEY = "latency_depends_on_access_frequency"
WEAR_KEY = "wears_out_with_writes"
EXPOSED_KEY = "readable_by_others"
PERSISTENT_KEY = "keeps_data_without_power"
# What a quote must state for a yes to stand, one claim per yes/no question: a second, narrow question
# about the quote (policies.frontend.QuoteJudge) judges it by meaning, whatever words the text uses.
CLAIMS = {
    FREQUENCY_KEY: "how fast the memory answers depends on how often or how recently the data was used: data "
                   "used often is served faster than data used rarely",
    WEAR_KEY: "the memory medium wears out as it is written: it lasts only a limited number of writes",
    EXPOSED_KEY: "others can read what this memory holds: it is shared with other hosts or tenants, or its "
                 "contents or its link are not encrypted",
    PERSISTENT_KEY: "the memory keeps what it holds when the power is lost",
}
# The same, asked as a question, for a second look at the device text (a claim there is copied as evidence).
QUESTIONS = {
    FREQUENCY_KEY: "Does how fast the memory answers depend on how often the data is used?",
    WEAR_KEY: "Does the memory medium wear out as it is written?",
    EXPOSED_KEY: "Can others (other hosts or tenants, or anyone on its link) read what the memory holds?",
    PERSISTENT_KEY: "Does the memory keep what it holds when the power is lost?",
}
SENTENCE_ENDS = (". ", "! ", "? ", "; ")
# (profile field, answer key) of every yes/no question.
YES_NO = (("frequency_dependent_latency", FREQUENCY_KEY), ("wears_out", WEAR_KEY),
          ("readable_by_others", EXPOSED_KEY), ("keeps_data_without_power", PERSISTENT_KEY))
# Whether a quote states a claim (None: the judgement failed).
Judge = Callable[[str, str], bool | None]
# The words of the device text that answer a question (QUESTIONS), asked on a second look (NOT_MENTIONED if none
# do; None: the question failed).
Finder = Callable[[str], str | None]


def _quantity_schema(units: Mapping[str, float]) -> JsonObject:
    return {"type": "object", "additionalProperties": False, "required": ["value", "unit"],
            "properties": {"value": {"type": "number"},
                           "unit": {"type": "string", "enum": [*units, NOT_MENTIONED]}}}


def _text_schema(limit: int) -> JsonObject:
    # The limit is a grammar on llama.cpp: a small model otherwise copies whole paragraphs, slowly.
    return {"type": "string", "maxLength": limit}


def _quoted_answer_schema() -> JsonObject:
    # The quote comes first so the model commits to evidence before its yes/no.
    return {"type": "object", "additionalProperties": False, "required": ["quote", "answer"],
            "properties": {"quote": _text_schema(QUOTE_LIMIT), "answer": {"type": "boolean"}}}


def _object_schema(properties: Mapping[str, JsonObject]) -> JsonObject:
    return {"type": "object", "additionalProperties": False, "required": list(properties),
            "properties": dict(properties)}


def _suits_schema() -> JsonObject:
    # A list, so kinds that do not apply cost no tokens (~10 tokens/s on the embedded model).
    item = {"type": "object", "additionalProperties": False, "required": ["kind", "quote"],
            "properties": {"kind": {"type": "string", "enum": [kind.value for kind in DataKind]},
                           "quote": _text_schema(QUOTE_LIMIT)}}
    return {"type": "array", "items": item}


def profile_schema() -> JsonObject:
    return _object_schema({
        **{q.key: _quantity_schema(q.scale) for q in QUANTITIES},
        **{key: _quoted_answer_schema() for _, key in YES_NO},
        "suits": _suits_schema(),
        "rationale": _text_schema(RATIONALE_LIMIT),
    })


# --- the second question, asked by frontend.profile_frequency: the fast case ------------------

_RATE = _units({"per second": 1.0, "per minute": 1 / 60, "per millisecond": 1e3})
FREQUENCY_QUANTITIES = (
    Quantity("hot_latency_ns", "fast_latency", _LATENCY, 10.0, 100e3, format_latency),
    Quantity("hot_access_rate", "fast_access_rate", _RATE, 1e-3, 1e9, lambda rate: f"{rate:g}/s"),
)


def frequency_schema() -> JsonObject:
    return _object_schema({q.key: _quantity_schema(q.scale) for q in FREQUENCY_QUANTITIES})


def validate_frequency_answer(profile: DeviceProfile,
                              answer: Mapping[str, Any]) -> tuple[DeviceProfile, tuple[Problem, ...]]:
    """``profile`` with the fast case the answer gives, each quantity checked as in the profile.

    Whether the fast case is faster than the worst case is for whoever knows the worst case best:
    the guest's HMAT reports it, and the LLM's own reading of it may be the fast case by mistake."""
    problems: list[Problem] = []
    hot_latency, hot_rate = (_checked(problems, q.key, _quantity, answer.get(q.key), q) for q in FREQUENCY_QUANTITIES)
    return replace(profile, hot_latency_ns=hot_latency, hot_access_rate=hot_rate), tuple(problems)


# --- validation -------------------------------------------------------------------------------


def validate_answer(name: str, answer: Mapping[str, Any], texts: tuple[str, ...], judge: Judge,
                    find: Finder) -> tuple[DeviceProfile, tuple[Problem, ...]]:
    """Turn an answer into a profile; each field that fails a check is left out and reported. ``judge`` says
    whether the quote behind a yes states what the question asks; where it does not, or the quote is not in
    the text, ``find`` takes a second look for words that do."""
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for quantity in QUANTITIES:
        values[quantity.field] = _checked(problems, quantity.key, _quantity, answer.get(quantity.key), quantity)
    evidence = _Evidence(texts, judge, find)
    for field, key in YES_NO:
        values[field] = _checked(problems, key, evidence.answer, problems, key, answer.get(key))
    values["suits"] = _suits(problems, answer.get("suits"), evidence)
    rationale = answer.get("rationale")
    values["rationale"] = " ".join(rationale.split())[:RATIONALE_LIMIT] if isinstance(rationale, str) else ""
    if values["capacity"] is not None:
        values["capacity"] = round(values["capacity"])  # whole bytes, like the system model
    known = {q.key for q in QUANTITIES} | {key for _, key in YES_NO} | {"suits", "rationale"}
    unexpected = sorted(set(answer) - known)
    problems += [Problem(key, "not a field of the profile: ignored") for key in unexpected]
    return DeviceProfile(device=name, **values), tuple(problems)


class _FieldError(ValueError):
    """A field that fails a check; its message is the reason reported."""


def _checked(problems: list[Problem], field: str, check: Callable[..., Any], *args: Any) -> Any:
    try:
        return check(*args)
    except _FieldError as error:
        problems.append(Problem(field, str(error)))
        return None


def _quantity(value: object, quantity: Quantity) -> float:
    if not isinstance(value, Mapping) or set(value) != {"value", "unit"}:
        raise _FieldError(f"expected {{value, unit}}, got {_short(value)}")
    number, unit = value["value"], value["unit"]
    if unit == NOT_MENTIONED:
        raise _FieldError("not mentioned in the text")
    if unit not in quantity.scale:
        raise _FieldError(f"unknown unit {_short(unit)} (expected one of {', '.join(quantity.scale)})")
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise _FieldError(f"value is not a number: {_short(number)}")
    converted = float(number) * quantity.scale[unit]
    if not quantity.low <= converted <= quantity.high:
        raise _FieldError(f"{number:g} {unit} is outside the plausible range "
                        f"{quantity.show(quantity.low)} to {quantity.show(quantity.high)}")
    return converted


class _Evidence:
    """The texts the model read, to check that its quotes are really there."""

    def __init__(self, texts: tuple[str, ...], judge: Judge, find: Finder) -> None:
        self._texts = texts  # ``quoted`` normalises them
        self._judge = judge
        self._find = find

    def answer(self, problems: list[Problem], field: str, value: object) -> bool:
        """A yes/no answer backed by its quote. A feature the text does not state is taken as absent:
        "not mentioned", or a quote that does not state it ("reads are fast-ish"), means no, unless a second
        look finds words of the text that do (a small model often quotes the right words for the wrong
        question, or writes its answer where the quote belongs)."""
        quote, answer = _pair(value, "quote", str, "answer", bool)
        spoken = _normalised(quote)
        if not answer:
            if spoken not in ("", NOT_MENTIONED):
                self._require_in_text(quote)
            return False
        claim = CLAIMS[field]
        if spoken not in ("", NOT_MENTIONED) and (sentence := self._sentence(quote)) and self._judge(sentence, claim):
            return True
        again = self._find(QUESTIONS[field])
        if again is None:
            raise _FieldError(f"answers yes on {_short(quote)}, which does not say so, and a second look failed")
        if _normalised(again) in ("", NOT_MENTIONED):
            problems.append(Problem(field, f"answers yes, but its quote does not say so and a second look finds "
                                           f"nothing, so no: {_short(quote)}"))
            return False
        states = bool(sentence := self._sentence(again)) and self._judge(sentence, claim)
        if states is None:
            raise _FieldError(f"answers yes, and the check of the quote {_short(again)} failed")
        problems.append(Problem(field, f"its quote {_short(quote)} does not say so; a second look "
                                       f"{'finds' if states else 'finds no words that do, so no'}: {_short(again)}"))
        return bool(states)

    def suited_kind(self, value: object) -> DataKind:
        quote, kind = _pair(value, "quote", str, "kind", str)
        if kind not in DataKind.__members__.values():
            raise _FieldError(f"unknown kind of data {_short(kind)}")
        self._require_in_text(quote)
        return DataKind(kind)

    def _sentence(self, quote: str) -> str:
        """The sentence of the texts that holds ``quote`` (normalised), or "" if none does: a quote is often a
        fragment ("a page that is accessed again and again"), and only its sentence says what it means."""
        spoken = _normalised(quote)
        for text in map(_normalised, self._texts):
            at = text.find(spoken) if spoken else -1
            if at >= 0:
                starts = [found + len(mark) for mark in SENTENCE_ENDS if (found := text.rfind(mark, 0, at)) >= 0]
                ends = [found for mark in SENTENCE_ENDS if (found := text.find(mark, at + len(spoken))) >= 0]
                return text[max(starts, default=0):min(ends, default=len(text))]
        return ""

    def _require_in_text(self, quote: str) -> None:
        if not quoted(quote, self._texts):
            raise _FieldError(f"the quote is not in the text: {_short(quote)}")


def quoted(quote: str, texts: Iterable[str]) -> bool:
    """Whether ``quote`` is really in one of ``texts`` (ignoring case, spacing and typographic quotes)."""
    spoken = _normalised(quote)
    return bool(spoken) and any(spoken in _normalised(text) for text in texts)


def _pair(value: object, first: str, first_type: type, second: str, second_type: type) -> tuple[Any, Any]:
    """The two fields of an object that must have exactly these two, of these types."""
    if (not isinstance(value, Mapping) or set(value) != {first, second}
            or not isinstance(value[first], first_type) or not isinstance(value[second], second_type)):
        raise _FieldError(f"expected {{{first}: {first_type.__name__}, {second}: {second_type.__name__}}}, "
                        f"got {_short(value)}")
    return value[first], value[second]


def _suits(problems: list[Problem], value: object, evidence: _Evidence) -> frozenset[DataKind]:
    if not isinstance(value, list):
        problems.append(Problem("suits", f"expected a list of {{quote, kind}}, got {_short(value)}"))
        return frozenset()
    # An item quoting "not mentioned" says the text recommends nothing: no kind, and nothing wrong.
    return frozenset(kind for index, item in enumerate(value)
                     if not (isinstance(item, Mapping) and _normalised(str(item.get("quote"))) == NOT_MENTIONED)
                     and (kind := _checked(problems, f"suits[{index}]", evidence.suited_kind, item)) is not None)


def _normalised(text: str) -> str:
    """Lower case, single spaces, typographic quotes and dashes made plain, no outer punctuation."""
    plain = text.translate(str.maketrans("‘’“”–—", "''\"\"--"))
    return re.sub(r"\s+", " ", plain).strip(" \t\n\"'.,;:!").casefold()


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."

