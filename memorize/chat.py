"""Using the trained model: one answer, a terminal chat with streamed output, and an OpenAI-compatible
HTTP endpoint (`/v1/chat/completions`, `/v1/models`), all from the folder `memorize train` wrote."""
from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import nullcontext
from pathlib import Path

import torch
from pydantic import BaseModel

from memorize.answering import JsonSchemaRows, complete, eos_ids
from memorize.models import ModelLoadError, load_model, load_tokenizer


class ChatModel:
    """A fine-tuned model read from MODEL_DIR: the output folder of `memorize train` (or `run`'s model/),
    its adapter/ folder, or a whole model (merged/, or full/ of `train --full`). An adapter names its base in
    adapter_config.json; the tokenizer (with the chat template used in training) is read from the adapter
    folder. With an adapter, the base model's own answers are one switch away (`use_adapter=False`), on the
    same weights; a full fine-tune's base (named in the metrics.json beside full/) is loaded beside it when
    first asked."""

    def __init__(self, model_dir: str | Path):
        root = Path(model_dir)
        adapter = next((d for d in (root / "adapter", root) if (d / "adapter_config.json").exists()), None)
        self.base, self.full = None, False  # a full fine-tune's base model, loaded when first asked
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
        # `run` writes OUT/model/adapter: name it after OUT, not after the generic folder.
        path = root.resolve()
        self.name = path.parent.name if path.name in ("model", "adapter", "full", "merged") else path.name
        self.base_path, self.base_name = base, None if base is None else Path(base).name or base

    def _weights(self, use_adapter: bool):
        """(model, context to generate in): the fine-tuned model, or the base's own answers."""
        if use_adapter or self.base_name is None:
            return self.model, nullcontext()
        if self.full:
            self.base = self.base or load_model(self.base_path)
            return self.base, nullcontext()
        return self.model, self.model.disable_adapter()

    def reply(self, messages: list[dict], max_new_tokens: int = 256, temperature: float = 0.0,
              use_adapter: bool = True, on_text=None, schema: dict | None = None) -> tuple[str, str, dict]:
        """(text, finish_reason "stop"/"length", usage) for a chat; on_text(piece) receives the text as it is
        generated. Temperature 0 is greedy: the memorized answer, the same every time. With a JSON
        `schema`, the reply is JSON of that schema (structured output)."""
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
                    result["ids"] = model.generate(**enc, max_new_tokens=max_new_tokens, streamer=streamer,
                                                        pad_token_id=self.tokenizer.pad_token_id, **sampling)
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
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(new), "total_tokens": prompt_tokens + len(new)}
        return "".join(pieces).strip(), "stop" if ended or len(new) < max_new_tokens else "length", usage


    def complete(self, requests: list[tuple[list[dict], int, float, dict | None]],
                 use_adapter: bool = True) -> list[tuple[str, str, dict]]:
        """(text, finish_reason, usage) for each (messages, max_new_tokens, temperature, JSON schema or None),
        in one batch."""
        prompts = [self.tokenizer.apply_chat_template(r[0], tokenize=False, add_generation_prompt=True) for r in requests]
        model, switch = self._weights(use_adapter)
        with switch:
            done = complete(model, self.tokenizer, prompts, [r[1] for r in requests], [r[2] for r in requests],
                            [r[3] for r in requests])
        out = []
        for prompt, c in zip(prompts, done, strict=True):
            n = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
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
               schema: dict | None = None):
        item = {"request": (messages, max_new_tokens, temperature, schema), "adapter": use_adapter,
                "done": threading.Event()}
        self.queue.put(item)
        item["done"].wait()
        if "error" in item:
            raise item["error"]
        return item["result"]

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
                group = [i for i in batch if i["adapter"] == use_adapter]
                if not group:
                    continue
                try:
                    with self.lock:
                        results = self.chat.complete([i["request"] for i in group], use_adapter)
                    for i, r in zip(group, results, strict=True):
                        i["result"] = r
                except Exception as exc:  # reaches every caller of the batch
                    for i in group:
                        i["error"] = exc
                for i in group:
                    i["done"].set()


