"""How well the frontend LLM reads devices: each device's profile, read from its text, against its YAML.

For every device in a set the frontend reads the device's description
(with the description of a machine that holds it, for capacity) and the
extracted profile is scored field by field: numbers count when within ±25% of
the YAML, booleans when equal to what the YAML implies (frequency-dependent
latency from ``latency_model``, wear from a rated ``endurance``, readable by
others from ``exposed``, keeping data without power from ``persistent``). A dropped field
counts as a miss. Three sets, each its own table: ``catalog`` (``devices/``,
the texts the prompt and checks were written with), ``held-out``
(``tests/data/held-out-devices``: texts written apart from them; their misses
shaped the narrow question about quotes, so they are tuning texts now) and
``unseen`` (``tests/data/unseen-devices``: written apart after that, never
used to tune anything). The last two have no machine description, so capacity
is not scored there.

    .venv/bin/python benchmarks/frontend.py                  # the embedded Qwen 1.5B
    LLAMAS_LLM=http://host:port/v1 LLAMAS_LLM_MODEL=m .venv/bin/python benchmarks/frontend.py
    .venv/bin/python benchmarks/frontend.py --llm local --llm local:smollm2 --transcripts out/
    .venv/bin/python benchmarks/frontend.py --set unseen

By default nothing comes from the profile cache, so the seconds are real calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from policies.device_profile import DeviceProfile
from policies.frontend import ProfileResult, default_cache, profile_device
from policies.llm_client import LlmClient, connect, replay, settings_from_env
from testbed.catalog import Catalog, default_catalog
from testbed.errors import UserError
from testbed.llm_server import MODELS, server_status, stop_server
from testbed.model import Device
from testbed.table import render_table
from testbed.units import format_bandwidth, format_latency, format_size

TOLERANCE = 0.25
DATA = Path(__file__).parent.parent / "tests" / "data"
SETS = {"catalog": None, "held-out": DATA / "held-out-devices", "unseen": DATA / "unseen-devices"}  # None: devices/
NO_MACHINE = "No machine description is available for this device."


@dataclass(frozen=True)
class Case:
    device: Device
    machine_description: str
    capacity: int | None  # the node size in that machine; None when no machine holds the device once


@dataclass(frozen=True)
class Check:
    """One scored field: what the profile says vs what the YAML implies."""

    header: str
    truth: Callable[[Case], object]
    found: Callable[[DeviceProfile], object]
    show: Callable[[object], str]


def _number(show: Callable[[float], str]) -> Callable[[object], str]:
    return lambda value: show(float(value)) if isinstance(value, (int, float)) else str(value)


CHECKS = (
    Check("read lat", lambda c: c.device.read_latency_ns, lambda p: p.read_latency_ns, _number(format_latency)),
    Check("write lat", lambda c: c.device.write_latency_ns, lambda p: p.write_latency_ns, _number(format_latency)),
    Check("read bw", lambda c: c.device.read_bandwidth, lambda p: p.read_bandwidth, _number(format_bandwidth)),
    Check("write bw", lambda c: c.device.write_bandwidth, lambda p: p.write_bandwidth, _number(format_bandwidth)),
    Check("capacity", lambda c: c.capacity, lambda p: p.capacity, _number(format_size)),
    Check("freq-dep", lambda c: c.device.latency_model is not None, lambda p: p.frequency_dependent_latency, str),
    Check("wears", lambda c: c.device.endurance_writes is not None, lambda p: p.wears_out, str),
    Check("exposed", lambda c: c.device.exposed, lambda p: p.readable_by_others, str),
    Check("persists", lambda c: c.device.persistent, lambda p: p.keeps_data_without_power, str),
)


def cases(catalog: Catalog) -> list[Case]:
    """Each device with the first machine (by name) that holds exactly one node of it."""
    systems = catalog.systems()
    result = []
    for device in catalog.devices().values():
        holders = [(system, nodes[0]) for system in systems
                   if len(nodes := [n for n in system.nodes if n.device.name == device.name]) == 1]
        if holders:
            system, node = holders[0]
            result.append(Case(device, system.description, node.size))
        else:
            result.append(Case(device, NO_MACHINE, None))
    return result


def verdict(check: Check, case: Case, profile: DeviceProfile) -> tuple[str, bool | None]:
    """The cell text and whether it counts as right (None: nothing to score)."""
    truth, found = check.truth(case), check.found(profile)
    if truth is None:
        return "n/a", None
    if found is None:
        return "dropped", False
    if isinstance(truth, bool):
        right = found == truth
    else:
        assert isinstance(truth, (int, float)) and isinstance(found, (int, float))
        right = abs(found - truth) <= TOLERANCE * truth
    return ("ok" if right else f"x {check.show(found)}"), right


def run(client: LlmClient, all_cases: Sequence[Case], use_cache: bool, verbose: bool) -> str:
    rows: list[list[object]] = []
    scores: list[list[bool]] = [[] for _ in CHECKS]
    seconds: list[float] = []
    for case in all_cases:
        started = time.monotonic()
        result = profile_device(client, case.device.name, case.device.description, case.machine_description,
                                default_cache() if use_cache else None)
        seconds.append(time.monotonic() - started)
        row: list[object] = [case.device.name]
        for index, check in enumerate(CHECKS):
            cell, right = verdict(check, case, result.profile)
            row.append(cell)
            if right is not None:
                scores[index].append(right)
        right_here = sum(cell == "ok" for cell in row[1:])
        scored_here = sum(cell != "n/a" for cell in row[1:])
        rows.append([*row, f"{right_here}/{scored_here}", round(seconds[-1], 1)])
        if verbose:
            _print_problems(result)
    total = sum(sum(s) for s in scores)
    total_scored = sum(len(s) for s in scores)
    rows.append(["total", *(f"{sum(s)}/{len(s)}" for s in scores), f"{total}/{total_scored}",
                 round(sum(seconds) / len(seconds), 1)])
    headers = ["device", *(check.header for check in CHECKS), "right", "s/device"]
    return render_table(headers, rows)


def _print_problems(result: ProfileResult) -> None:
    for problem in result.problems:
        print(f"  {result.profile.device}: {problem.field}: {problem.reason}", file=sys.stderr)


def endpoints(requested: Sequence[str] | None) -> list[str]:
    """The requested LLMs, else the embedded one plus whatever LLAMAS_LLM names."""
    if requested:
        return list(requested)
    configured = os.environ.get("LLAMAS_LLM", "local")
    return ["local"] if configured == "local" else ["local", configured]


def clients(args: argparse.Namespace) -> list[LlmClient]:
    if args.replay:
        return [replay(args.replay)]
    return [connect(settings_from_env({**os.environ, "LLAMAS_LLM": endpoint}), args.transcripts)
            for endpoint in endpoints(args.llm)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", action="append", help="an LLAMAS_LLM value (repeatable)")
    parser.add_argument("--transcripts", type=Path, help="directory for the LLM transcript")
    parser.add_argument("--use-cache", action="store_true", help="answer from the profile cache where possible")
    parser.add_argument("--replay", type=Path, metavar="TRANSCRIPT",
                        help="re-score the answers recorded in a transcript (no LLM; seconds are replay time)")
    parser.add_argument("--set", action="append", choices=SETS, dest="sets",
                        help="which devices (repeatable; default: all three sets)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the dropped fields and why")
    args = parser.parse_args(argv)
    already_serving = {name for name in MODELS if server_status(name) is not None}
    try:
        sets = {name: cases(default_catalog() if (directory := SETS[name]) is None else Catalog(directory))
                for name in args.sets or SETS}
        for client in clients(args):
            for name, set_cases in sets.items():
                print(f"\n{client.settings.label} (json mode {client.settings.json_mode.value}), {name}: "
                      f"{len(set_cases)} devices, ±{TOLERANCE:.0%} for numbers:")
                print(run(client, set_cases, args.use_cache, args.verbose))
    except UserError as error:
        print(f"frontend benchmark: {error}", file=sys.stderr)
        return error.exit_code
    finally:  # embedded servers this run started are stopped; others are left as they were
        for name in set(MODELS) - already_serving:
            stop_server(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
