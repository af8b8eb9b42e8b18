"""Using the trained model: one answer, a terminal chat with streamed output, and an OpenAI-compatible
HTTP endpoint (`/v1/chat/completions`, `/v1/models`), all from the folder `memorize train` wrote. With the
chunks it was trained on (chunks.jsonl, which `train` copies there), each answer comes with its evidence,
and the model can also answer with the retrieved chunks in its prompt, as evaluation's in-context system."""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import threading
import time
import uuid
from concurrent.futures import Future
from contextlib import nullcontext
from functools import cached_property
from pathlib import Path

import torch
from fastapi import Request  # at module level: FastAPI reads the endpoint's (string) annotation from here
from pydantic import BaseModel, ValidationError
from transformers import StoppingCriteria, StoppingCriteriaList

from memorize import API_KEY_ENV, DEFAULT_MAX_QUEUE
from memorize.answering import JsonSchemaRows, complete, eos_ids, user_message
from memorize.models import ModelLoadError, load_model, load_tokenizer
from memorize.settings import EvalSettings

DEFAULT_TOP_K = EvalSettings.model_fields["top_k"].default  # the chunks evaluation gives the in-context system
DEFAULT_MAX_TOKENS = 256
MAX_BODY_BYTES = 1 << 20  # a whole 8k-token context is ~40 kB of JSON


class _Stopped(StoppingCriteria):
    """Ends a generation once its event is set (its client went away); checked after every token."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def last_user(messages: list[dict]) -> int:
    """Where the conversation asks what it asks now: its last user message (what retrieval and evidence
    look at)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last is None:
        raise ValueError("the conversation has no user message")
    return last


class ChatModel:
    """A fine-tuned model read from MODEL_DIR: the output folder of `memorize train` (or `run`'s model/),
    its adapter/ folder, or a whole model (merged/, or full/ of `train --full`). An adapter names its base in
    adapter_config.json; the tokenizer (with the chat template used in training) is read from the adapter
    folder. With an adapter, the base model's own answers are one switch away (`use_adapter=False`), on the
    same weights; a full fine-tune's base (named in the metrics.json beside full/) is loaded beside it when
    first asked. The chunks it was trained on are read from chunks.jsonl in MODEL_DIR or beside adapter/
    (`train` copies it there), or from `chunks`."""

    def __init__(self, model_dir: str | Path, chunks: str | Path | None = None):
        root = Path(model_dir)
        adapter = next((d for d in (root / "adapter", root) if (d / "adapter_config.json").exists()), None)
        self.base, self.full = None, False  # a full fine-tune's base model, loaded when first asked
        whole = None
        if adapter is not None:
            base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
            self.model, self.tokenizer = load_model(base, adapter=str(adapter)), load_tokenizer(str(adapter))
        elif whole := next((d for d in (root / "full", root) if (d / "config.json").exists()), None):
            self.model, self.tokenizer = load_model(str(whole)), load_tokenizer(str(whole))
            metrics = whole.parent / "metrics.json"  # `train` writes full/ beside it; merged/ has a base too
            self.full = whole.name == "full" and metrics.exists()
            base = json.loads(metrics.read_text())["base_model"] if self.full else None
        else:
            raise ModelLoadError(f"{root}: no adapter (adapter/adapter_config.json) and no model (config.json) found; "
                                 "pass the output folder of `memorize train` or its adapter/, full/ or merged/ folder")
        self.root = root
        # `run` writes OUT/model/adapter: name it after OUT, not after the generic folder.
        path = root.resolve()
        self.name = path.parent.name if path.name in ("model", "adapter", "full", "merged") else path.name
        self.base_path, self.base_name = base, None if base is None else Path(base).name or base
        # `train` copies the dataset's chunks.jsonl beside adapter/ (or full/); `chunks` overrides it.
        found = (f for f in (root / "chunks.jsonl", (adapter or whole).parent / "chunks.jsonl") if f.is_file())
        self.chunks_file = Path(chunks) if chunks else next(found, None)
        config = self.model.config
        self.context_length = getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length

    @cached_property
    def chunks(self) -> list[dict]:
        """The chunks of the documents the model was trained on; empty when they are not known."""
        from memorize.dataset import read_jsonl

        return read_jsonl(self.chunks_file) if self.chunks_file else []

    @cached_property
    def index(self):
        """BM25 over the chunks (memorize.retrieval), built when first used; None without chunks."""
        from memorize.retrieval import ChunkIndex

        return ChunkIndex(self.chunks) if self.chunks else None

    @cached_property
    def evidence_index(self):
        from memorize.evidence import EvidenceIndex

        return EvidenceIndex(self.chunks) if self.chunks else None

    def require_documents(self) -> None:
        """Answers with retrieved documents need the chunks (and builds their index now)."""
        if self.index is None:
            raise ModelLoadError(f"{self.root}: no chunks.jsonl beside the model, so there is nothing to retrieve; "
                                 "pass --chunks DATA/chunks.jsonl (DATA: the dataset folder the model was trained on)")

    def with_documents(self, messages: list[dict], k: int = DEFAULT_TOP_K) -> list[dict]:
        """The conversation with the top-k chunks for its last user message put into that message: the
        prompt evaluation gives its in-context system (answering.user_message), here for any model."""
        last = last_user(messages)
        question = messages[last]["content"]
        context = self.index.context(self.index.top_k(question, k))
        return [*messages[:last], {**messages[last], "content": user_message(question, context)}, *messages[last + 1:]]

    def evidence(self, question: str, answer: str) -> dict | None:
        """The passage of the documents that best supports the answer (memorize.evidence), or None."""
        return self.evidence_index.find(answer, question)

    def prompt_tokens(self, messages: list[dict]) -> int:
        return self._count(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def _count(self, prompt: str) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def _weights(self, use_adapter: bool):
        """(model, context to generate in): the fine-tuned model, or the base's own answers."""
        if use_adapter or self.base_name is None:
            return self.model, nullcontext()
        if self.full:
            self.base = self.base or load_model(self.base_path)
            return self.base, nullcontext()
        return self.model, self.model.disable_adapter()

    def reply(self, messages: list[dict], max_new_tokens: int = DEFAULT_MAX_TOKENS, temperature: float = 0.0,
              use_adapter: bool = True, on_text=None, schema: dict | None = None,
              stop: threading.Event | None = None) -> tuple[str, str, dict]:
        """(text, finish_reason "stop"/"length", usage) for a chat; on_text(piece) receives the text as it is
        generated. Temperature 0 is greedy: the memorized answer, the same every time. With a JSON
        `schema`, the reply is JSON of that schema (structured output). Setting `stop` ends the generation
        at the next token."""
        from transformers import LogitsProcessorList, TextIteratorStreamer

        model, switch = self._weights(use_adapter)
        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True).to(model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        if schema is not None:
            sampling["logits_processor"] = LogitsProcessorList(
                [JsonSchemaRows(self.tokenizer, [schema], eos_ids(model, self.tokenizer))])
        result: dict = {}

        def generate():
            try:
                with switch, torch.inference_mode():
                    result["ids"] = model.generate(
                        **enc, max_new_tokens=max_new_tokens, streamer=streamer,
                        pad_token_id=self.tokenizer.pad_token_id,
                        stopping_criteria=StoppingCriteriaList([_Stopped(stop)] if stop else []), **sampling)
            except BaseException as exc:  # re-raised in the caller's thread
                result["error"] = exc
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        pieces = []
        for piece in streamer:
            pieces.append(piece)
            if on_text:
                on_text(piece)
        worker.join()
        if "error" in result:
            raise result["error"]
        prompt_tokens = enc["input_ids"].shape[1]
        new = result["ids"][0, prompt_tokens:]
        ended = bool(len(new)) and new[-1].item() in eos_ids(model, self.tokenizer)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(new),
                 "total_tokens": prompt_tokens + len(new)}
        return "".join(pieces).strip(), "stop" if ended or len(new) < max_new_tokens else "length", usage


    def complete(self, requests: list[tuple[list[dict], int, float, dict | None]],
                 use_adapter: bool = True) -> list[tuple[str, str, dict]]:
        """(text, finish_reason, usage) for each (messages, max_new_tokens, temperature, JSON schema or None),
        in one batch."""
        prompts = [self.tokenizer.apply_chat_template(r[0], tokenize=False, add_generation_prompt=True)
                   for r in requests]
        model, switch = self._weights(use_adapter)
        with switch:
            done = complete(model, self.tokenizer, prompts, [r[1] for r in requests], [r[2] for r in requests],
                            [r[3] for r in requests])
        out = []
        for prompt, c in zip(prompts, done, strict=True):
            n = self._count(prompt)
            out.append((c.text, "stop" if c.stopped else "length",
                        {"prompt_tokens": n, "completion_tokens": c.tokens, "total_tokens": n + c.tokens}))
        return out


