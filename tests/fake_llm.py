"""A real OpenAI-compatible HTTP server on loopback (stdlib only) for the LLM judge tests."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from hardneg.decisions.llm import PROBE, PROMPT


class FakeLLM:
    """A real OpenAI-compatible HTTP server on loopback that misbehaves on purpose.

    ``GET /models`` reports ``model``. ``POST /completions`` enforces OpenAI's cap (``logprobs`` > 5 is
    HTTP 400) or, with ``chat_only``, answers 404 as OpenAI does for a chat model; ``POST
    /chat/completions`` wants ``logprobs: true`` and ``top_logprobs`` <= 20. ``plan`` scripts the next
    replies (malformed, slow, nologprobs, fail = HTTP 500); ``fail(prompt)`` fails chosen prompts (400);
    ``answer(prompt)`` is P(yes). Every prompt asked is recorded."""

    def __init__(self, model: str = "m", chat_only: bool = False, answer: Callable[[str], float] | None = None,
                 fail: Callable[[str], bool] | None = None):
        self.model, self.chat_only = model, chat_only
        self.answer = answer or (lambda prompt: 0.95 if "cell" in prompt.lower() else 0.1)
        self.fail = fail or (lambda prompt: False)
        self.plan: list[str] = []
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"llm": self}))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def calls(self) -> int:
        """Judging calls (the endpoint check's probe not counted)."""
        return sum(p != PROBE_PROMPT for p in self.prompts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


PROBE_PROMPT = PROMPT.format(query=PROBE[0], doc=PROBE[1])


class _Handler(BaseHTTPRequestHandler):
    llm: ClassVar[FakeLLM]

    def _send(self, status: int, payload: object) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": self.llm.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        llm = self.llm
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path.endswith("/chat/completions")
        if chat:
            top = body.get("top_logprobs")
            if body.get("logprobs") is not True or not isinstance(top, int) or not 0 <= top <= 20:
                return self._send(400, {"error": {"message": "top_logprobs must be 0-20 with logprobs true"}})
            prompt = body["messages"][-1]["content"]
        else:
            if llm.chat_only:
                return self._send(404, {"error": {"message": "This is a chat model and not supported in the "
                                                              "v1/completions endpoint."}})
            if not 0 <= body.get("logprobs", 0) <= 5:
                return self._send(400, {"error": {"message": "Invalid value for 'logprobs': must be less than or "
                                                              "equal to 5.", "type": "invalid_request_error"}})
            prompt = body["prompt"]
        with llm.lock:
            llm.prompts.append(prompt)
            step = llm.plan.pop(0) if llm.plan else "ok"
        if step == "slow":
            time.sleep(1.5)
        if step == "fail":
            return self._send(500, {"error": {"message": "internal error"}})
        if step == "ok" and llm.fail(prompt):  # a per-pair client error, as for a too long prompt: not retried
            return self._send(400, {"error": {"message": "maximum context length exceeded"}})
        if step == "malformed":
            return self._send(200, b"{not json")
        if step == "nologprobs":
            return self._send(200, {"choices": [{"text": " yes"}]})
        yes = llm.answer(prompt)
        top = {" yes": math.log(yes), " no": math.log(1 - yes)}
        if chat:
            entries = [{"token": k, "logprob": v, "bytes": list(k.encode())} for k, v in top.items()]
            choice = {"message": {"role": "assistant", "content": "yes"},
                      "logprobs": {"content": [{"token": " yes", "logprob": top[" yes"], "top_logprobs": entries}]}}
        else:
            choice = {"text": " yes", "logprobs": {"top_logprobs": [top]}}
        self._send(200, {"choices": [choice]})

    def log_message(self, *args: object) -> None:
        pass
