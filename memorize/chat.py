"""Using the trained model: one answer, a terminal chat with streamed output, and batches of requests answered
together (for `memorize serve`, memorize.serve), all from the folder `memorize train` wrote. With the chunks it
was trained on (chunks.jsonl, which `train` copies there), each answer comes with its evidence, and the model
can also answer with the retrieved chunks in its prompt, as evaluation's in-context system."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future
from contextlib import nullcontext
from functools import cached_property
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from memorize.answering import JsonSchemaRows, complete, eos_ids, user_message
from memorize.models import ModelLoadError, load_model, load_tokenizer, load_tuned
from memorize.settings import EvalSettings

DEFAULT_TOP_K = EvalSettings.model_fields["top_k"].default  # the chunks evaluation gives the in-context system
DEFAULT_MAX_TOKENS = 256


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
    folder. The base model's own answers (`use_adapter=False`) come from the adapter switched off on a GPU;
    on a CPU, where the adapter is merged (models.load_tuned), and for a full fine-tune (its base named in the
    metrics.json beside full/), from the base loaded beside it when first asked. The chunks it was trained on
    are read from chunks.jsonl in MODEL_DIR or beside adapter/ (`train` copies it there), or from `chunks`."""

    def __init__(self, model_dir: str | Path, chunks: str | Path | None = None):
        root = Path(model_dir)
        adapter = next((d for d in (root / "adapter", root) if (d / "adapter_config.json").exists()), None)
        # base_apart: the base is a model of its own (a full fine-tune's, or beside a merged adapter), loaded
        # into self.base when first asked.
        self.base, self.base_apart = None, False
        whole = None
        if adapter is not None:
            base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
            self.model, self.base_apart = load_tuned(base, str(adapter))
            self.tokenizer = load_tokenizer(str(adapter))
        elif whole := next((d for d in (root / "full", root) if (d / "config.json").exists()), None):
            self.model, self.tokenizer = load_model(str(whole)), load_tokenizer(str(whole))
            metrics = whole.parent / "metrics.json"  # `train` writes full/ beside it; merged/ has a base too
            self.base_apart = whole.name == "full" and metrics.exists()
            base = json.loads(metrics.read_text())["base_model"] if self.base_apart else None
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
        if self.base_apart:
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
