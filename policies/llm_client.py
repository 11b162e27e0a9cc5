"""An OpenAI-compatible chat client that answers in JSON, with transcripts and record/replay.

Choosing the LLM
----------------
One environment variable picks the endpoint, a few refine it:

``LLAMAS_LLM``
    ``local`` (the default): the embedded server (:mod:`testbed.llm_server`) with its
    default model, Qwen2.5-Coder-1.5B; started on demand, left running
    (``llamas llm stop`` ends it). ``local:NAME``: another embedded model, e.g.
    ``local:smollm2``. ``openai``: OpenAI's API. Anything starting with
    ``http://`` or ``https://``: the base URL of any OpenAI-compatible server
    (ending in ``/v1`` as a rule). ``replay:PATH``: no LLM at all, the answers
    recorded in the transcript at PATH (see below).
``LLAMAS_LLM_MODEL``
    The model name to request. Required for a base URL; ``openai`` defaults to
    ``gpt-4o-mini``; ignored for ``local``.
``LLAMAS_LLM_JSON_MODE``
    How the server is made to answer in JSON: ``json_schema`` (OpenAI's
    structured outputs; the default for ``openai`` and base URLs),
    ``json_object`` (llama.cpp's ``{"type": "json_object", "schema": ...}``,
    enforced as a grammar; the default for ``local``; llama.cpp answers the
    ``json_schema`` form with HTTP 500) or ``prompt`` (the schema goes into the
    prompt and the answer is parsed strictly: exactly one JSON object, nothing
    around it but whitespace and a code fence).
``LLAMAS_LLM_API_KEY_ENV``
    The name of the variable that holds the API key (default ``OPENAI_API_KEY``).
    A local server needs none; ``openai`` refuses to start without one.

Requests use temperature 0 and a fixed seed.

Transcripts and replay
----------------------
Given a directory, the client appends every call to ``llm-transcript.jsonl``
there: the request (messages, schema, parameters), the raw answer, the parsed
object, latency, token counts and any error. :func:`replay` builds a client
from such a file that answers each request with the recorded answer, matched by
a hash of the canonical request: no LLM, no network, identical results. A
request that is not in the transcript is an error that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import openai

from testbed.errors import UserError
from testbed.llm_server import DEFAULT_MODEL, ensure_server, model_spec

TRANSCRIPT_NAME = "llm-transcript.jsonl"
OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL = "gpt-4o-mini"
NO_KEY = "not-needed"  # the openai package insists on some key; local servers ignore it

JsonObject = dict[str, Any]
_LENGTH_KEYWORDS = frozenset({"maxLength", "minLength"})


class JsonMode(StrEnum):
    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"
    PROMPT = "prompt"


class LlmAnswerError(UserError):
    """The model answered, but not with what was asked for."""


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class LlmSettings:
    """Which model to ask and how; everything that shapes a request lives here."""

    model: str
    base_url: str | None = None  # None: the embedded server for ``model``
    json_mode: JsonMode = JsonMode.JSON_OBJECT
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 180.0
    retries: int = 2
    temperature: float = 0.0
    seed: int = 0
    max_tokens: int = 1024

    @property
    def label(self) -> str:
        return f"local:{self.model}" if self.base_url is None else f"{self.model} at {self.base_url}"


def settings_from_env(environ: Mapping[str, str] | None = None) -> LlmSettings:
    """The settings the ``LLAMAS_LLM*`` variables describe (see the module docstring)."""
    env = os.environ if environ is None else environ
    choice = env.get("LLAMAS_LLM", "local").strip() or "local"
    key_env = env.get("LLAMAS_LLM_API_KEY_ENV", "OPENAI_API_KEY")
    model = env.get("LLAMAS_LLM_MODEL", "").strip()
    if choice == "local" or choice.startswith("local:"):
        name = choice.partition(":")[2] or DEFAULT_MODEL
        settings = LlmSettings(model=model_spec(name).name, api_key_env=key_env)
    elif choice == "openai":
        settings = LlmSettings(model=model or OPENAI_DEFAULT_MODEL, base_url=OPENAI_BASE_URL,
                               json_mode=JsonMode.JSON_SCHEMA, api_key_env=key_env)
        if not env.get(key_env):
            raise UserError(f"LLAMAS_LLM=openai needs an API key in ${key_env}")
    elif choice.startswith(("http://", "https://")):
        if not model:
            raise UserError(f"LLAMAS_LLM={choice} needs LLAMAS_LLM_MODEL (the model name that server serves)")
        settings = LlmSettings(model=model, base_url=choice.rstrip("/"), json_mode=JsonMode.JSON_SCHEMA,
                               api_key_env=key_env)
    else:
        raise UserError(f"LLAMAS_LLM={choice!r}: expected local, local:MODEL, openai, an http(s):// base URL "
                        "or replay:PATH")
    mode = env.get("LLAMAS_LLM_JSON_MODE")
    if mode:
        try:
            settings = replace(settings, json_mode=JsonMode(mode))
        except ValueError:
            raise UserError(f"LLAMAS_LLM_JSON_MODE={mode!r}: expected one of "
                            f"{', '.join(m.value for m in JsonMode)}") from None
    return settings


# --- the strict parser ------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?[ \t]*\n(?P<body>.*?)\n[ \t]*```", re.DOTALL | re.IGNORECASE)


def parse_json_object(text: str) -> JsonObject:
    """Exactly one JSON object; only whitespace and one code fence may surround it."""
    body = text.strip()
    fenced = _FENCE.fullmatch(body)
    if fenced:
        body = fenced["body"].strip()
    if not body.startswith("{"):
        raise LlmAnswerError(f"the answer is not a JSON object: {_excerpt(body)}")
    try:
        value, end = json.JSONDecoder(parse_constant=_reject_constant).raw_decode(body)
    except (json.JSONDecodeError, ValueError) as error:
        raise LlmAnswerError(f"the answer is not valid JSON ({error}): {_excerpt(body)}") from None
    if body[end:].strip():
        raise LlmAnswerError(f"the answer has text after its JSON object: {_excerpt(body[end:].strip())}")
    return value  # type: ignore[no-any-return]  # starts with "{", so it decoded to a dict


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _excerpt(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


def data_block(label: str, text: str) -> str:
    """``text`` fenced as data under ``label``; marker look-alikes inside it are defused.

    Prompts tell the model that whatever stands between these markers is data
    to read, never instructions, so a description cannot close the block early.
    """
    tag = label.upper()
    inner = text.replace("<<<", "< < <").replace(">>>", "> > >")
    return f"<<<BEGIN {tag}>>>\n{inner}\n<<<END {tag}>>>"


# --- transports: where answers come from ------------------------------------------------------


@dataclass(frozen=True)
class RawReply:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class Transport(Protocol):
    def send(self, request: JsonObject, key: str) -> RawReply: ...


class OpenAiTransport:
    """Sends requests to an OpenAI-compatible server with the ``openai`` package."""

    def __init__(self, settings: LlmSettings, base_url: str) -> None:
        self._base_url = base_url
        self._settings = settings
        api_key = os.environ.get(settings.api_key_env) or NO_KEY
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=settings.timeout_s,
                                     max_retries=settings.retries)

    def send(self, request: JsonObject, key: str) -> RawReply:
        try:
            completion = self._client.chat.completions.create(**request)
        except openai.APIConnectionError as error:
            raise UserError(f"cannot reach the LLM at {self._base_url}: {error}") from None
        except openai.AuthenticationError:
            raise UserError(f"the LLM at {self._base_url} rejected the API key "
                            f"(from ${self._settings.api_key_env})") from None
        except openai.APIStatusError as error:
            raise UserError(f"the LLM at {self._base_url} answered HTTP {error.status_code}: "
                            f"{_excerpt(str(error.message), 200)}{self._json_mode_hint()}") from None
        choice = completion.choices[0] if completion.choices else None
        if choice is None:
            raise LlmAnswerError(f"the LLM at {self._base_url} returned no choices")
        usage = completion.usage
        return RawReply(text=choice.message.content or "",
                        prompt_tokens=usage.prompt_tokens if usage else None,
                        completion_tokens=usage.completion_tokens if usage else None,
                        finish_reason=choice.finish_reason)

    def _json_mode_hint(self) -> str:
        if self._settings.json_mode is JsonMode.PROMPT:
            return ""
        others = ", ".join(m.value for m in JsonMode if m is not self._settings.json_mode)
        return (f" (if this server does not support JSON mode {self._settings.json_mode.value}, "
                f"set LLAMAS_LLM_JSON_MODE to one of {others})")


@dataclass(frozen=True)
class ReplayTransport:
    """Answers from a transcript: the recorded reply for the same canonical request."""

    source: Path
    replies: Mapping[str, RawReply]

    def send(self, request: JsonObject, key: str) -> RawReply:
        if key not in self.replies:
            asked = next((m["content"] for m in reversed(request["messages"]) if m["role"] == "user"), "")
            raise UserError(f"request {key[:16]} is not in transcript {self.source} "
                            f"(model {request['model']}, asking {_excerpt(asked)})")
        return self.replies[key]


# --- transcripts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Transcript:
    """An append-only JSONL log of calls, one object per line."""

    path: Path

    @classmethod
    def in_directory(cls, directory: Path) -> Transcript:
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / TRANSCRIPT_NAME)

    def append(self, record: JsonObject) -> None:
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")

    def records(self) -> list[JsonObject]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise UserError(f"cannot read transcript {self.path}: {error.strerror}") from None
        try:
            return [json.loads(line) for line in lines if line.strip()]
        except json.JSONDecodeError as error:
            raise UserError(f"transcript {self.path} is not JSON lines: {error}") from None


def request_key(request: JsonObject) -> str:
    """The hash a request is recorded and replayed under: canonical JSON, sorted keys."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- the client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonAnswer:
    value: JsonObject
    raw: str
    latency_s: float


