"""Policy names, as experiments list them, and how to make each policy.

``make_policy(name, options)`` builds a policy that runs in the VM. Bounds
(``BOUNDS``) are known names too, but they are computed from a run's ground
truth afterwards, not run: the runner skips them here.

Every LLM policy ``NAME`` has a text-blind twin ``NAME-blind``: the same code,
run with the device and system texts withheld (the orchestrator hands it empty
texts), so it has HMAT and the guest's observations only. What the twin scores
minus what the policy scores is what reading the texts contributed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TypeVar

from policies.backend import BackendSettings
from policies.base import Policy
from policies.damos import Damos, DamosSettings
from policies.first_touch import FirstTouch
from policies.hot_cold import HotCold, HotColdSettings
from policies.interleave import Interleave
from policies.kernel_tiering import KernelTiering
from policies.llamas import LlamasPolicy
from policies.llamas_backend import BackendPolicy
from policies.llamas_direct import DirectSettings, LlamasDirectPolicy
from policies.llm_client import uses_embedded_server
from testbed.errors import UserError
from testbed.values import PolicyKind

S = TypeVar("S")
Options = Mapping[str, object]
Factory = Callable[[Options], Policy]


def _plain(policy: Callable[[], Policy]) -> Factory:
    """A policy without options."""
    def make(options: Options) -> Policy:
        if options:
            raise ValueError(f"takes no options, got {sorted(options)}")
        return policy()

    return make


def _tunable(policy: Callable[[S], Policy], settings: Callable[..., S]) -> Factory:
    """A policy whose options are the numeric fields of its ``settings`` (defaults for those not given)."""
    def make(options: Options) -> Policy:
        known = sorted(inspect.signature(settings).parameters)
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown options {unknown} (known: {', '.join(known)})")
        not_numbers = sorted(key for key, value in options.items()
                             if isinstance(value, bool) or not isinstance(value, int | float))
        if not_numbers:
            raise ValueError(f"options {not_numbers} must be numbers")
        return policy(settings(**options))

    return make


_POLICIES: dict[str, Factory] = {
    FirstTouch.name: _plain(FirstTouch),
    Interleave.name: _plain(Interleave),
    KernelTiering.name: _plain(KernelTiering),
    Damos.name: _tunable(Damos, DamosSettings),
    HotCold.name: _tunable(HotCold, HotColdSettings),
    LlamasPolicy.name: _tunable(lambda settings: LlamasPolicy(settings=settings), BackendSettings),
    LlamasDirectPolicy.name: _tunable(lambda direct: LlamasDirectPolicy(direct=direct), DirectSettings),
    BackendPolicy.name: _tunable(BackendPolicy, BackendSettings),  # the backend alone on HMAT: an ablation
}
TWIN_SUFFIX = "-blind"


def _twin(policy: Factory, name: str) -> Factory:
    """The text-blind twin of an LLM policy: the same policy, named and marked so that its texts are withheld."""
    def make(options: Options) -> Policy:
        twin = policy(options)
        twin.name, twin.kind, twin.text_blind = name, PolicyKind.TWIN, True
        return twin

    return make


# Making a policy only stores its settings (an LLM is connected at setup), so asking each for its kind is cheap.
TWINS: Mapping[str, str] = MappingProxyType({name: name + TWIN_SUFFIX for name, make in _POLICIES.items()
                                             if make({}).kind is PolicyKind.LLM})
POLICIES: Mapping[str, Factory] = MappingProxyType(
    {**_POLICIES, **{twin: _twin(_POLICIES[name], twin) for name, twin in TWINS.items()}})
BOUNDS = frozenset({"oracle"})  # computed offline from the runs' ground truth (testbed/oracle.py)


def known_policies() -> list[str]:
    return sorted({*POLICIES, *BOUNDS})


def with_twins(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` with each LLM policy's twin right after it (where the list does not name it already)."""
    expanded: list[str] = []
    for name in names:
        expanded.append(name)
        twin = TWINS.get(name)
        if twin is not None and twin not in names:
            expanded.append(twin)
    return tuple(expanded)


LLM_KINDS = (PolicyKind.LLM, PolicyKind.TWIN)


def embedded_model_for(names: Iterable[str]) -> str | None:
    """The embedded model to serve while these policies run: None when none may ask an LLM (a twin runs its
    LLM policy's code, so it may), or when another endpoint or a replay answers."""
    model = uses_embedded_server()
    return model if model is not None and any(policy_kind(name) in LLM_KINDS for name in names) else None


def policy_kind(name: str) -> PolicyKind:
    """BOUND for a bound; otherwise the kind the policy declares."""
    return PolicyKind.BOUND if name in BOUNDS else make_policy(name).kind


def make_policy(name: str, options: Options | None = None) -> Policy:
    """The policy called ``name``, built with ``options``; a UserError names what is wrong."""
    factory = POLICIES.get(name)
    if factory is None:
        if name in BOUNDS:
            raise UserError(f"{name!r} is a bound computed from the runs' ground truth, not a policy to run")
        raise UserError(f"unknown policy {name!r} (known: {', '.join(known_policies())})")
    try:
        return factory(options or {})
    except ValueError as error:
        raise UserError(f"policy {name!r}: {error}") from None
