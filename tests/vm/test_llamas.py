"""The LLaMaS policy with the real embedded LLM, in a real guest, and its replay with no LLM."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from policies.frontend import ProfileCache
from policies.llamas import LlamasPolicy
from policies.llm_client import TRANSCRIPT_NAME, LlmClient
from policies.llm_client import replay as replay_client
from testbed.experiment import load_experiment
from testbed.image import Image
from testbed.llm_server import running_server
from testbed.orchestrator import run_policy
from testbed.timeline import read_timeline
from testbed.vms import booter
from testbed.workload import load_workload, workload_path

pytestmark = pytest.mark.llm


@pytest.fixture(scope="module")
def qwen() -> Iterator[str]:
    with running_server("qwen1.5b") as base_url:
        yield base_url


def test_a_llamas_run_replays_from_its_transcript(guest_image: Image, qwen: str, tmp_path: Path) -> None:
    workload = load_workload(workload_path("readopt"))
    short = replace(workload, phases=(replace(workload.phases[0], epochs=6),))
    experiment = replace(load_experiment("demo"), workload=short)

    boot = booter(experiment.system, experiment.catalog)
    live = LlamasPolicy(cache=ProfileCache(tmp_path / "profiles-live"))
    assert run_policy(experiment, live, 1, tmp_path / "live", print, boot).status == "ok"
    transcript = tmp_path / "live" / TRANSCRIPT_NAME
    calls = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert len(calls) >= 2 and all(call["response"] for call in calls)  # one reading per distinct device
    assert live.usage()["llm_calls"] == len(calls)

    def from_transcript(run_dir: Path) -> LlmClient:
        return replay_client(transcript, transcript_dir=run_dir)

    replayed = LlamasPolicy(connect_llm=from_transcript, cache=ProfileCache(tmp_path / "profiles-replay"))
    assert run_policy(experiment, replayed, 1, tmp_path / "replay", print, boot).status == "ok"
    assert replayed.readings == live.readings  # the same profiles, bit for bit, with no LLM
    again = [json.loads(line) for line in (tmp_path / "replay" / TRANSCRIPT_NAME).read_text().splitlines()]
    assert [call["response"] for call in again] == [call["response"] for call in calls]

    def reading_notes(run: str) -> list[str]:  # the policy's own, not the testbed's note of a short start
        notes = read_timeline(tmp_path / run / "timeline.jsonl").start.notes
        return [note for note in notes if "short of its start free memory" not in note]

    assert reading_notes("live") and reading_notes("replay") == reading_notes("live")

    # The profile the backend decides with: HMAT's numbers as the guest sees them, the LLM's reading beside them.
    readopt = next(reading for reading in live.readings if reading.node == 1)
    assert readopt.profile.write_latency_ns and readopt.profile.read_latency_ns
    assert readopt.profile.write_latency_ns == 10 * readopt.profile.read_latency_ns