@dataclass(frozen=True)
class LlmClient:
    """Asks for one JSON object per call and logs every call to the transcript, if any."""

    settings: LlmSettings
    transport: Transport
    transcript: Transcript | None = None

    @property
    def model_id(self) -> str:
        """What identifies the answering model in cache keys."""
        return f"{self.settings.model}/{self.settings.json_mode.value}"

    def build_request(self, messages: Sequence[Message], schema: JsonObject, schema_name: str) -> JsonObject:
        mode = self.settings.json_mode
        wire = [{"role": m.role, "content": m.content} for m in messages]
        request: JsonObject = {"model": self.settings.model, "temperature": self.settings.temperature,
                               "seed": self.settings.seed, "max_tokens": self.settings.max_tokens}
        if mode is JsonMode.JSON_SCHEMA:
            request["response_format"] = {"type": "json_schema", "json_schema": {
                "name": schema_name, "schema": strict_subset(schema), "strict": True}}
        elif mode is JsonMode.JSON_OBJECT:
            request["response_format"] = {"type": "json_object", "schema": schema}
        else:
            wire.insert(0, {"role": "system", "content": "Answer with exactly one JSON object and nothing else. "
                            f"It must match this JSON Schema:\n{json.dumps(schema)}"})
        request["messages"] = wire
        return request

    def ask_json(self, messages: Sequence[Message], schema: JsonObject, schema_name: str) -> JsonAnswer:
        """One JSON object from the model; malformed answers raise :class:`LlmAnswerError`."""
        request = self.build_request(messages, schema, schema_name)
        key = request_key(request)
        record: JsonObject = {"key": key, "endpoint": self.settings.label, "settings": _replay_settings(self.settings),
                              "schema_name": schema_name, "schema": schema, "request": request,
                              "response": None, "parsed": None, "error": None}
        started = time.monotonic()
        try:
            reply = self.transport.send(request, key)
            record.update(response=reply.text, prompt_tokens=reply.prompt_tokens,
                          completion_tokens=reply.completion_tokens, finish_reason=reply.finish_reason)
            record["parsed"] = value = _parse_reply(reply)
        except UserError as error:
            record["error"] = str(error)
            raise
        finally:
            record["latency_s"] = round(time.monotonic() - started, 3)
            if self.transcript is not None:
                self.transcript.append(record)
        return JsonAnswer(value=value, raw=reply.text, latency_s=record["latency_s"])


