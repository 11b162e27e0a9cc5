"""A fake OpenAI-compatible server on 127.0.0.1 for unit tests: scripted answers, recorded requests.

It speaks just enough of the chat-completions API for the ``openai`` package,
so tests run the real client code path without a model.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from policies.device_profile import NOT_MENTIONED
from policies.frontend import FIND_PROMPT, JUDGE_PROMPT
from policies.llm_client import JsonMode, LlmClient, LlmSettings, OpenAiTransport, Transcript


class FakeOpenAi:
    """Answers each chat completion with the next scripted text (the last one repeats).

    The frontend's narrow questions about quotes are answered apart and recorded in ``judged`` rather than
    ``requests``: whether a quote states a claim (policies.frontend.QuoteJudge) by ``states_claim`` on the
    question's user message (by default: yes), and a second look for words that state one (QuoteFinder) by
    ``finds`` (by default: nothing)."""

    def __init__(self, *answers: str, status: int = 200, states_claim: Callable[[str], bool] = lambda _: True,
                 finds: Callable[[str], str] = lambda _: NOT_MENTIONED) -> None:
        self.answers = list(answers) or ["{}"]
        self.status = status
        self.states_claim = states_claim
        self.finds = finds
        self.requests: list[dict[str, Any]] = []
        self.judged: list[dict[str, Any]] = []
        self._server = HTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAi:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

    def client(self, mode: JsonMode = JsonMode.JSON_OBJECT, transcript_dir: Path | None = None) -> LlmClient:
        """A real client pointed at this server (no retries, so error tests are quick)."""
        settings = LlmSettings(model="fake-model", base_url=self.base_url, json_mode=mode, retries=0, timeout_s=10)
        transcript = Transcript.in_directory(transcript_dir) if transcript_dir else None
        return LlmClient(settings, OpenAiTransport(settings, self.base_url), transcript)

    def _next_answer(self) -> str:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                system, question = (message["content"] for message in body["messages"][:2])
                narrow = system in (JUDGE_PROMPT, FIND_PROMPT)
                (fake.judged if narrow else fake.requests).append(body)
                if fake.status != 200:
                    self._send(fake.status, {"error": {"message": "scripted failure", "type": "server_error"}})
                    return
                if system == JUDGE_PROMPT:
                    content = json.dumps({"states_claim": fake.states_claim(question)})
                elif system == FIND_PROMPT:
                    content = json.dumps({"quote": fake.finds(question)})
                else:
                    content = fake._next_answer()
                self._send(200, {
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                })

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler
