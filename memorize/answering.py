"""Batched greedy answering with a local model, closed-book or with retrieved context."""
from __future__ import annotations

import hashlib
import json
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList

from memorize import read_json_cache, write_json
from memorize.local_model import cache_home
from memorize.models import inference_dtype, load_model, load_tokenizer, load_tuned
from memorize.settings import ANSWER_BATCH_SIZE, ANSWER_BATCH_TOKENS


@dataclass
class Completion:
    text: str
    tokens: int  # completion tokens generated
    stopped: bool  # ended by an end-of-sequence token, not by its token limit


class _RowTemperature(LogitsProcessor):
    """A temperature per row of a batch: requests sampled at different temperatures share forward passes.
    A row at temperature 0 keeps only its most likely token, so sampling it is greedy decoding."""

    def __init__(self, temperatures: list[float], device):
        self.t = torch.tensor(temperatures, device=device).unsqueeze(1)

    def __call__(self, input_ids, scores):
        scores = scores / self.t.clamp(min=1e-5)
        top = scores.max(dim=-1, keepdim=True).values
        greedy = torch.where(scores == top, 0.0, float("-inf"))
        return torch.where(self.t > 0, scores, greedy)


_ENFORCER_DATA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its lm-format-enforcer data


def _enforcer_data(tokenizer, eos: set[int]):
    """lm-format-enforcer's view of a vocabulary (every token's text, and whether it starts a word), built
    once per tokenizer: a few seconds for a 50k vocabulary. (Its own transformers integration does not
    import under transformers 5.)"""
    from lmformatenforcer import TokenEnforcerTokenizerData

    if tokenizer not in _ENFORCER_DATA:
        zero = tokenizer.encode("0", add_special_tokens=False)[-1]
        special = set(tokenizer.all_special_ids)
        regular = []
        for i in range(len(tokenizer)):
            if i not in special:
                # Decoded after "0", a token that starts a word keeps its leading space.
                after_zero = tokenizer.decode([zero, i])[1:]
                regular.append((i, after_zero, len(after_zero) > len(tokenizer.decode([i]))))
        _ENFORCER_DATA[tokenizer] = TokenEnforcerTokenizerData(
            regular, lambda ids: tokenizer.decode(ids).rstrip("\ufffd"), sorted(eos), True, len(tokenizer))
    return _ENFORCER_DATA[tokenizer]


class JsonSchemaRows(LogitsProcessor):
    """Structured output: a row with a JSON schema may only continue with tokens that keep its reply a
    prefix of a JSON value of that schema, and end only when the value is complete (lm-format-enforcer);
    rows without a schema are left alone. `{}` allows any JSON value."""

    def __init__(self, tokenizer, schemas: list[dict | None], eos: set[int]):
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        data = _enforcer_data(tokenizer, eos)
        self.enforcers = [None if s is None else TokenEnforcer(data, JsonSchemaParser(s or None)) for s in schemas]

    def __call__(self, input_ids, scores):
        width = scores.shape[-1]
        bits = torch.arange(32, dtype=torch.int32)
        for row, enforcer in enumerate(self.enforcers):
            if enforcer is None:
                continue
            packed = enforcer.get_allowed_tokens(input_ids[row].tolist()).allowed_tokens  # int32 bitmask
            allowed = ((packed.unsqueeze(1) >> bits) & 1).flatten().bool()[:width]
            allowed = torch.nn.functional.pad(allowed, (0, width - len(allowed))).to(scores.device)
            scores[row] = scores[row].masked_fill(~allowed, float("-inf"))
        return scores


def eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
    return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def _shared_prefix(ids: list[list[int]]) -> int:
    """Length of the token prefix all rows share, leaving every row at least one token of its own (the
    forward pass that `generate` starts with needs one to predict from)."""
    n = max(min(len(i) for i in ids) - 1, 0)
    return next((pos for pos in range(n) if any(i[pos] != ids[0][pos] for i in ids)), n)