def chat_loop(chat: ChatModel, read=input, write=print, max_new_tokens: int = 256, temperature: float = 0.0,
              system: str | None = None) -> None:
    """A terminal chat: the conversation is kept between turns; /reset forgets it, /exit or Ctrl-D ends."""
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
        write("model> ", end="", flush=True)
        text, _, _ = chat.reply(history, max_new_tokens, temperature, on_text=lambda p: write(p, end="", flush=True))
        write("")
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


def create_app(chat: ChatModel, max_batch: int = 8):
    """FastAPI app with the OpenAI chat-completions API (streaming included). The fine-tuned model is served
    as `chat.name`; with an adapter (adapter off, same weights) or beside a full fine-tune, the base model as
    `chat.base_name`.
    One generation at a time on the single model in memory; requests without streaming that arrive
    together share it, up to max_batch at once. `response_format` (json_schema, json_object) constrains
    the reply to JSON of the schema while it is generated."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title=f"memorize: {chat.name}")

    @app.exception_handler(HTTPException)
    def openai_error(request, exc: HTTPException):
        # OpenAI's error body, which clients read the message from (FastAPI's own is {"detail": ...})
        return JSONResponse({"error": {"message": exc.detail, "type": "invalid_request_error"}}, exc.status_code)
    lock = threading.Lock()
    batcher = Batcher(chat, lock, max_batch)
    names = [chat.name] + ([chat.base_name] if chat.base_name else [])

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "memorize"} for n in names]}

    @app.post("/v1/chat/completions")
    def completions(req: ChatRequest):
        if req.model not in (None, *names):
            raise HTTPException(404, f"model {req.model!r} is not served here; available: {', '.join(names)}")
        if not req.messages:
            raise HTTPException(400, "messages must not be empty")
        use_adapter = req.model != chat.base_name or chat.base_name is None
        try:
            schema = req.schema()
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        messages = [m.model_dump() for m in req.messages]
        limit = req.max_completion_tokens or req.max_tokens or 256
        ident, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), req.model or chat.name

        def chunk(delta: dict, finish: str | None) -> str:
            body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(body)}\n\n"

        if req.stream:
            def events():
                import queue

                pieces: queue.Queue = queue.Queue()
                outcome: dict = {}

                def run():
                    with lock:
                        try:
                            outcome["finish"] = chat.reply(messages, limit, req.temperature, use_adapter, pieces.put,
                                                       schema)[1]
                        finally:
                            pieces.put(None)

                threading.Thread(target=run, daemon=True).start()
                yield chunk({"role": "assistant", "content": ""}, None)
                while (piece := pieces.get()) is not None:
                    yield chunk({"content": piece}, None)
                yield chunk({}, outcome.get("finish", "stop"))
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        text, finish, usage = batcher.submit(messages, limit, req.temperature, use_adapter, schema)
        return {"id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": usage}

    return app


def serve_forever(model_dir: str, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 8,
                  log_level: str = "warning") -> None:
    """`memorize serve`, and the embedded generator's server (`python -m memorize.chat MODEL_DIR PORT MAX_BATCH`)."""
    import uvicorn

    chat = ChatModel(model_dir)
    served = chat.name + (f" and {chat.base_name} (the base model)" if chat.base_name else "")
    print(f"serving {served} at http://{host}:{port}/v1 (OpenAI-compatible; Ctrl-C stops)", flush=True)
    # A short graceful shutdown: a stopped server must not wait for a generation in progress to finish.
    uvicorn.run(create_app(chat, max_batch), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=1)


if __name__ == "__main__":
    import sys

    serve_forever(sys.argv[1], port=int(sys.argv[2]), max_batch=int(sys.argv[3]), log_level="info")
