"""A real OpenAI-compatible HTTP server on loopback (stdlib only) for the LLM judge and generation tests."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from hardneg.decisions.llm import PROBE, PROMPT
from hardneg.generation.client import PROBE as GENERATION_PROBE


class FakeLLM:
    """A real OpenAI-compatible HTTP server on loopback that misbehaves on purpose.

    ``GET /models`` reports ``model``. ``POST /completions`` enforces OpenAI's cap (``logprobs`` > 5 is
    HTTP 400) or, with ``chat_only``, answers 404 as OpenAI does for a chat model; ``POST
    /chat/completions`` wants ``logprobs: true`` and ``top_logprobs`` <= 20. ``plan`` scripts the next
    replies (malformed, slow, nologprobs, fail = HTTP 500); ``fail(prompt)`` fails chosen prompts (400);
    ``answer(prompt)`` is P(yes). Every prompt asked is recorded.

    Text generation: a request without ``logprobs`` gets a completion, ``write(prompt, seed)`` (by
    default a query made of three words of the prompt's last ``Document:``, chosen by the seed); its
    body is recorded in ``texts``. ``plan`` steps for it: empty, copy (the document verbatim), format
    (a long reply cut at the token limit), besides fail, malformed and slow; ``copy_of(prompt)`` is what
    the copy step copies (by default the prompt's last document)."""

    def __init__(self, model: str = "m", chat_only: bool = False, answer: Callable[[str], float] | None = None,
                 fail: Callable[[str], bool] | None = None, write: Callable[[str, int], str] | None = None,
                 copy_of: Callable[[str], str] | None = None):
        self.model, self.chat_only = model, chat_only
        self.answer = answer or (lambda prompt: 0.95 if "cell" in prompt.lower() else 0.1)
        self.fail = fail or (lambda prompt: False)
        self.write = write or default_query
        self.copy_of = copy_of or last_document
        self.plan: list[str] = []
        self.prompts: list[str] = []
        self.texts: list[dict] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"llm": self}))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def calls(self) -> int:
        """Judging calls (the endpoint check's probe not counted)."""
        return sum(p != PROBE_PROMPT for p in self.prompts)

    @property
    def text_calls(self) -> int:
        """Text-generation requests (the generator's probe not counted)."""
        return sum(b.get("prompt", b.get("messages", [{}])[-1].get("content")) != GENERATION_PROBE
                   for b in self.texts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


PROBE_PROMPT = PROMPT.format(query=PROBE[0], doc=PROBE[1])


def last_document(prompt: str) -> str:
    """The text after the prompt's last ``Document:`` (up to its line's end)."""
    return prompt.rsplit("Document:", 1)[-1].split("\n", 1)[0].strip()


def default_query(prompt: str, seed: int) -> str:
    """Three words of the last document, starting at a place the seed chooses."""
    words = [w.strip(".,;:()[]") for w in last_document(prompt).split() if len(w) > 3] or ["nothing"]
    k = seed % max(1, len(words) - 2)
    return " what about " + " ".join(words[k:k + 3])


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
        if (chat and body.get("logprobs") is not True) or (not chat and "logprobs" not in body):
            return self._text(body, chat)
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

    def _text(self, body: dict, chat: bool) -> None:
        """A text completion (what a generator asks for)."""
        llm = self.llm
        if not chat and llm.chat_only:
            return self._send(404, {"error": {"message": "This is a chat model and not supported in the "
                                                          "v1/completions endpoint."}})
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        with llm.lock:
            llm.prompts.append(prompt)
            llm.texts.append(body)
            step = llm.plan.pop(0) if llm.plan else "ok"
        if step == "slow":
            time.sleep(1.5)
        if step == "fail":
            return self._send(500, {"error": {"message": "internal error"}})
        if step == "malformed":
            return self._send(200, b"{not json")
        finish = "stop"
        if step == "empty":
            text = " \n"
        elif step == "copy":
            text = " " + llm.copy_of(prompt)
        elif step == "format":
            text, finish = " Document: " + "and so on " * 40, "length"
        else:
            text = llm.write(prompt, int(body.get("seed", 0)))
        text = text.split("\n", 1)[0] if "\n" in body.get("stop", []) and text.strip() else text
        choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                 "total_tokens": len(prompt.split()) + len(text.split())}
        self._send(200, {"choices": [{**choice, "index": 0, "finish_reason": finish}], "usage": usage})

    def log_message(self, *args: object) -> None:
        pass