class Batcher:
    """Collects the requests that arrive together and answers them in one `ChatModel.complete` batch.

    A request waits at most `window` seconds for company; a batch holds at most `max_batch` requests
    (of one model: fine-tuned or base). `lock` keeps one generation at a time on the model."""

    def __init__(self, chat: ChatModel, lock: threading.Lock, max_batch: int = 8, window: float = 0.05):
        import queue

        self.chat, self.lock, self.max_batch, self.window = chat, lock, max_batch, window
        self.queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, messages: list[dict], max_new_tokens: int, temperature: float, use_adapter: bool,
               schema: dict | None = None) -> Future:
        """A future of (text, finish_reason, usage); cancelling it before its batch starts drops the request."""
        future: Future = Future()
        self.queue.put({"request": (messages, max_new_tokens, temperature, schema), "adapter": use_adapter,
                        "future": future})
        return future

    def _run(self) -> None:
        import queue

        while True:
            batch = [self.queue.get()]
            deadline = time.monotonic() + self.window
            while len(batch) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self.queue.get(timeout=left))
                except queue.Empty:
                    break
            for use_adapter in (True, False):
                group = [i for i in batch
                         if i["adapter"] == use_adapter and i["future"].set_running_or_notify_cancel()]
                if group:
                    self._answer(group, use_adapter)

    def _answer(self, group: list[dict], use_adapter: bool) -> None:
        """One batch; when it fails, each of its requests alone, so that a bad request fails only itself."""
        try:
            with self.lock:
                results = self.chat.complete([i["request"] for i in group], use_adapter)
        except Exception as exc:
            if len(group) == 1:
                group[0]["future"].set_exception(exc)
            else:
                for i in group:
                    self._answer([i], use_adapter)
            return
        for i, r in zip(group, results, strict=True):
            i["future"].set_result(r)


def chat_loop(chat: ChatModel, read=input, write=print, max_new_tokens: int = DEFAULT_MAX_TOKENS,
              temperature: float = 0.0, system: str | None = None, top_k: int | None = None) -> None:
    """A terminal chat: the conversation is kept between turns; /reset forgets it, /exit or Ctrl-D ends.
    With `top_k`, each question is asked with the top-k chunks retrieved for it; with the model's chunks
    known, each answer is followed by its evidence."""
    from memorize.evidence import evidence_line

    history = [{"role": "system", "content": system}] if system else []
    write(f"Chatting with {chat.name} (fine-tuned). /reset forgets the conversation, /exit or Ctrl-D ends.")
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            write("")
            return
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            history = history[:1] if system else []
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        asked = chat.with_documents(history, top_k) if top_k else history  # the history keeps the bare question
        write("model> ", end="", flush=True)
        text, _, _ = chat.reply(asked, max_new_tokens, temperature, on_text=lambda p: write(p, end="", flush=True))
        write("")
        if chat.evidence_index:
            write(evidence_line(chat.evidence(line, text)))
        history.append({"role": "assistant", "content": text})


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
    """`memorize serve`, and the embedded generator's server (`python -m memorize.chat MODEL_DIR PORT MAX_BATCH`);
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
