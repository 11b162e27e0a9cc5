"""With the real embedded LLM: the plumbing on SmolLM2-135M, one device and one program's buffers read by
Qwen2.5-Coder-1.5B.

Each real call costs 2-40 s on two shared cores (a judgement of one quote is the cheapest), so there are few.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.constraints import ask_holdings
from policies.device_profile import CLAIMS, FREQUENCY_KEY, WEAR_KEY, DeviceProfile
from policies.frontend import QuoteJudge, profile_device
from policies.llm_client import LlmClient, LlmSettings, Message, OpenAiTransport, Transcript
from testbed.catalog import default_catalog
from testbed.llm_server import running_server
from testbed.values import RegionHint
from testbed.workload import load_workload, workload_path

pytestmark = pytest.mark.llm


def _client(model: str, base_url: str, transcript_dir: Path) -> LlmClient:
    settings = LlmSettings(model=model)
    return LlmClient(settings, OpenAiTransport(settings, base_url), Transcript.in_directory(transcript_dir))


@pytest.fixture(scope="session")
def qwen_url() -> Iterator[str]:
    with running_server("qwen1.5b") as base_url:
        yield base_url


@pytest.fixture(scope="session")
def smollm2_url() -> Iterator[str]:
    with running_server("smollm2") as base_url:
        yield base_url


def test_the_embedded_server_answers_in_json_object_mode(smollm2_url: str, tmp_path: Path) -> None:
    schema = {"type": "object", "required": ["memory"], "additionalProperties": False,
              "properties": {"memory": {"type": "string", "maxLength": 30}}}
    answer = _client("smollm2", smollm2_url, tmp_path).ask_json([Message("user", "Name a kind of memory.")],
                                                                 schema, "memory")
    assert set(answer.value) == {"memory"} and isinstance(answer.value["memory"], str)
    assert (tmp_path / "llm-transcript.jsonl").read_text().count("\n") == 1


def test_qwen_reads_the_read_latency_of_optane_pmem(qwen_url: str, tmp_path: Path) -> None:
    catalog = default_catalog()
    device = catalog.devices()["optane-pmem"]
    machine = catalog.load_system("dram-pmem")
    result = profile_device(_client("qwen1.5b", qwen_url, tmp_path), device.name, device.description,
                            machine.description)
    assert not result.cached
    latency = result.profile.read_latency_ns
    assert latency is not None, result.problems
    assert abs(latency - device.read_latency_ns) <= 0.25 * device.read_latency_ns
    assert result.profile.keeps_data_without_power is True, result.problems  # "survives a power cut"
    assert result.profile.readable_by_others is False


def test_qwen_reads_which_buffer_holds_secrets(qwen_url: str, tmp_path: Path) -> None:
    workload = load_workload(workload_path("tenant-keys"))
    hints = [RegionHint(region.name, region.size, region.description or "") for region in workload.regions]
    profiles = {0: DeviceProfile("ddr5"), 1: DeviceProfile("pool", readable_by_others=True)}
    holdings = ask_holdings(_client("qwen1.5b", qwen_url, tmp_path), hints, profiles)
    assert set(holdings.confined) == {"keys"}, (holdings.notes, holdings.problems)
    assert holdings.confined["keys"][0] == {0}


@pytest.mark.parametrize(("quote", "key", "states"), [
    ("Pages touched many times a second come back several times faster than the rest", FREQUENCY_KEY, True),
    ("Trusted by the world's largest data centres", FREQUENCY_KEY, False),  # praise
    ("Each cell takes only so many writes before it fails", WEAR_KEY, True),
    ("Unlike flash, nothing in it wears out", WEAR_KEY, False),  # the claim, denied
])
def test_qwen_judges_whether_a_quote_states_a_claim_by_meaning(qwen_url: str, tmp_path: Path, quote: str, key: str,
                                                               states: bool) -> None:
    assert QuoteJudge(_client("qwen1.5b", qwen_url, tmp_path), None)(quote, CLAIMS[key]) is states
