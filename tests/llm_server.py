"""A scripted OpenAI-compatible chat server on 127.0.0.1, so tests drive the real `openai` client.

It implements `POST /v1/chat/completions` (non-streaming) and answers from a queue of scripted replies:

    from llm_server import Reply, ScriptedLLM, scripted_llm   # tests/ is on sys.path under pytest

    def test_something(scripted_llm):                         # the fixture: started, stopped in teardown
        scripted_llm.push("Description: ...\\n<<<<<<< SEARCH ...")      # a text reply
        scripted_llm.push(Reply(status=429, retry_after=0))              # an HTTP error, then
        scripted_llm.push(Reply(text="...", delay=0.5))                  # a slow reply
        proposer = LLMProposer(base_url=scripted_llm.base_url, api_key="test", model="scripted")
        ...
        scripted_llm.requests          # the JSON bodies received, in order
        scripted_llm.times             # when each arrived (time.monotonic()), to see the client's waits
        scripted_llm.prompt(-1)        # the last request's messages joined as one string

`scripted_llm.rejects_max_tokens = True` makes it answer a request holding `max_tokens` with the 400 that
OpenAI's reasoning models (o-series, gpt-5) send, before taking a reply from the queue.

Outside pytest: `with ScriptedLLM() as llm: ...`. When the queue is empty the server answers with the
`responder` (a function request-body -> str | Reply) when one is set, else with HTTP 500 "no reply queued",
so a test that asks more often than it scripted fails loudly. Usage fields are counted as characters / 4
unless a Reply sets them. Nothing else is served; the server listens on 127.0.0.1 only, on an ephemeral port.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Reply:
    """One scripted answer: a text reply (status 200), or an HTTP error status; optionally after a delay."""

    text: str = ""
    status: int = 200
    retry_after: float | None = None        # sent as the Retry-After header (seconds)
    delay: float = 0.0                      # seconds to wait before answering (client timeouts)
    prompt_tokens: int | None = None        # default: characters of the messages / 4
    completion_tokens: int | None = None    # default: characters of the text / 4
    finish_reason: str = "stop"             # "length" scripts a reply cut off at max_tokens
    reasoning: str | None = None            # sent as the message's `reasoning_content` (DeepSeek, vLLM)


class ScriptedLLM:
    """The server; `base_url` ends in /v1, as the openai client expects."""

    def __init__(self, responder: Callable[[dict], str | Reply] | None = None):
        self.replies: deque[Reply] = deque()
        self.requests: list[dict] = []
        self.times: list[float] = []
        self.responder = responder
        self.rejects_max_tokens = False
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- script and inspect -------------------------------------------------------------------------------
    def push(self, *replies: str | Reply) -> ScriptedLLM:
        """Queue replies, answered in order, one per request."""
        with self._lock:
            self.replies.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)
        return self

    def prompt(self, index: int = -1) -> str:
        """The messages of request `index` joined into one string (role headers included)."""
        messages = self.requests[index]["messages"]
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> ScriptedLLM:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="scripted-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- answering ----------------------------------------------------------------------------------------
    def _next_reply(self, body: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.times.append(time.monotonic())
            if self.rejects_max_tokens and "max_tokens" in body:
                return Reply(status=400, text=MAX_TOKENS_UNSUPPORTED)
            if self.replies:
                return self.replies.popleft()
        if self.responder is not None:
            reply = self.responder(body)
            return Reply(text=reply) if isinstance(reply, str) else reply
        return Reply(status=500, text="scripted LLM: no reply queued")


# OpenAI's answer (HTTP 400) to a reasoning model asked with max_tokens.
MAX_TOKENS_UNSUPPORTED = ("Unsupported parameter: 'max_tokens' is not supported with this model. "
                          "Use 'max_completion_tokens' instead.")


def _completion(body: dict, reply: Reply) -> dict:
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else prompt_chars // 4
    completion_tokens = reply.completion_tokens if reply.completion_tokens is not None else len(reply.text) // 4
    message = {"role": "assistant", "content": reply.text}
    if reply.reasoning is not None:
        message["reasoning_content"] = reply.reasoning
    return {
        "id": f"chatcmpl-scripted-{int(time.time() * 1000)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                     "message": message}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _handler_for(llm: ScriptedLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):     # keep test output clean
            pass

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass        # the client gave up (its timeout) while a delayed reply was pending

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"not found: {self.path}", "type": "not_found"}})
                return
            body = json.loads(raw or b"{}")
            reply = llm._next_reply(body)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.status != 200:
                headers = {} if reply.retry_after is None else {"Retry-After": f"{reply.retry_after:g}"}
                message = reply.text or f"scripted error {reply.status}"
                self._send(reply.status, {"error": {"message": message, "type": "scripted", "code": None}},
                           headers)
                return
            self._send(200, _completion(body, reply))

    return Handler


@pytest.fixture
def scripted_llm():
    """A started ScriptedLLM; stopped in teardown whatever the test did."""
    with ScriptedLLM() as llm:
        yield llm
