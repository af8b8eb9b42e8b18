"""A small OpenAI-compatible HTTP server for tests and benchmarks (bench/generation_speed.py runs this file):
deterministic replies derived from the prompt (or scripted ones), a fixed delay, and injectable faults (429,
500, timeouts, unparseable text).
It stands in for the network boundary only; everything on our side of it is real."""
from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def deterministic_reply(prompt: str, as_json: bool = False) -> str:
    """One Q/A pair per sentence of the <document> block, up to the number of pairs asked; as JSON
    ({"pairs": [...]}) for a request with a `response_format` schema."""
    doc = re.search(r"<document>\n(.*?)\n</document>", prompt, re.S)
    n = re.search(r"Write (\d+) question/answer pairs", prompt)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", doc.group(1) if doc else "") if s.strip()]
    count = int(n.group(1)) if n else 3
    pairs = [(f"What does the document state in sentence {i + 1} beginning '{s[:40]}'?", s)
             for i, s in enumerate(sentences[:count])] or [("Is the document empty?", "Yes.")]
    if as_json:
        return json.dumps({"pairs": [{"question": q, "answer": a} for q, a in pairs]})
    return "\n".join(f"Q: {q}\nA: {a}" for q, a in pairs)


class FakeLLM:
    def __init__(self, delay: float = 0.0, garbage_when: str | None = None, default_reply: str | None = None,
                 refuse_response_format: bool = False):
        self.delay = delay
        self.garbage_when = garbage_when  # prompts containing this always get an unparseable reply
        self.default_reply = default_reply  # instead of QA pairs from the prompt (e.g. "Yes" for a judge)
        self.refuse_response_format = refuse_response_format  # answer 400, as servers without structured output do
        self.replies: list[str] = []  # scripted reply texts, consumed first, one per answered request
        self.bodies: list[dict] = []  # every request body received
        # Consumed one per request: "429", "500", "401", "timeout", "garbage"; anything else ("ok") is no fault.
        self.faults: deque[str] = deque()
        self.requests = 0  # every request received, faults included
        self.served = 0  # successful completions
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def inject(self, *faults: str) -> None:
        self.faults.extend(faults)

    def __enter__(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict | str, headers: dict | None = None):
                data = (json.dumps(body) if isinstance(body, dict) else body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:  # the client gave up (an injected timeout)
                    pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests += 1
                    fake.bodies.append(req)
                    fault = fake.faults.popleft() if fake.faults else None
                prompt = req["messages"][-1]["content"]
                if fault == "429":
                    # as OpenAI does, with a retry hint (10 ms) that the openai client honours
                    return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                      {"retry-after-ms": "10"})
                if fault == "500":
                    return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                if fault == "401":  # a permanent fault: a bad key is not fixed by asking again
                    return self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
                structured = (req.get("response_format") or {}).get("type") == "json_schema"
                if structured and fake.refuse_response_format:
                    return self._send(400, {"error": {"message": "response_format is not supported",
                                                      "type": "invalid_request_error"}})
                if fault == "timeout":
                    time.sleep(3.0)
                time.sleep(fake.delay)
                garbage = fault == "garbage" or (fake.garbage_when and fake.garbage_when in prompt)
                with fake.lock:
                    fake.served += 1
                    if garbage:
                        text = "I cannot help with that."
                    elif fake.replies:
                        text = fake.replies.pop(0)
                    else:
                        text = fake.default_reply or deterministic_reply(prompt, structured)
                self._send(200, {
                    "id": "cmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": req["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4,
                              "total_tokens": (len(prompt) + len(text)) // 4},
                })

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    """`python tests/fake_llm.py --delay 0.2`: serve in its own process (benchmarks), printing the URL."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--delay", type=float, default=0.0)
    args = ap.parse_args()
    with FakeLLM(delay=args.delay) as llm:
        print(llm.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