@torch.inference_mode()
def complete(model, tokenizer, prompts: list[str], max_new_tokens: list[int],
             temperatures: list[float] | None = None, schemas: list[dict | None] | None = None,
             share_prefix: bool = True) -> list[Completion]:
    """Continue rendered prompts in one batched `generate`: on a CPU a forward pass over a batch costs
    little more than over one row (the weights are read once per step), so requests in flight share them.
    Each row keeps its own token limit, temperature (None: greedy) and JSON schema (None: free text).

    The prefix every prompt shares (the same retrieved documents, one chunk's generation request at several
    temperatures, a template's preamble) is computed once and its key/value cache copied to every row;
    each row is then `prefix + padding + its own tokens` (padding in the middle, masked out, positions
    counted from the attention mask) — with no shared prefix (or share_prefix=False), plain left padding."""
    # The template already wrote any BOS token; don't let the tokenizer add a second one.
    ids = tokenizer(prompts, add_special_tokens=False).input_ids
    shared = _shared_prefix(ids) if share_prefix else 0
    width = max(len(i) for i in ids) - shared
    pad = tokenizer.pad_token_id
    rows = [i[:shared] + [pad] * (width - len(i) + shared) + i[shared:] for i in ids]
    mask = [[1] * shared + [0] * (width - len(i) + shared) + [1] * (len(i) - shared) for i in ids]
    enc = {"input_ids": torch.tensor(rows, device=model.device),
           "attention_mask": torch.tensor(mask, device=model.device)}
    if shared:
        cache = DynamicCache(config=model.config)
        model(input_ids=enc["input_ids"][:1, :shared], cache=cache, use_cache=True)
        cache.batch_repeat_interleave(len(prompts))
        enc["cache"] = cache
    temperatures = temperatures or [0.0] * len(prompts)
    stop = eos_ids(model, tokenizer)
    # The schema mask comes first: a greedy row then takes the most likely of the allowed tokens. Its
    # vocabulary table is cached per tokenizer object (seconds to build).
    processors = LogitsProcessorList([JsonSchemaRows(tokenizer, schemas, stop)] if schemas and any(
        s is not None for s in schemas) else [])
    if any(t > 0 for t in temperatures):
        processors.append(_RowTemperature(temperatures, model.device))
        sampling = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
    else:
        sampling = {"do_sample": False}  # overrides generation_config's
    out = model.generate(**enc, max_new_tokens=max(max_new_tokens), pad_token_id=pad,
                         logits_processor=processors, **sampling)
    results = []
    for row, limit in zip(out[:, enc["input_ids"].shape[1]:].tolist(), max_new_tokens, strict=True):
        end = next((i for i, t in enumerate(row[:limit]) if t in stop), None)
        kept = row[:limit] if end is None else row[:end]
        results.append(Completion(tokenizer.decode(kept, skip_special_tokens=True).strip(),
                                  len(kept) + (end is not None), end is not None))
    return results


def _supports_system(tokenizer) -> bool:
    """Some templates reject a system turn (raise), others silently drop it."""
    probe = "\x00system-probe\x00"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": probe}, {"role": "user", "content": "hi"}], tokenize=False
        )
    except Exception:  # jinja raises whatever the template author chose (TemplateError, ValueError, ...)
        return False
    return probe in text


def user_message(question: str, context: str | None = None) -> str:
    if context is None:
        return question
    return (
        "Answer the question using the documents below.\n\n"
        f"<documents>\n{context}\n</documents>\n\n"
        f"Question: {question}"
    )


def model_fingerprint(model_id: str) -> str:
    """A local model folder is named by its path and its weights' sizes and times, a Hub id by itself; both
    with the dtype it answers in (bf16 and fp32 greedy answers differ)."""
    path = Path(model_id)
    dtype = str(inference_dtype())
    if not path.is_dir():
        return json.dumps([model_id, dtype])
    stats = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in path.iterdir()
                   if f.suffix in (".safetensors", ".bin", ".json"))
    return json.dumps([str(path.resolve()), stats, dtype])


class AnswerCache:
    """Greedy answers of a base model (no adapter) persisted by content: the same model, prompt and
    length give the same answer, so evaluating another adapter of the same base only generates the
    fine-tuned answers (the base and in-context answers are most of an evaluation's time on a CPU)."""

    def __init__(self, path: str | Path, model_id: str):
        self.path = Path(path)
        self.model = model_fingerprint(model_id)
        self.entries: dict[str, str] = read_json_cache(self.path)

    def key(self, prompt: str, max_new_tokens: int) -> str:
        return hashlib.sha256(json.dumps([self.model, prompt, max_new_tokens]).encode()).hexdigest()

    def save(self) -> None:
        write_json(self.path, self.entries)


def model_cache_file(folder: str, model_id: str, *parts) -> Path:
    """$MEMORIZE_HOME/FOLDER/<hash>.json: a cache of a base model's answers, named by the model's files and
    whatever else (`parts`) the answers depend on, so every project using that model shares it."""
    key = json.dumps([model_fingerprint(model_id), *parts])
    return cache_home() / folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def answer_cache_file(model_id: str) -> Path:
    """Where evaluation keeps a base model's answers, beside the replay answers (the 400 forgetting-check
    answers alone are ~2 minutes of a 135M model on 2 CPU cores)."""
    return model_cache_file("answers", model_id)


