"""`memorize serve`: the trained model (memorize.chat) on an OpenAI-compatible HTTP endpoint
(`/v1/chat/completions`, `/v1/models`, `/health`), with its key, its limits and the requests that arrive
together answered in one batch; also the embedded generator's server (memorize.local_server)."""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import threading
import time
import uuid

from fastapi import Request  # at module level: FastAPI reads the endpoint's (string) annotation from here
from pydantic import BaseModel, ValidationError

from memorize import API_KEY_ENV, DEFAULT_MAX_QUEUE
from memorize.chat import DEFAULT_MAX_TOKENS, DEFAULT_TOP_K, Batcher, ChatModel, last_user

MAX_BODY_BYTES = 1 << 20  # a whole 8k-token context is ~40 kB of JSON


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):  # the OpenAI fields this server honours; others are ignored
    model: str | None = None
    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 0.0
    stream: bool = False
    response_format: dict | None = None

    def schema(self) -> dict | None:
        """The JSON schema a reply must follow: `json_schema` gives one, `json_object` any JSON (`{}`),
        `text` or none free text."""
        rf = self.response_format or {"type": "text"}
        if rf.get("type") == "text":
            return None
        if rf.get("type") == "json_object":
            return {}
        if rf.get("type") == "json_schema" and isinstance((rf.get("json_schema") or {}).get("schema"), dict):
            from lmformatenforcer import JsonSchemaParser

            schema = rf["json_schema"]["schema"]
            try:
                JsonSchemaParser(schema)
            except Exception as exc:  # the library raises whatever its schema model does
                raise ValueError(f"response_format: unsupported JSON schema ({exc})") from None
            return schema
        raise ValueError("response_format must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                         "{\"type\": \"json_schema\", \"json_schema\": {\"schema\": {...}}}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may stand for any interface
        return False


def exposure_warning(host: str, api_key: str | None, key_env: str = API_KEY_ENV, insecure: bool = False) -> str | None:
    """Anyone who reaches the endpoint can read the memorized documents out of the model: serving another
    interface than loopback needs a key. Raises ValueError when it has none; returns a warning when
    `insecure` (--insecure-no-auth) allows it anyway, else None."""
    if api_key or _loopback(host):
        return None
    if not insecure:
        raise ValueError(f"--host {host} lets other machines read the memorized documents, and {key_env} is not set: "
                         f"set a key that clients send as their API key (export {key_env}=$(python -c "
                         "'import secrets; print(secrets.token_urlsafe(32))')), or pass --insecure-no-auth to serve "
                         "without one")
    return (f"warning: serving {host} without an API key (--insecure-no-auth): anyone who reaches it can query the "
            "model")


_ERROR_TYPES = {401: "authentication_error", 429: "rate_limit_error", 500: "server_error"}


def _error(status: int, message: str, headers: dict | None = None):
    """OpenAI's error body, which clients read the message from (FastAPI's own is {"detail": ...})."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": _ERROR_TYPES.get(status, "invalid_request_error")}},
                        status, headers=headers)


class _BearerKey:
    """Every request but /health needs `Authorization: Bearer <key>`. Plain ASGI middleware: streamed
    responses and client disconnects pass through it untouched."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/health":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await _error(401, "missing or wrong API key: send the header Authorization: Bearer <key>",
                             {"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Admission:
    """Counts the requests waiting or generating; one over `limit` is refused (429) at once, so a flood
    queues no unbounded work."""

    def __init__(self, limit: int):
        self.limit, self.busy, self.lock = limit, 0, threading.Lock()

    def enter(self) -> None:
        from fastapi import HTTPException

        with self.lock:
            if self.busy >= self.limit:
                raise HTTPException(429, f"the server is busy ({self.limit} requests waiting or generating); "
                                    "retry later", headers={"Retry-After": "1"})
            self.busy += 1

    def leave(self, *_) -> None:  # also a future's done-callback
        with self.lock:
            self.busy -= 1


async def _body(request, limit: int) -> bytes:
    from fastapi import HTTPException

    too_large = HTTPException(413, f"the request body is over {limit} bytes")
    if int(request.headers.get("content-length") or 0) > limit:
        raise too_large
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_large
    return bytes(body)


def create_app(chat: ChatModel, max_batch: int = 8, api_key: str | None = None, max_queue: int = DEFAULT_MAX_QUEUE,
               max_prompt_tokens: int | None = None, rag: bool = False, top_k: int = DEFAULT_TOP_K):
    """FastAPI app with the OpenAI chat-completions API (streaming included). The fine-tuned model is served
    as `chat.name`; with an adapter (adapter off, same weights) or beside a full fine-tune, the base model as
    `chat.base_name`; with `rag`, each also as `<name>+rag`, which answers with the top_k chunks retrieved for
    the last user message in that message (the evaluation's in-context prompt).
    One generation at a time on the single model in memory; requests without streaming that arrive
    together share it, up to max_batch at once. `response_format` (json_schema, json_object) constrains
    the reply to JSON of the schema while it is generated. With the model's chunks known, every answer
    carries `evidence` (memorize.evidence): the supporting passage, or null when none supports it.

    Limits: `api_key` (every request but /health needs it), max_queue requests waiting or generating (429
    beyond), a MAX_BODY_BYTES body (413), max_prompt_tokens (default and at most: the model's context, less
    one) and max_tokens clamped to what the context leaves. The endpoints never block the event loop, so
    /health answers during generations."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import StreamingResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title=f"memorize: {chat.name}")
    if api_key:
        app.add_middleware(_BearerKey, key=api_key)

    @app.exception_handler(HTTPException)
    def openai_error(request, exc: HTTPException):
        return _error(exc.status_code, exc.detail, exc.headers)

    lock = threading.Lock()
    batcher = Batcher(chat, lock, max_batch)
    admission = _Admission(max_queue)
    prompt_cap = min(max_prompt_tokens or chat.context_length, chat.context_length - 1)
    closed_book = {chat.name: True, **({chat.base_name: False} if chat.base_name else {})}  # name: use_adapter
    variants = {name + suffix: (adapter, suffix == "+rag")  # name: (use_adapter, with retrieved documents)
                for suffix in (("", "+rag") if rag else ("",)) for name, adapter in closed_book.items()}
    app.state.models = list(variants)
    if rag:
        chat.require_documents()
    with_evidence = chat.evidence_index is not None  # built now, not by the first requests at once

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "memorize"}
                                           for n in variants]}

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        try:
            req = ChatRequest.model_validate_json(await _body(request, MAX_BODY_BYTES))
            schema = req.schema()
        except ValidationError as exc:
            raise HTTPException(400, "; ".join(": ".join(filter(None, [".".join(map(str, e["loc"])), e["msg"]]))
                                               for e in exc.errors())) from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        model = req.model or chat.name
        if model not in variants:
            raise HTTPException(404, f"model {req.model!r} is not served here; available: {', '.join(variants)}")
        use_adapter, retrieve = variants[model]
        messages = [m.model_dump() for m in req.messages]
        try:
            question = messages[last_user(messages)]["content"]
        except ValueError as exc:
            raise HTTPException(400, f"messages: {exc}") from None
        requested = next((n for n in (req.max_completion_tokens, req.max_tokens) if n is not None), DEFAULT_MAX_TOKENS)
        if requested < 1:
            raise HTTPException(400, f"max_tokens must be at least 1, got {requested}")

        def prepare() -> tuple[list[dict], int]:
            asked = chat.with_documents(messages, top_k) if retrieve else messages
            return asked, chat.prompt_tokens(asked)

        admission.enter()
        try:
            asked, prompt_tokens = await run_in_threadpool(prepare)  # tokenizing and BM25 are CPU work
            if prompt_tokens > prompt_cap:
                raise HTTPException(400, f"the prompt is {prompt_tokens} tokens; this server takes at most "
                                    f"{prompt_cap}")
        except BaseException:
            admission.leave()
            raise
        limit = min(requested, chat.context_length - prompt_tokens)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict, finish: str | None, extra: dict | None = None) -> str:
            body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **(extra or {})}
            return f"data: {json.dumps(body)}\n\n"

        if req.stream:
            loop, items, stop = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

            def put(item) -> None:
                loop.call_soon_threadsafe(items.put_nowait, item)

            def generate() -> None:
                try:
                    with lock:
                        if stop.is_set():  # its client left while it waited
                            return
                        text, finish, _ = chat.reply(asked, limit, req.temperature, use_adapter, put, schema, stop)
                    put({"finish": finish, **({"evidence": chat.evidence(question, text)} if with_evidence else {})})
                except Exception as exc:
                    put(exc)
                finally:
                    admission.leave()

            async def events():
                try:
                    yield chunk({"role": "assistant", "content": ""}, None)
                    while isinstance(item := await items.get(), str):
                        yield chunk({"content": item}, None)
                    if isinstance(item, Exception):
                        # Not a normal end: an OpenAI client raises on it instead of keeping a cut answer.
                        error = {"message": f"generation failed: {type(item).__name__}: {item}",
                                 "type": "server_error"}
                        yield f"data: {json.dumps({'error': error})}\n\n"
                        return
                    yield chunk({}, item.pop("finish"), item)
                    yield "data: [DONE]\n\n"
                finally:
                    stop.set()  # a client that went away ends its generation at the next token

            threading.Thread(target=generate, daemon=True).start()
            return StreamingResponse(events(), media_type="text/event-stream")

        future = batcher.submit(asked, limit, req.temperature, use_adapter, schema)
        future.add_done_callback(admission.leave)
        try:
            text, finish, usage = await asyncio.wrap_future(future)
        except Exception as exc:
            raise HTTPException(500, f"generation failed: {type(exc).__name__}: {exc}") from None
        extra = {"evidence": await run_in_threadpool(chat.evidence, question, text)} if with_evidence else {}
        return {"id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": usage, **extra}

    return app


def serve_forever(chat: ChatModel, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning",
                  **options) -> None:
    """`memorize serve`, and the embedded generator's server (`python -m memorize.serve MODEL_DIR PORT MAX_BATCH`);
    `options` go to create_app."""
    import uvicorn

    app = create_app(chat, **options)
    print(f"serving {', '.join(app.state.models)} at http://{host}:{port}/v1 (OpenAI-compatible; Ctrl-C stops)",
          flush=True)
    # A short graceful shutdown: a stopped server must not wait for a generation in progress to finish.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=1)


if __name__ == "__main__":
    import sys

    # The embedded generator: loopback, no key; its one client sends at most MAX_BATCH requests at once.
    batch = int(sys.argv[3])
    serve_forever(ChatModel(sys.argv[1]), port=int(sys.argv[2]), log_level="info", max_batch=batch,
                  max_queue=max(DEFAULT_MAX_QUEUE, batch))