def strict_subset(schema: Any) -> Any:
    """``schema`` without length limits, which OpenAI's strict mode rejects (answers are validated anyway)."""
    if isinstance(schema, dict):
        return {key: strict_subset(value) for key, value in schema.items() if key not in _LENGTH_KEYWORDS}
    if isinstance(schema, list):
        return [strict_subset(value) for value in schema]
    return schema


def _parse_reply(reply: RawReply) -> JsonObject:
    try:
        return parse_json_object(reply.text)
    except LlmAnswerError as error:
        if reply.finish_reason == "length":
            raise LlmAnswerError(f"{error} (the answer was cut off at max_tokens)") from None
        raise


def _replay_settings(settings: LlmSettings) -> JsonObject:
    """The settings that shape requests: enough to rebuild them when replaying."""
    return {"model": settings.model, "json_mode": settings.json_mode.value, "temperature": settings.temperature,
            "seed": settings.seed, "max_tokens": settings.max_tokens}


def connect(settings: LlmSettings | None = None, transcript_dir: Path | None = None) -> LlmClient:
    """A client for ``settings`` (default: from the environment), starting the embedded server if needed."""
    recorded = replay_source()
    if settings is None and recorded is not None:
        return replay(recorded, transcript_dir)
    settings = settings or settings_from_env()
    base_url = settings.base_url or ensure_server(settings.model)
    transcript = Transcript.in_directory(transcript_dir) if transcript_dir else None
    return LlmClient(settings, OpenAiTransport(settings, base_url), transcript)