def _batches(order: list[int], lengths: dict[int, int], batch_size: int) -> list[list[int]]:
    """Consecutive runs of `order` of at most batch_size prompts and ANSWER_BATCH_TOKENS padded tokens
    (rows x the longest: every row's key/value cache is that long); a prompt longer than that goes alone."""
    batches: list[list[int]] = []
    longest = 0
    for i in order:
        longest = max(longest, lengths[i])
        if not batches or len(batches[-1]) == batch_size or (len(batches[-1]) + 1) * longest > ANSWER_BATCH_TOKENS:
            batches.append([])
            longest = lengths[i]
        batches[-1].append(i)
    return batches


class Answerer:
    """One base model, optionally with a LoRA adapter that can be switched off per call, so the
    base, fine-tuned and in-context runs share a single copy of the base weights. A whole fine-tuned
    model (`memorize train --full`) comes with the base model beside it (`base`) for use_adapter=False."""

    def __init__(self, model, tokenizer, has_adapter: bool, system_prompt: str | None = None, base=None):
        # No system prompt by default: questions are asked exactly as in the training rows (a user
        # turn under the template's own default), so the fine-tuned model is tested on what it learned.
        self.model, self.tokenizer, self.has_adapter, self.base = model, tokenizer, has_adapter, base
        self.system_prompt = system_prompt if system_prompt and _supports_system(self.tokenizer) else None

    @classmethod
    def load(cls, model_id: str, adapter: str | None = None, chat_template: str | None = None,
             system_prompt: str | None = None) -> "Answerer":
        """`adapter`: a LoRA adapter folder, or a whole fine-tuned model's (`--full`)."""
        tokenizer = load_tokenizer(model_id, chat_template)
        if adapter is None:
            return cls(load_model(model_id), tokenizer, False, system_prompt)
        if not (Path(adapter) / "adapter_config.json").exists():
            return cls(load_model(adapter), tokenizer, True, system_prompt, base=load_model(model_id))
        model, merged = load_tuned(model_id, adapter)
        return cls(model, tokenizer, True, system_prompt, base=load_model(model_id) if merged else None)

    def prompt(self, question: str, context: str | None = None) -> str:
        messages = [{"role": "user", "content": user_message(question, context)}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _generate(self, model, prompts: list[str], max_new_tokens: int) -> list[str]:
        return [c.text for c in complete(model, self.tokenizer, prompts, [max_new_tokens] * len(prompts))]

    def answer(self, questions: list[str], contexts: list[str] | None = None, batch_size: int = ANSWER_BATCH_SIZE,
               max_new_tokens: int = 128, use_adapter: bool = True, progress: bool = True,
               desc: str = "answering", cache: AnswerCache | None = None) -> list[str]:
        """Answers in input order. use_adapter=False answers with the bare base model; only such
        answers are read from and written to `cache`."""
        if contexts is not None and len(contexts) != len(questions):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        prompts = [self.prompt(q, None if contexts is None else contexts[i]) for i, q in enumerate(questions)]
        answers: list[str] = [""] * len(prompts)
        if self.has_adapter and use_adapter:
            cache = None
        keys = [cache.key(p, max_new_tokens) for p in prompts] if cache else []
        todo = [i for i in range(len(prompts)) if not cache or keys[i] not in cache.entries]
        for i in set(range(len(prompts))) - set(todo):
            answers[i] = cache.entries[keys[i]]
        # Prompts with the same context in one batch share its computation (`complete`); among them,
        # batching prompts of similar length wastes less compute on padding.
        lengths = {i: len(self.tokenizer(prompts[i], add_special_tokens=False).input_ids) for i in todo}
        order = sorted(todo, key=lambda i: ("" if contexts is None else contexts[i], lengths[i]))
        batches = _batches(order, lengths, batch_size)
        model, switch = self.model, nullcontext()
        if self.has_adapter and not use_adapter:
            if self.base is not None:
                model = self.base
            else:
                switch = self.model.disable_adapter()
        with switch:
            for batch in tqdm(batches, desc=desc, disable=not progress):
                for i, text in zip(batch, self._generate(model, [prompts[i] for i in batch], max_new_tokens),
                                   strict=True):
                    answers[i] = text
                    if cache:
                        cache.entries[keys[i]] = text
        if cache and todo:
            cache.save()
        return answers