def replay_source(environ: Mapping[str, str] | None = None) -> Path | None:
    """The transcript ``LLAMAS_LLM=replay:PATH`` names, if it names one."""
    choice = (os.environ if environ is None else environ).get("LLAMAS_LLM", "")
    return Path(choice.removeprefix("replay:")) if choice.startswith("replay:") else None


def uses_embedded_server(environ: Mapping[str, str] | None = None) -> str | None:
    """The embedded model the settings ask for, or None when another endpoint (or a replay) answers."""
    if replay_source(environ) is not None:
        return None
    settings = settings_from_env(environ)
    return settings.model if settings.base_url is None else None


def replay(transcript_path: Path, transcript_dir: Path | None = None) -> LlmClient:
    """A client that answers from a recorded transcript (optionally logging to a new one)."""
    records = [r for r in Transcript(transcript_path).records() if r.get("response") is not None]
    if not records:
        raise UserError(f"transcript {transcript_path} holds no recorded answers")
    shaping = records[0]["settings"]
    settings = LlmSettings(model=shaping["model"], base_url=f"replay:{transcript_path}",
                           json_mode=JsonMode(shaping["json_mode"]), temperature=shaping["temperature"],
                           seed=shaping["seed"], max_tokens=shaping["max_tokens"])
    replies = {r["key"]: RawReply(r["response"], r.get("prompt_tokens"), r.get("completion_tokens"),
                                  r.get("finish_reason")) for r in records}
    transcript = Transcript.in_directory(transcript_dir) if transcript_dir else None
    return LlmClient(settings, ReplayTransport(transcript_path, replies), transcript)
